package aggregator

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/shukei/shukei/aggregator/bound"
	"github.com/shukei/shukei/anonymizer/dp"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/pipeline/decision"
)

// Window is an event-time window [Start, End), aligned to UTC midnight.
type Window struct{ Start, End time.Time }

// WindowOf is the window of size containing t. size must divide 24h.
func WindowOf(t time.Time, size time.Duration) Window {
	s := t.UTC().Truncate(size) // the zero time is a UTC midnight, so days align
	return Window{Start: s, End: s.Add(size)}
}

// spanKey identifies a window by its span: a day, the week and the month that start on the
// same midnight are three windows.
type spanKey struct{ start, end int64 }

func (w Window) key() spanKey { return spanKey{w.Start.Unix(), w.End.Unix()} }

func (w Window) String() string {
	return w.Start.Format(time.RFC3339) + "/" + w.End.Format(time.RFC3339)
}

type cellRef struct {
	metric uint8
	key    string
}

type cellAcc struct {
	events int64
	users  map[uint64]struct{} // userKey of each distinct user, capped at the metric's LInf
}

// userKey is what distinguishes a user inside one tenant's cell: the pseudonym's first 8
// bytes (a pseudonym is a keyed hash, so they are as good as random; a collision among a
// tenant's users, at most undercounting one of them, has odds below 10^-12 per pair of users
// in a tenant with a million users — far below the noise).
func userKey(p pseudonym.Pseudonym) uint64 { return binary.BigEndian.Uint64(p[:8]) }

// Acc accumulates one window of one Kafka partition: per tenant and cell, the raw material of
// each metric. The topic is keyed by tenant, but partitions added to it while a window is open
// move a tenant's later events to another partition, so the release step bounds each tenant
// once from the rows of every partition (TenantRows, AddRows), never per partition.
type Acc struct {
	plan        *Plan
	W           Window
	FirstOffset int64 // the first offset that added to the window: where a restart must replay from
	seen        map[uuid.UUID]struct{}
	tenants     map[string]map[cellRef]*cellAcc
	opened      map[tenantMetric]int // cells each tenant opened in each metric
	// Duplicates counts collector retries (an event_id already added) that were dropped.
	Duplicates int64
	// CellsRefused counts events not added to a cell because their tenant had opened
	// Plan.MaxTenantCells cells of that metric already.
	CellsRefused int64
}

type tenantMetric struct {
	tenant string
	metric uint8
}

// NewAcc starts an empty window.
func (p *Plan) NewAcc(w Window) *Acc {
	return &Acc{plan: p, W: w, FirstOffset: -1, seen: map[uuid.UUID]struct{}{}, tenants: map[string]map[cellRef]*cellAcc{}, opened: map[tenantMetric]int{}}
}

// Add adds an accepted event tagged for external_aggregate, read at offset. It reports whether
// the event counted (false for a retried copy of an event already added).
func (a *Acc) Add(t *decision.Tagged, offset int64) bool {
	id, err := uuid.Parse(t.Event.EventID)
	if err != nil { // the decision validated it; keep the string's hash rather than crash
		id = uuid.NewSHA1(uuid.Nil, []byte(t.Event.EventID))
	}
	if _, dup := a.seen[id]; dup {
		a.Duplicates++
		return false
	}
	a.seen[id] = struct{}{}
	if a.FirstOffset < 0 || offset < a.FirstOffset {
		a.FirstOffset = offset
	}
	ed := a.plan.edition(t.Tenant.Edition)
	for i, m := range a.plan.Metrics {
		if m.Schema != t.Event.Schema {
			continue
		}
		vals, ok := m.key(t, ed)
		if !ok {
			continue
		}
		cells := a.tenants[t.Tenant.ID]
		if cells == nil {
			cells = map[cellRef]*cellAcc{}
			a.tenants[t.Tenant.ID] = cells
		}
		ref := cellRef{uint8(i), cellKey(vals)}
		c := cells[ref]
		if c == nil {
			tm := tenantMetric{t.Tenant.ID, uint8(i)}
			if most := a.plan.MaxTenantCells; most > 0 && a.opened[tm] >= most {
				a.CellsRefused++ // one tenant cannot grow the window without bound
				continue
			}
			a.opened[tm]++
			c = &cellAcc{}
			cells[ref] = c
		}
		switch m.Unit {
		case UnitEvents:
			c.events++
		case UnitUsers:
			if t.Pseudonym == (pseudonym.Pseudonym{}) {
				continue
			}
			if c.users == nil {
				c.users = map[uint64]struct{}{}
			}
			if int64(len(c.users)) < m.LInf { // more would be clamped away
				c.users[userKey(t.Pseudonym)] = struct{}{}
			}
		}
	}
	return true
}

// TenantRow is one tenant's raw material for one cell of one base window, before any
// bounding: stored at the window's close (kind 'tenant' in aggregate_state) so that every
// release bounds each tenant once, over every partition its events came through and, for
// weeks and months, over the whole period (docs/DESIGN.md §4). Users holds at
// most the metric's LInf user keys: the union of capped sets, capped again, is exactly the
// capped union, so a period's value is the same as if it had been counted in one window.
type TenantRow struct {
	Tenant, Metric, Cell string
	Events               int64
	Users                []uint64
}

// TenantRows returns the window's raw material per tenant and cell, sorted.
func (a *Acc) TenantRows() []TenantRow {
	var out []TenantRow
	for t, cells := range a.tenants {
		for ref, c := range cells {
			r := TenantRow{Tenant: t, Metric: a.plan.Metrics[ref.metric].Name, Cell: ref.key, Events: c.events}
			for u := range c.users {
				r.Users = append(r.Users, u)
			}
			slices.Sort(r.Users)
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(x, y TenantRow) int {
		return cmp.Or(cmp.Compare(x.Tenant, y.Tenant), cmp.Compare(x.Metric, y.Metric), cmp.Compare(x.Cell, y.Cell))
	})
	return out
}

// AddRows merges stored tenant rows into the accumulator (a period's, from its base windows):
// events add up, users are united and capped at the metric's LInf. Rows of a metric the plan
// does not have are an error: the plan hash of the rows is the plan's.
func (a *Acc) AddRows(rows []TenantRow) error {
	idx := map[string]int{}
	for i, m := range a.plan.Metrics {
		idx[m.Name] = i
	}
	for _, r := range rows {
		i, ok := idx[r.Metric]
		if !ok {
			return fmt.Errorf("aggregator: a stored tenant row has metric %q, which the plan does not have", r.Metric)
		}
		m := a.plan.Metrics[i]
		if n := len(strings.Split(r.Cell, "|")); n != len(m.Dims) {
			return fmt.Errorf("aggregator: a stored tenant row of %s has cell %q with %d dimensions, want %d", m.Name, r.Cell, n, len(m.Dims))
		}
		cells := a.tenants[r.Tenant]
		if cells == nil {
			cells = map[cellRef]*cellAcc{}
			a.tenants[r.Tenant] = cells
		}
		ref := cellRef{uint8(i), r.Cell}
		c := cells[ref]
		if c == nil {
			c = &cellAcc{}
			cells[ref] = c
		}
		c.events += max(0, r.Events)
		for _, u := range r.Users {
			if c.users == nil {
				c.users = map[uint64]struct{}{}
			}
			if int64(len(c.users)) >= m.LInf {
				break
			}
			c.users[u] = struct{}{}
		}
	}
	return nil
}

// Events is the number of distinct events added.
func (a *Acc) Events() int { return len(a.seen) }

// Partial is one cell's un-noised partial aggregate from one partition: the library's state
// (raw sums, never to be released) and the number of distinct tenants in it (for partition
// selection, also never released).
type Partial struct {
	Metric  string
	Cell    string
	Tenants int64
	State   []byte
}

// Partials bounds every tenant of the window (at most L0 cells a metric, sampled uniformly
// when over; at most LInf a cell) and returns the partial aggregates. Each tenant's sampling
// is seeded by a keyed hash of (window, metric, tenant): a replay after a restart, on any
// instance and whatever the partitioning, makes exactly the same partials, while nobody
// without the key can predict which cells a tenant keeps.
func (a *Acc) Partials(sampleKey []byte) ([]Partial, error) {
	var out []Partial
	tenants := make([]string, 0, len(a.tenants))
	for t := range a.tenants {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	for i, m := range a.plan.Metrics {
		b, err := bound.NewPerTenant(m.L0, m.LInf, func(tenant string) *rand.Rand {
			return bound.SeedFrom(sampleSeed(sampleKey, a.W, m.Name, tenant))
		})
		if err != nil {
			return nil, err
		}
		if m.Dims[0].Priority {
			b.Prefer(m.catalogueRank())
		}
		for _, t := range tenants {
			for ref, c := range a.tenants[t] {
				if ref.metric != uint8(i) {
					continue
				}
				var v int64
				switch m.Unit {
				case UnitTenant:
					v = 1
				case UnitUsers:
					v = int64(len(c.users))
				case UnitEvents:
					v = c.events
				}
				b.Add(t, bound.Cell(ref.key), v)
			}
		}
		bounded := b.Bounded()
		cells := make([]bound.Cell, 0, len(bounded))
		for c := range bounded {
			cells = append(cells, c)
		}
		slices.Sort(cells)
		for _, c := range cells {
			cell, err := dp.NewCount(a.plan.params(m))
			if err != nil {
				return nil, err
			}
			for _, ct := range bounded[c] {
				if err := cell.Add(ct.Value); err != nil {
					return nil, err
				}
			}
			state, err := cell.MarshalPartial()
			if err != nil {
				return nil, err
			}
			out = append(out, Partial{Metric: m.Name, Cell: string(c), Tenants: int64(len(bounded[c])), State: state})
		}
	}
	return out, nil
}

func sampleSeed(key []byte, w Window, metric, tenant string) uint64 {
	h := hmac.New(sha256.New, key)
	fmt.Fprintf(h, "%d|%s|%s", w.Start.Unix(), metric, tenant)
	return binary.LittleEndian.Uint64(h.Sum(nil))
}
