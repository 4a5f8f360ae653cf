package aggregator

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
)

// progress is a partition's last recorded state.
type progress struct {
	closed time.Time // every window ending at or before it is closed
	resume int64     // where a restart replays from (a Kafka offset, or kafka.FirstOffset)
	high   int64     // offsets below it were read before the last close
}

// closedWindow is one window a partition closes, with its partials (when base windows are
// released) and its tenants' raw material, which every release is drawn from.
type closedWindow struct {
	w        Window
	partials []Partial
	tenants  []TenantRow
}

type store struct {
	conn driver.Conn
	db   string
	plan string // the base plan's hash: every partial, tenant row and progress row carries it
	// plans are the hashes of every kind of release (base windows, weeks, months).
	plans []string
	// keep, when set, filters what a close writes once its insert is open on the server
	// (writeClose): the aggregator drops the tenants deleted meanwhile.
	keep func(context.Context, []closedWindow) ([]closedWindow, error)
}

// closeIdle is how long ClickHouse waits for the data of an open close insert (its
// receive_timeout) before it ends the insert and keeps nothing of it; an instance paused for
// longer between its check of the deleted tenants and its data has its insert dropped. 10 s,
// as the processor's inserts (ClickHouse 18.16 checks it once per 10 s).
const closeIdle = 10 * time.Second

func intList(parts []int) string {
	s := make([]string, len(parts))
	for i, p := range parts {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// loadProgress reads the last progress of each partition (absent: never closed anything).
func (s *store) loadProgress(ctx context.Context, parts []int) (map[int]progress, error) {
	// Rendered literally: a bound slice becomes an Array on 18.16 (docs/DESIGN.md §9).
	rows, err := s.conn.Query(ctx, `SELECT partition, max(closed_through), argMax(resume_offset, closed_through), argMax(high_offset, closed_through)
		FROM `+s.db+`_aggregator.aggregate_state WHERE kind = 'progress' AND plan_hash = ? AND partition IN (`+intList(parts)+`) GROUP BY partition`, s.plan)
	if err != nil {
		return nil, fmt.Errorf("read aggregator progress: %w", err)
	}
	defer rows.Close()
	out := map[int]progress{}
	for rows.Next() {
		var (
			part uint32
			pr   progress
		)
		if err := rows.Scan(&part, &pr.closed, &pr.resume, &pr.high); err != nil {
			return nil, err
		}
		out[int(part)] = pr
	}
	return out, rows.Err()
}

// writeClose stores the closed windows' partials and the partition's new progress in one
// insert (one block: all or nothing), all under one close id. A window this partition has
// closed before keeps its first close: its partials are not written again (and, should two
// closes race past this check, the release step merges one of them only, see partials).
func (s *store) writeClose(ctx context.Context, part int, closed []closedWindow, pr progress, now time.Time) error {
	before, err := s.closedBefore(ctx, part, closed)
	if err != nil {
		return err
	}
	ictx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"receive_timeout": int(closeIdle.Seconds())}))
	b, err := s.conn.PrepareBatch(ictx, "INSERT INTO "+s.db+"_aggregator.aggregate_state (kind, plan_hash, partition, window_start, window_end, metric, cell, tenants, state, closed_through, resume_offset, high_offset, at, close_id, tenant_id, events, users)")
	if err != nil {
		return err
	}
	// The insert is open on the server from here (it shows in system.processes). What it will
	// hold is decided only now: a tenant deleted before this check is left out; a deletion
	// whose tombstone this check missed began after the insert opened, and waits for it to end
	// before it deletes (promise 8), whether it is sent at once, after a pause (dropped by the
	// server past closeIdle: nothing kept, the close is retried) or never.
	if s.keep != nil {
		if closed, err = s.keep(ctx, closed); err != nil {
			_ = b.Abort() // no data sent: nothing to keep
			return err
		}
	}
	id := uuid.NewString()
	none := []uint64{}
	for _, c := range closed {
		if before[c.w.Start.Unix()] {
			continue
		}
		for _, p := range c.partials {
			if err := b.Append("partial", s.plan, uint32(part), c.w.Start, c.w.End, p.Metric, p.Cell, uint32(p.Tenants), string(p.State), pr.closed, pr.resume, pr.high, now, id, "", uint64(0), none); err != nil {
				return err
			}
		}
		for _, t := range c.tenants {
			users := t.Users
			if users == nil {
				users = none
			}
			if err := b.Append("tenant", s.plan, uint32(part), c.w.Start, c.w.End, t.Metric, t.Cell, uint32(0), "", pr.closed, pr.resume, pr.high, now, id, t.Tenant, uint64(max(0, t.Events)), users); err != nil {
				return err
			}
		}
	}
	if err := b.Append("progress", s.plan, uint32(part), time.Unix(0, 0), time.Unix(0, 0), "", "", uint32(0), "", pr.closed, pr.resume, pr.high, now, id, "", uint64(0), none); err != nil {
		return err
	}
	return b.Send()
}

// closedBefore returns which of the windows the partition already stored partials or tenant
// rows for.
func (s *store) closedBefore(ctx context.Context, part int, closed []closedWindow) (map[int64]bool, error) {
	out := map[int64]bool{}
	if len(closed) == 0 {
		return out, nil
	}
	starts := make([]time.Time, len(closed))
	for i, c := range closed {
		starts[i] = c.w.Start
	}
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT window_start FROM "+s.db+"_aggregator.aggregate_state WHERE kind IN ('partial', 'tenant') AND plan_hash = ? AND partition = ? AND window_start >= ? AND window_start <= ?",
		s.plan, uint32(part), slices.MinFunc(starts, time.Time.Compare), slices.MaxFunc(starts, time.Time.Compare))
	if err != nil {
		return nil, fmt.Errorf("read earlier closes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t time.Time
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out[t.Unix()] = true
	}
	return out, rows.Err()
}

// closedAll returns, per partition, the window end everything before which is closed.
func (s *store) closedAll(ctx context.Context) (map[int]time.Time, error) {
	rows, err := s.conn.Query(ctx, "SELECT partition, max(closed_through) FROM "+s.db+"_aggregator.aggregate_state WHERE kind = 'progress' AND plan_hash = ? GROUP BY partition", s.plan)
	if err != nil {
		return nil, fmt.Errorf("read aggregator progress: %w", err)
	}
	defer rows.Close()
	out := map[int]time.Time{}
	for rows.Next() {
		var (
			part uint32
			t    time.Time
		)
		if err := rows.Scan(&part, &t); err != nil {
			return nil, err
		}
		out[int(part)] = t
	}
	return out, rows.Err()
}

// firstWindow is where the release step starts: the start of the earliest base window with
// any partial or tenant row, or the end of the earliest release if that is earlier, and false
// if there is neither. Releases count because retention deletes the state of released windows
// (ExpireState): the release step must go on from where the data started, so that a window
// without data after them is still released. Their end, not their start, counts: a week or a
// month may start before the first data, and starting from there would release the period
// before it, then the one before that.
func (s *store) firstWindow(ctx context.Context) (time.Time, bool, error) {
	var (
		first time.Time
		n     uint64
	)
	err := s.conn.QueryRow(ctx, "SELECT min(w), count() FROM (SELECT window_start AS w FROM "+s.db+"_aggregator.aggregate_state WHERE kind IN ('partial', 'tenant') AND plan_hash = ? UNION ALL SELECT window_end AS w FROM "+s.db+"_external_aggregate.releases WHERE has(splitByChar(',', ?), plan_hash))", s.plan, strings.Join(append([]string{s.plan}, s.plans...), ",")).Scan(&first, &n)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read aggregator partials and releases: %w", err)
	}
	return first, n > 0, nil
}

// releasedWindows is the set of windows (spans) that have release rows, under any plan: a
// window released under one plan is never released again under another.
func (s *store) releasedWindows(ctx context.Context) (map[spanKey]bool, error) {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT window_start, window_end FROM "+s.db+"_external_aggregate.releases")
	if err != nil {
		return nil, fmt.Errorf("read releases: %w", err)
	}
	defer rows.Close()
	out := map[spanKey]bool{}
	for rows.Next() {
		var w Window
		if err := rows.Scan(&w.Start, &w.End); err != nil {
			return nil, err
		}
		out[w.key()] = true
	}
	return out, rows.Err()
}

// partials returns the window's partials: for each partition, those of its first close only
// (earliest, then smallest close id), as one unit. A second close of the same window (a
// replay after the registry changed) may hold other cells; merging both would let a tenant
// reach 2·L0 cells. Rows of one close are unique by (metric, cell).
func (s *store) partials(ctx context.Context, w Window) ([]Partial, error) {
	return s.partialsExcept(ctx, w, nil)
}

// partialsExcept is partials without those of the partitions in skip.
func (s *store) partialsExcept(ctx context.Context, w Window, skip map[int]bool) ([]Partial, error) {
	rows, err := s.conn.Query(ctx, `SELECT partition, metric, cell, tenants, state FROM `+s.db+`_aggregator.aggregate_state
WHERE kind = 'partial' AND plan_hash = ? AND window_start = ?
  AND (partition, close_id) IN (
    SELECT partition, argMin(close_id, concat(toString(toUInt32(at)), close_id)) FROM `+s.db+`_aggregator.aggregate_state
    WHERE kind = 'partial' AND plan_hash = ? AND window_start = ? GROUP BY partition)
ORDER BY partition, metric, cell`, s.plan, w.Start, s.plan, w.Start)
	if err != nil {
		return nil, fmt.Errorf("read partials of %v: %w", w, err)
	}
	defer rows.Close()
	type key struct {
		part         uint32
		metric, cell string
	}
	seen := map[key]bool{}
	var out []Partial
	for rows.Next() {
		var (
			k       key
			tenants uint32
			state   string
		)
		if err := rows.Scan(&k.part, &k.metric, &k.cell, &tenants, &state); err != nil {
			return nil, err
		}
		if skip[int(k.part)] {
			continue
		}
		if seen[k] {
			continue // a close written twice (an insert retried after an unanswered success)
		}
		seen[k] = true
		out = append(out, Partial{Metric: k.metric, Cell: k.cell, Tenants: int64(tenants), State: []byte(state)})
	}
	return out, rows.Err()
}

// tenantRows returns the tenant rows of every base window in period w (a base window or a
// longer period): for each (base window, partition), those of its first close only, as
// partials does; and the partitions that have any.
func (s *store) tenantRows(ctx context.Context, w Window) ([]TenantRow, map[int]bool, error) {
	rows, err := s.conn.Query(ctx, `SELECT window_start, partition, tenant_id, metric, cell, events, users FROM `+s.db+`_aggregator.aggregate_state
WHERE kind = 'tenant' AND plan_hash = ? AND window_start >= ? AND window_start < ?
  AND (window_start, partition, close_id) IN (
    SELECT window_start, partition, argMin(close_id, concat(toString(toUInt32(at)), close_id)) FROM `+s.db+`_aggregator.aggregate_state
    WHERE kind = 'tenant' AND plan_hash = ? AND window_start >= ? AND window_start < ? GROUP BY window_start, partition)
ORDER BY window_start, partition, tenant_id, metric, cell`, s.plan, w.Start, w.End, s.plan, w.Start, w.End)
	if err != nil {
		return nil, nil, fmt.Errorf("read tenant rows of %v: %w", w, err)
	}
	defer rows.Close()
	type key struct {
		start                int64
		part                 uint32
		tenant, metric, cell string
	}
	seen := map[key]bool{}
	parts := map[int]bool{}
	var out []TenantRow
	for rows.Next() {
		var (
			start  time.Time
			k      key
			events uint64
			users  []uint64
		)
		if err := rows.Scan(&start, &k.part, &k.tenant, &k.metric, &k.cell, &events, &users); err != nil {
			return nil, nil, err
		}
		k.start = start.Unix()
		if seen[k] {
			continue // a close written twice (an insert retried after an unanswered success)
		}
		seen[k] = true
		parts[int(k.part)] = true
		out = append(out, TenantRow{Tenant: k.tenant, Metric: k.metric, Cell: k.cell, Events: int64(min(events, 1<<62)), Users: users})
	}
	return out, parts, rows.Err()
}

// releasedIDs is the set of release ids that have release rows.
func (s *store) releasedIDs(ctx context.Context) (map[string]bool, error) {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT release_id FROM "+s.db+"_external_aggregate.releases")
	if err != nil {
		return nil, fmt.Errorf("read releases: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// insertReleases writes a window's released cells in one insert.
func (s *store) insertReleases(ctx context.Context, id, plan string, w Window, rs []Released, policyVersion int, now time.Time) error {
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.db+"_external_aggregate.releases (release_id, plan_hash, window_start, window_end, metric, unit, dims, dim_names, dim_values, value, stddev, ci95_low, ci95_high, epsilon, delta, selected, selection_epsilon, selection_delta, l0, linf, mechanism, policy_version, released_at)")
	if err != nil {
		return err
	}
	for _, r := range rs {
		sel := uint8(0)
		if r.Selected {
			sel = 1
		}
		if err := b.Append(id, plan, w.Start, w.End, r.Metric, r.Unit, r.Dims(), r.DimNames, r.DimValues, r.Value, r.StdDev, r.CI95Low, r.CI95High,
			r.Epsilon, r.Delta, sel, r.SelectionEpsilon, r.SelectionDelta, r.L0, r.LInf, r.Mechanism, uint16(policyVersion), now); err != nil {
			return err
		}
	}
	return b.Send()
}

// StoredRelease is one row of the releases table, as readers get it.
type StoredRelease struct {
	ReleaseID   string
	PlanHash    string
	WindowStart time.Time
	WindowEnd   time.Time
	Metric      string
	Dims        string
	Value       int64
	StdDev      float64
	CI95Low     float64
	CI95High    float64
	Epsilon     float64
	Delta       float64
	Selected    bool
	L0, LInf    int64
	Mechanism   string
}

// Releases reads every stored release of database db under the plan (every plan if ""),
// ordered by window, metric and cell.
func Releases(ctx context.Context, conn driver.Conn, db, plan string) ([]StoredRelease, error) {
	rows, err := conn.Query(ctx, "SELECT release_id, plan_hash, window_start, window_end, metric, dims, value, stddev, ci95_low, ci95_high, epsilon, delta, selected, l0, linf, mechanism FROM "+db+"_external_aggregate.releases WHERE plan_hash = ? OR ? = '' ORDER BY window_start, window_end, metric, dims LIMIT 1 BY window_start, window_end, metric, dims", plan, plan)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []StoredRelease
	for rows.Next() {
		var (
			r   StoredRelease
			sel uint8
		)
		if err := rows.Scan(&r.ReleaseID, &r.PlanHash, &r.WindowStart, &r.WindowEnd, &r.Metric, &r.Dims, &r.Value, &r.StdDev, &r.CI95Low, &r.CI95High, &r.Epsilon, &r.Delta, &sel, &r.L0, &r.LInf, &r.Mechanism); err != nil {
			return nil, err
		}
		r.Selected = sel == 1
		out = append(out, r)
	}
	return out, rows.Err()
}
