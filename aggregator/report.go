package aggregator

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/shukei/shukei/anonymizer/dp"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
)

// UtilityRow is the utility of one metric's release for one period, in one mode, measured over
// cells with at least MinTenants true tenants and over Reps independent draws of the release.
type UtilityRow struct {
	Tenants  int
	Period   Period
	Mode     string // "catalogue": ids configured; "selection": every feature and setting cell data-derived
	Metric   string
	Cells    int     // cells with ≥ MinTenants tenants
	Released float64 // share of them released (mean over draws)
	// MedianErr is the median over cells and draws of |released − true| / true, against the
	// true, unbounded value; MedianNoiseErr against the bounded value (the noise alone).
	MedianErr, MedianNoiseErr float64
	// Coverage is the share of (released cell, draw) whose stated 95% interval holds the true
	// value, over every released cell of the metric (not only the large ones).
	Coverage float64
	// Spearman is the rank correlation, with the truth, of the released top-20 features (ranked
	// by their released total over the other dimension), mean over draws; NaN for metrics
	// without a feature dimension.
	Spearman float64
}

// Utility is the aggregator's utility report.
type Utility struct {
	Epsilon    float64
	MinTenants int
	Reps       int
	Month      Window
	Rows       []UtilityRow
}

// UtilityOptions are the choices of PrintUtility ('shukei aggregator --report-*').
type UtilityOptions struct {
	Epsilon    float64 // ε per metric release
	Tenants    []int   // the sizes of the synthetic populations, one report section each
	MinTenants int     // cells with at least this many true tenants are measured
	Draws      int     // independent draws of each release
}

// PrintUtility prints to w the utility of last month's releases (UtilityReport) for synthetic
// populations of the sizes o.Tenants: 'shukei aggregator --report'.
func PrintUtility(w io.Writer, cfg config.Aggregator, o UtilityOptions) error {
	var pops []*population.Population
	for _, n := range o.Tenants {
		pops = append(pops, population.New(n, 1, "t"))
	}
	u, err := UtilityReport(cfg, pops, time.Now().UTC().AddDate(0, -1, 0), o.Epsilon, o.MinTenants, o.Draws)
	if err != nil {
		return err
	}
	u.Print(w)
	return nil
}

// UtilityReport measures the releases of the synthetic population at ε per metric release, for
// each population in pops: a day (the month's first), an ISO week (the first that lies in the
// month) and the calendar month containing month. Events go through the production path: the
// decision's tagging, one accumulator per day (a base window), its tenant rows, merged per
// week and month and bounded per tenant over the period, partials, selection and noise; each
// release is drawn reps times (a measurement, never a publication) to measure the error, the
// share released, the rank correlation of the top features and the coverage of the intervals.
func UtilityReport(cfg config.Aggregator, pops []*population.Population, month time.Time, eps float64, minTenants, reps int) (Utility, error) {
	m := PeriodMonth.Of(month, 24*time.Hour)
	u := Utility{Epsilon: eps, MinTenants: minTenants, Reps: reps, Month: m}
	for _, pop := range pops {
		rows, err := utilityOf(cfg, pop, m, eps, minTenants, reps)
		if err != nil {
			return u, err
		}
		u.Rows = append(u.Rows, rows...)
	}
	return u, nil
}

func utilityOf(cfg config.Aggregator, pop *population.Population, month Window, eps float64, minTenants, reps int) ([]UtilityRow, error) {
	c := cfg
	c.Epsilon, c.Window = eps, 24*time.Hour
	c.Features, c.Settings = population.Features, population.Settings
	base, err := NewPlan(c, 1)
	if err != nil {
		return nil, err
	}
	week := PeriodWeek.Of(month.Start, 0)
	if week.Start.Before(month.Start) {
		week = PeriodWeek.Of(week.End, 0)
	}
	spans := []struct {
		p Period
		w Window
	}{{PeriodWindow, WindowOf(month.Start, 24*time.Hour)}, {PeriodWeek, week}, {PeriodMonth, month}}
	accs := make([]*Acc, len(spans))
	truths := make([]*truth, len(spans))
	for i, s := range spans {
		accs[i], truths[i] = base.NewAcc(s.w), newTruth(base)
	}
	tenants := map[string]*population.Tenant{}
	for i := range pop.Tenants {
		tenants[pop.Tenants[i].ID] = &pop.Tenants[i]
	}
	for d := month.Start; d.Before(month.End); d = d.AddDate(0, 0, 1) {
		in := func(i int) bool { return !d.Before(spans[i].w.Start) && d.Before(spans[i].w.End) }
		dayAcc := base.NewAcc(WindowOf(d, 24*time.Hour))
		for _, ev := range pop.Day(d) {
			tg := decision.Tagged{Event: ev, Tenant: &tenants[ev.TenantID].Tenant, Purposes: uint16(policy.AllPurposes)}
			if ev.User != "" {
				tg.Pseudonym = fakePseudonym(ev.TenantID, ev.User)
			}
			dayAcc.Add(&tg, 0)
			for i := range spans {
				if in(i) {
					truths[i].add(&tg)
				}
			}
		}
		rows := dayAcc.TenantRows()
		for i := range spans {
			if in(i) {
				if err := accs[i].AddRows(rows); err != nil {
					return nil, err
				}
			}
		}
	}
	var out []UtilityRow
	for i, s := range spans {
		tenantRows := accs[i].TenantRows()
		for _, mode := range []string{"catalogue", "selection"} {
			mc := c
			if mode == "selection" {
				mc.Features, mc.Settings = nil, nil
			}
			plan, err := NewPlan(mc, 1)
			if err != nil {
				return nil, err
			}
			rs, err := measure(plan, s.w, tenantRows, truths[i], minTenants, reps)
			if err != nil {
				return nil, err
			}
			for j := range rs {
				rs[j].Tenants, rs[j].Period, rs[j].Mode = len(pop.Tenants), s.p, mode
			}
			out = append(out, rs...)
		}
	}
	return out, nil
}

// measure draws the period's release reps times and compares it with the truth.
func measure(plan *Plan, w Window, rows []TenantRow, tr *truth, minTenants, reps int) ([]UtilityRow, error) {
	// Split over six partitions by tenant, as the topic is keyed, so merging is exercised.
	const parts = 6
	byPart := make([][]TenantRow, parts)
	for _, r := range rows {
		h := fnv.New32a()
		h.Write([]byte(r.Tenant))
		byPart[h.Sum32()%parts] = append(byPart[h.Sum32()%parts], r)
	}
	var partials []Partial
	for _, pr := range byPart {
		a := plan.NewAcc(w)
		if err := a.AddRows(pr); err != nil {
			return nil, err
		}
		ps, err := a.Partials([]byte("utility-report"))
		if err != nil {
			return nil, err
		}
		partials = append(partials, ps...)
	}
	bounded := boundedValues(partials)
	type stats struct {
		errs, noiseErrs []float64
		released        int
		covered, shown  int
		rho             []float64
	}
	st := map[string]*stats{}
	for _, m := range plan.Metrics {
		st[m.Name] = &stats{}
	}
	draws, err := drawReleases(plan, partials, reps)
	if err != nil {
		return nil, err
	}
	for _, rs := range draws {
		got := map[string]Released{}
		for _, r := range rs {
			got[r.Metric+"/"+cellKey(r.DimValues)] = r
			tv := float64(tr.valueOf(plan.metric(r.Metric), cellKey(r.DimValues)))
			s := st[r.Metric]
			s.shown++
			if tv >= r.CI95Low && tv <= r.CI95High {
				s.covered++
			}
		}
		for _, m := range plan.Metrics {
			s := st[m.Name]
			for key, tc := range tr.cells[m.Name] {
				if len(tc.tenants) < minTenants {
					continue
				}
				r, ok := got[m.Name+"/"+key]
				if !ok {
					continue
				}
				s.released++
				tv := float64(tc.value(m.Unit))
				s.errs = append(s.errs, math.Abs(float64(r.Value)-tv)/tv)
				if b := float64(bounded[m.Name+"/"+key]); b > 0 {
					s.noiseErrs = append(s.noiseErrs, math.Abs(float64(r.Value)-b)/b)
				}
			}
			if m.Dims[0].Name == "feature" {
				s.rho = append(s.rho, topSpearman(m, rs, tr, 20))
			}
		}
	}
	var out []UtilityRow
	for _, m := range plan.Metrics {
		s := st[m.Name]
		row := UtilityRow{Metric: m.Name, Spearman: math.NaN(), Coverage: math.NaN()}
		for _, tc := range tr.cells[m.Name] {
			if len(tc.tenants) >= minTenants {
				row.Cells++
			}
		}
		if row.Cells > 0 {
			row.Released = float64(s.released) / float64(row.Cells*reps)
		}
		row.MedianErr, row.MedianNoiseErr = median(s.errs), median(s.noiseErrs)
		if s.shown > 0 {
			row.Coverage = float64(s.covered) / float64(s.shown)
		}
		if len(s.rho) > 0 {
			row.Spearman = mean(s.rho)
		}
		out = append(out, row)
	}
	return out, nil
}

// drawReleases draws the release of partials reps times, on every CPU: each draw is
// independent (fresh noise from the DP library's secure source), and the draws are returned in
// order, so what is measured of them does not depend on how they were scheduled.
func drawReleases(plan *Plan, partials []Partial, reps int) ([][]Released, error) {
	out := make([][]Released, reps)
	errs := make([]error, reps)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), reps) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < reps; i = int(next.Add(1) - 1) {
				out[i], _, errs[i] = plan.Release(partials)
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// topSpearman ranks the features by their released total over the metric's other dimension,
// takes the released top n and returns Spearman's rank correlation between their released
// and their true totals.
func topSpearman(m *Metric, rs []Released, tr *truth, n int) float64 {
	released := map[string]float64{}
	for _, r := range rs {
		if r.Metric == m.Name {
			released[r.DimValues[0]] += float64(r.Value)
		}
	}
	trueTotal := map[string]float64{}
	for key, tc := range tr.cells[m.Name] {
		f, _, _ := strings.Cut(key, "|")
		trueTotal[f] += float64(tc.value(m.Unit))
	}
	feats := make([]string, 0, len(released))
	for f := range released {
		feats = append(feats, f)
	}
	slices.SortFunc(feats, func(a, b string) int { return cmp.Or(cmp.Compare(released[b], released[a]), cmp.Compare(a, b)) })
	if len(feats) > n {
		feats = feats[:n]
	}
	x := make([]float64, len(feats))
	y := make([]float64, len(feats))
	for i, f := range feats {
		x[i], y[i] = released[f], trueTotal[f]
	}
	return Spearman(x, y)
}

// Spearman is the rank correlation of x and y (average ranks for ties); NaN for fewer than
// two points or a constant series.
func Spearman(x, y []float64) float64 {
	if len(x) != len(y) || len(x) < 2 {
		return math.NaN()
	}
	rx, ry := ranks(x), ranks(y)
	mx, my := mean(rx), mean(ry)
	var sxy, sxx, syy float64
	for i := range rx {
		sxy += (rx[i] - mx) * (ry[i] - my)
		sxx += (rx[i] - mx) * (rx[i] - mx)
		syy += (ry[i] - my) * (ry[i] - my)
	}
	if sxx == 0 || syy == 0 {
		return math.NaN()
	}
	return sxy / math.Sqrt(sxx*syy)
}

func ranks(v []float64) []float64 {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(v[a], v[b]) })
	r := make([]float64, len(v))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && v[idx[j+1]] == v[idx[i]] {
			j++
		}
		for k := i; k <= j; k++ {
			r[idx[k]] = float64(i+j)/2 + 1
		}
		i = j + 1
	}
	return r
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// Row returns the row of (tenants, period, mode, metric), if the report has it.
func (u Utility) Row(tenants int, p Period, mode, metric string) (UtilityRow, bool) {
	for _, r := range u.Rows {
		if r.Tenants == tenants && r.Period == p && r.Mode == mode && r.Metric == metric {
			return r, true
		}
	}
	return UtilityRow{}, false
}

// Print writes the report as a table.
func (u Utility) Print(w io.Writer) {
	fmt.Fprintf(w, "Utility of the external_aggregate releases at ε=%g per metric release; day %s, ISO week and month %s; %d draws of each release\n",
		u.Epsilon, u.Month.Start.Format("2006-01-02"), u.Month.Start.Format("2006-01"), u.Reps)
	fmt.Fprintf(w, "ERROR: median |released − true| / true over cells with ≥ %d true tenants (NOISE: against the bounded value); RELEASED: share of those cells released;\n", u.MinTenants)
	fmt.Fprintln(w, "COVERAGE: share of released cells whose 95% interval holds the true value; TOP-20 ρ: Spearman correlation of the released top-20 features with the truth.")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANTS\tPERIOD\tMODE\tMETRIC\tCELLS\tRELEASED\tERROR\tNOISE\tCOVERAGE\tTOP-20 ρ\t")
	for _, r := range u.Rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%.3f\t%s\t%s\t%s\t%s\t\n", r.Tenants, r.Period, r.Mode, r.Metric, r.Cells, r.Released,
			fmtNum(r.MedianErr, 4), fmtNum(r.MedianNoiseErr, 4), fmtNum(r.Coverage, 3), fmtNum(r.Spearman, 3))
	}
	tw.Flush()
}

func fmtNum(x float64, digits int) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.*f", digits, x)
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
	tenants map[string]struct{}
	users   map[pseudonym.Pseudonym]struct{}
	events  int
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
			c = &truthCell{tenants: map[string]struct{}{}}
			t.cells[m.Name][k] = c
		}
		c.tenants[tg.Tenant.ID] = struct{}{}
		if m.Unit == UnitUsers && tg.Pseudonym != (pseudonym.Pseudonym{}) {
			if c.users == nil {
				c.users = map[pseudonym.Pseudonym]struct{}{}
			}
			c.users[tg.Pseudonym] = struct{}{}
		}
		c.events++
	}
}

// valueOf is the true value of a cell (0 for a cell without events).
func (t *truth) valueOf(m *Metric, key string) int {
	c := t.cells[m.Name][key]
	if c == nil {
		return 0
	}
	return c.value(m.Unit)
}

func (c *truthCell) value(u Unit) int {
	switch u {
	case UnitUsers:
		return len(c.users)
	case UnitEvents:
		return c.events
	}
	return len(c.tenants)
}

// metric returns the plan's metric called name.
func (p *Plan) metric(name string) *Metric {
	for _, m := range p.Metrics {
		if m.Name == name {
			return m
		}
	}
	return nil
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
