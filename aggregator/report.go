package aggregator

import (
	"crypto/sha256"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/shukei/shukei/anonymizer/dp"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/population"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/schemas/policy"
)

// UtilityRow is the utility of one metric's release for cells with at least MinTenants
// tenants.
type UtilityRow struct {
	Mode      string // "catalogue": ids configured; "selection": every cell data-derived
	Metric    string
	Cells     int // cells with ≥ MinTenants tenants
	Released  int // of those, released
	MedianErr float64
	// MedianNoiseErr is against the bounded (clamped and sampled) value: the error of the
	// noise alone, without the bias of bounding.
	MedianNoiseErr float64
}

// Utility is the aggregator's utility report.
type Utility struct {
	Epsilon    float64
	MinTenants int
	Tenants    int
	Events     int
	Window     Window
	Rows       []UtilityRow
	// Overall: the median relative error over every released cell with ≥ MinTenants tenants,
	// and the fraction of such cells released, in selection mode (the harder one).
	MedianErr, Released float64
}

// UtilityReport measures, on one day of the synthetic population, how far the released
// values are from the truth at ε per metric release: the median relative error of cells with
// at least minTenants tenants and the fraction of them released, with the public catalogues
// configured (no selection for catalogued ids) and without them (every feature and setting
// cell selected privately). The events go through the same accumulation, bounding, partials
// (split over six partitions), merging, selection and noise as the aggregator's.
func UtilityReport(cfg config.Aggregator, pop *population.Population, day time.Time, eps float64, minTenants int) (Utility, error) {
	evs := pop.Day(day)
	w := WindowOf(day, 24*time.Hour)
	u := Utility{Epsilon: eps, MinTenants: minTenants, Tenants: len(pop.Tenants), Events: len(evs), Window: w}
	tenants := map[string]*population.Tenant{}
	for i := range pop.Tenants {
		tenants[pop.Tenants[i].ID] = &pop.Tenants[i]
	}
	var allErr []float64
	var cells, released int
	for _, mode := range []string{"catalogue", "selection"} {
		c := cfg
		c.Epsilon, c.Window = eps, 24*time.Hour
		c.Features, c.Settings = nil, nil
		if mode == "catalogue" {
			c.Features, c.Settings = population.Features, population.Settings
		}
		plan, err := NewPlan(c, 1)
		if err != nil {
			return u, err
		}
		const parts = 6
		accs := make([]*Acc, parts)
		for i := range accs {
			accs[i] = plan.NewAcc(w)
		}
		truth := newTruth(plan)
		for i := range evs {
			ev := evs[i]
			t := tenants[ev.TenantID]
			tg := decision.Tagged{Event: ev, Tenant: &t.Tenant, Purposes: uint16(policy.AllPurposes)}
			if ev.User != "" {
				tg.Pseudonym = fakePseudonym(ev.TenantID, ev.User)
			}
			h := fnv.New32a()
			h.Write([]byte(ev.TenantID))
			accs[h.Sum32()%parts].Add(&tg, int64(i))
			truth.add(&tg)
		}
		var partials []Partial
		for _, acc := range accs {
			ps, err := acc.Partials([]byte("utility-report"))
			if err != nil {
				return u, err
			}
			partials = append(partials, ps...)
		}
		bounded := boundedValues(partials)
		rs, _, err := plan.Release(partials)
		if err != nil {
			return u, err
		}
		got := map[string]int64{}
		for _, r := range rs {
			got[r.Metric+"/"+cellKey(r.DimValues)] = r.Value
		}
		for _, m := range plan.Metrics {
			row := UtilityRow{Mode: mode, Metric: m.Name}
			var errs, noiseErrs []float64
			for key, tc := range truth.cells[m.Name] {
				if len(tc.tenants) < minTenants {
					continue
				}
				row.Cells++
				v, ok := got[m.Name+"/"+key]
				if !ok {
					continue
				}
				row.Released++
				tv := float64(tc.value(m.Unit))
				errs = append(errs, math.Abs(float64(v)-tv)/tv)
				if b := float64(bounded[m.Name+"/"+key]); b > 0 {
					noiseErrs = append(noiseErrs, math.Abs(float64(v)-b)/b)
				}
			}
			row.MedianErr, row.MedianNoiseErr = median(errs), median(noiseErrs)
			if mode == "selection" {
				allErr = append(allErr, errs...)
				cells += row.Cells
				released += row.Released
			}
			u.Rows = append(u.Rows, row)
		}
	}
	u.MedianErr = median(allErr)
	if cells > 0 {
		u.Released = float64(released) / float64(cells)
	}
	return u, nil
}

// Print writes the report as a table.
func (u Utility) Print(w io.Writer) {
	fmt.Fprintf(w, "Utility of the external_aggregate releases at ε=%g per metric release (one window %s; %d tenants, %d events)\n",
		u.Epsilon, u.Window.Start.Format("2006-01-02"), u.Tenants, u.Events)
	fmt.Fprintf(w, "Cells with ≥ %d tenants; relative error |released − true| / true (median), and against the bounded value (noise only).\n", u.MinTenants)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODE\tMETRIC\tCELLS\tRELEASED\tMEDIAN REL. ERROR\tNOISE ONLY\t")
	for _, r := range u.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d (%.0f%%)\t%s\t%s\t\n", r.Mode, r.Metric, r.Cells, r.Released, pct(r.Released, r.Cells), fmtErr(r.MedianErr), fmtErr(r.MedianNoiseErr))
	}
	tw.Flush()
	fmt.Fprintf(w, "Selection mode, all metrics: median relative error %s, fraction of cells released %.3f\n", fmtErr(u.MedianErr), u.Released)
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func fmtErr(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.4f", x)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fakePseudonym(tenant, user string) pseudonym.Pseudonym {
	var p pseudonym.Pseudonym
	h := sha256.Sum256([]byte(tenant + "\x00" + user))
	copy(p[:], h[:])
	return p
}

// truth counts each cell exactly, without bounding, independently of Acc.
type truth struct {
	plan  *Plan
	cells map[string]map[string]*truthCell
}

type truthCell struct {
	tenants map[string]bool
	users   map[pseudonym.Pseudonym]bool
	events  map[string]bool
}

func newTruth(p *Plan) *truth { return &truth{plan: p, cells: map[string]map[string]*truthCell{}} }

func (t *truth) add(tg *decision.Tagged) {
	for _, m := range t.plan.Metrics {
		if m.Schema != tg.Event.Schema {
			continue
		}
		vals, ok := m.key(tg, t.plan.edition(tg.Tenant.Edition))
		if !ok {
			continue
		}
		if t.cells[m.Name] == nil {
			t.cells[m.Name] = map[string]*truthCell{}
		}
		k := cellKey(vals)
		c := t.cells[m.Name][k]
		if c == nil {
			c = &truthCell{tenants: map[string]bool{}, users: map[pseudonym.Pseudonym]bool{}, events: map[string]bool{}}
			t.cells[m.Name][k] = c
		}
		c.tenants[tg.Tenant.ID] = true
		c.users[tg.Pseudonym] = true
		c.events[tg.Event.EventID] = true
	}
}

func (c *truthCell) value(u Unit) int {
	switch u {
	case UnitUsers:
		return len(c.users)
	case UnitEvents:
		return len(c.events)
	}
	return len(c.tenants)
}

// boundedValues sums the partials' raw values per metric and cell.
func boundedValues(ps []Partial) map[string]int64 {
	out := map[string]int64{}
	for _, p := range ps {
		v, err := dp.PartialValue(p.State)
		if err == nil {
			out[p.Metric+"/"+p.Cell] += v
		}
	}
	return out
}
