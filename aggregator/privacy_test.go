package aggregator

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/anonymizer/dp"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/dptest"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

var day = time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)

func catalogueConfig() config.Aggregator {
	c := config.Default().Aggregator
	c.Epsilon = 1
	c.Features, c.Settings = population.Features, population.Settings
	return c
}

func mustPlan(t testing.TB, c config.Aggregator) *Plan {
	t.Helper()
	p, err := NewPlan(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// partialsOf runs the population's day (and extra events) through one Acc.
func partialsOf(t testing.TB, p *Plan, pop *population.Population, extra func(add func(*decision.Tagged))) []Partial {
	t.Helper()
	acc := p.NewAcc(WindowOf(day, 24*time.Hour))
	tenants := map[string]*registry.Tenant{}
	for i := range pop.Tenants {
		tenants[pop.Tenants[i].ID] = &pop.Tenants[i].Tenant
	}
	var off int64
	add := func(tg *decision.Tagged) { acc.Add(tg, off); off++ }
	for _, ev := range pop.Day(day) {
		tg := decision.Tagged{Event: ev, Tenant: tenants[ev.TenantID], Purposes: uint16(policy.AllPurposes), Pseudonym: fakePseudonym(ev.TenantID, ev.User)}
		add(&tg)
	}
	if extra != nil {
		extra(add)
	}
	ps, err := acc.Partials([]byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// heavyTenant adds n events of one tenant spread over every feature, setting, action and
// platform, with many users: far more than any bound.
func heavyTenant(n int) func(add func(*decision.Tagged)) {
	return func(add func(*decision.Tagged)) {
		ten := &registry.Tenant{ID: "heavy", Status: registry.StatusContracted, Edition: "enterprise"}
		oses := enumOS()
		devices := enumDevice()
		actions := enumActions()
		tg := decision.Tagged{Tenant: ten, Purposes: uint16(policy.AllPurposes)}
		for i := range n {
			tg.Event = event.Event{Envelope: event.Envelope{
				EventID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), TenantID: ten.ID, OccurredAt: day.Add(time.Duration(i) * time.Millisecond),
				Client: event.Client{OS: event.OS(oses[i%len(oses)]), DeviceKind: event.DeviceKind(devices[i%len(devices)])},
			}}
			switch i % 4 {
			case 0:
				tg.Event.Schema, tg.Event.Data = event.SchemaFeatureUseV1, &event.FeatureUse{FeatureID: population.Features[(i/4)%len(population.Features)], Count: 1}
			case 1:
				tg.Event.Schema, tg.Event.Data = event.SchemaSettingsV1, &event.Settings{SettingKey: population.Settings[(i/4)%len(population.Settings)], CustomizationPresent: i%8 == 1}
			case 2:
				tg.Event.Schema, tg.Event.Data = event.SchemaAppAccessV1, &event.AppAccess{AppID: "app-1", Action: event.Action(actions[(i/4)%len(actions)])}
			case 3:
				tg.Event.Schema, tg.Event.Data = event.SchemaClientEnvV1, &event.ClientEnv{ClientKind: event.ClientBrowser, Browser: event.BrowserChrome}
			}
			tg.Pseudonym = fakePseudonym(ten.ID, fmt.Sprintf("user-%d", i%5000))
			add(&tg)
		}
	}
}

// TestOneTenantMovesACellByAtMostLInf: a tenant with 10⁶ events changes the bounded (pre-noise)
// value of at most L0 cells of each metric, each by at most LInf; every other cell is exactly
// the same, because the other tenants' sampling does not depend on it.
func TestOneTenantMovesACellByAtMostLInf(t *testing.T) {
	if raceDetector {
		t.Skip("statistical, one goroutine: make test runs it without -race")
	}
	p := mustPlan(t, catalogueConfig())
	pop := population.New(200, 3, "t")
	without := boundedValues(partialsOf(t, p, pop, nil))
	with := boundedValues(partialsOf(t, p, pop, heavyTenant(1_000_000)))
	for _, m := range p.Metrics {
		changed := 0
		for _, c := range m.configuredCells() {
			k := m.Name + "/" + c
			d := with[k] - without[k]
			if d < 0 || d > m.LInf {
				t.Errorf("%s: the heavy tenant moved the bounded value by %d, want 0..%d", k, d, m.LInf)
			}
			if d != 0 {
				changed++
			}
		}
		if int64(changed) > m.L0 {
			t.Errorf("%s: the heavy tenant changed %d cells, more than L0 = %d", m.Name, changed, m.L0)
		}
		if changed == 0 {
			t.Errorf("%s: the heavy tenant changed no cell: the test cannot see bounding", m.Name)
		}
		t.Logf("%s: heavy tenant changed %d cells (L0 = %d), each by ≤ %d", m.Name, changed, m.L0, m.LInf)
	}
	// With the catalogue every cell the heavy tenant can reach is configured, so the loop above
	// saw every cell that has a value.
	for k, v := range with {
		metric, cell, _ := strings.Cut(k, "/")
		if m := p.metric(metric); v > 0 && (m == nil || !m.configured(strings.Split(cell, "|"))) {
			t.Errorf("cell %s has a value but is not a configured cell the test checked", k)
		}
	}
}

// TestReleasedCellMovesByAtMostLInfPlusNoise: over many releases, the mean difference between
// a released cell with and without the heavy tenant is within [0, LInf] up to the noise's
// sampling error.
func TestReleasedCellMovesByAtMostLInfPlusNoise(t *testing.T) {
	if raceDetector {
		t.Skip("statistical, one goroutine: make test runs it without -race")
	}
	p := mustPlan(t, catalogueConfig())
	pop := population.New(200, 3, "t")
	a := partialsOf(t, p, pop, heavyTenant(100_000))
	b := partialsOf(t, p, pop, nil)
	m := p.Metrics[0] // feature_adoption
	cell := population.Features[0] + "|" + registry.StatusContracted
	const n = 20_000
	sa, sb := statesOf(a, m.Name, cell), statesOf(b, m.Name, cell)
	var sum float64
	for range n {
		ra, err := p.releaseCell(m, sa)
		if err != nil {
			t.Fatal(err)
		}
		rb, err := p.releaseCell(m, sb)
		if err != nil {
			t.Fatal(err)
		}
		sum += float64(ra.Value - rb.Value)
	}
	sd := math.Sqrt2 * noiseSD(p, m) / math.Sqrt(n)
	mean := sum / n
	z := math.Sqrt2 * math.Erfcinv(1e-5)
	t.Logf("mean released difference %.3f (LInf = %d, noise sd of the mean %.3f)", mean, m.LInf, sd)
	if mean < -z*sd || mean > float64(m.LInf)+z*sd {
		t.Errorf("mean difference %.3f outside [0, %d] ± %.3f", mean, m.LInf, z*sd)
	}
}

func noiseSD(p *Plan, m *Metric) float64 {
	r, _ := p.releaseCell(m, nil)
	return r.StdDev
}

func statesOf(ps []Partial, metric, cell string) [][]byte {
	var out [][]byte
	for _, x := range ps {
		if x.Metric == metric && x.Cell == cell {
			out = append(out, x.State)
		}
	}
	return out
}

// TestNeighbouringReleases: the releases of one cell on datasets that differ in one tenant
// (the heavy one) are (ε/L0, 0)-close for Laplace: the metric's ε covers L0 cells, so one cell
// carries ε/L0. δ′ is estimated from histograms; the real aggregation passes, and an
// aggregation whose noise ignores L0 (calibrated as if each tenant touched one cell, while the
// bounding lets it touch L0) fails the same estimator.
func TestNeighbouringReleases(t *testing.T) {
	c := catalogueConfig()
	p := mustPlan(t, c)
	pop := population.New(200, 3, "t")
	m := p.Metrics[0] // feature_adoption, LInf = 1
	cell := population.Features[0] + "|" + registry.StatusContracted
	sa := statesOf(partialsOf(t, p, pop, heavyTenant(100_000)), m.Name, cell)
	sb := statesOf(partialsOf(t, p, pop, nil), m.Name, cell)
	va, vb := rawSum(t, sa), rawSum(t, sb)
	if va-vb != 1 {
		t.Fatalf("the heavy tenant should add exactly 1 to %s, got %d → %d", cell, vb, va)
	}
	claimed := p.params(m).Epsilon / float64(m.L0)

	// Dataset draws: the real release step, and a cell whose noise ignores L0 (scale LInf/ε
	// instead of L0·LInf/ε) over the same bounded values.
	real := func(states [][]byte) func() int64 {
		return func() int64 {
			r, err := p.releaseCell(m, states)
			if err != nil {
				t.Fatal(err)
			}
			return r.Value
		}
	}
	under := p.params(m)
	under.L0 = 1
	underCell := func(v int64) func() int64 {
		return func() int64 {
			c, err := dp.NewCount(under)
			if err != nil {
				t.Fatal(err)
			}
			for range v {
				if err := c.Add(1); err != nil {
					t.Fatal(err)
				}
			}
			r, err := c.Result()
			if err != nil {
				t.Fatal(err)
			}
			return r.Value
		}
	}
	draw := func(f func() int64, n int) []int64 {
		out := make([]int64, n)
		for i := range out {
			out[i] = f()
		}
		return out
	}
	// One binning for both (any binning is post-processing): ±3 standard deviations of the
	// under-noised cell around the two values, tails lumped, so the estimator has few bins and
	// enough power to see the under-noised one.
	sdUnder := math.Sqrt2 * float64(under.LInf) / under.Epsilon
	lo, hi := vb-int64(math.Ceil(3*sdUnder)), va+int64(math.Ceil(3*sdUnder))
	const n = 40_000
	est, slack := dptest.DeltaPrime(draw(real(sa), n), draw(real(sb), n), claimed, lo, hi)
	t.Logf("real: δ′ = %.5f, allowed δ + slack = %.5f (claimed ε = %.4f a cell)", est, slack, claimed)
	if est > slack {
		t.Errorf("real release: δ′ = %.5f > slack %.5f: not ε=%.4f-DP for one cell", est, slack, claimed)
	}
	uest, uslack := dptest.DeltaPrime(draw(underCell(va), n), draw(underCell(vb), n), claimed, lo, hi)
	t.Logf("noise ignoring L0: δ′ = %.5f, allowed δ + slack = %.5f", uest, uslack)
	if uest <= uslack {
		t.Errorf("the estimator did not flag noise that ignores L0 (δ′ = %.5f ≤ %.5f)", uest, uslack)
	}
}

func rawSum(t testing.TB, states [][]byte) int64 {
	var s int64
	for _, st := range states {
		v, err := dp.PartialValue(st)
		if err != nil {
			t.Fatal(err)
		}
		s += v
	}
	return s
}

// TestSingleTenantCellAlmostNeverReleased: a data-derived cell with one tenant passes private
// selection with probability at most δ; in 100,000 selections (probability of even one ≤ 1e-3
// at δ = 1e-8) none may pass, while a cell with 2,000 tenants always does. The whole release
// path is then run on a one-tenant cell, to show it goes through selection.
func TestSingleTenantCellAlmostNeverReleased(t *testing.T) {
	c := config.Default().Aggregator
	c.Epsilon = 1
	p := mustPlan(t, c)
	m := p.Metrics[0]
	sel := p.selection(m)
	kept := 0
	for range 100_000 {
		ok, err := dp.SelectPartition(sel, 1)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			kept++
		}
	}
	if kept > 0 {
		t.Errorf("a one-tenant cell was released %d times in 100,000", kept)
	}
	for range 100 {
		if ok, _ := dp.SelectPartition(sel, 2000); !ok {
			t.Fatal("a cell with 2,000 tenants was suppressed")
		}
	}
	// End to end: one tenant using a feature nobody else uses.
	one := population.New(1, 9, "solo")
	for range 20 {
		rs, oc, err := p.Release(partialsOf(t, p, one, nil))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Metric == m.Name {
				t.Fatalf("a feature cell of a one-tenant window was released: %+v", r)
			}
		}
		if oc.Suppressed == 0 {
			t.Fatal("nothing was suppressed: the data-derived cells did not go through selection")
		}
	}
}

// TestReleaseFields: every released cell states its parameters, a standard deviation matching
// the mechanism and a confidence interval around the value; configured cells are released even
// without data.
func TestReleaseFields(t *testing.T) {
	p := mustPlan(t, catalogueConfig())
	rs, oc, err := p.Release(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, m := range p.Metrics {
		want += len(m.configuredCells())
	}
	if len(rs) != want || oc.Released != want || oc.Suppressed != 0 {
		t.Fatalf("an empty window released %d cells (outcome %+v), want every configured cell (%d)", len(rs), oc, want)
	}
	for _, r := range rs {
		m := p.metric(r.Metric)
		if r.Epsilon != p.params(m).Epsilon || r.L0 != m.L0 || r.LInf != m.LInf || r.Mechanism != "laplace" || r.Delta != 0 {
			t.Fatalf("release %s %s states wrong parameters: %+v", r.Metric, r.Dims(), r.Release)
		}
		lambda := float64(m.L0*m.LInf) / r.Epsilon
		if math.Abs(r.StdDev-math.Sqrt2*lambda)/(math.Sqrt2*lambda) > 0.01 {
			t.Fatalf("stddev %v, want ≈ √2·λ = %v", r.StdDev, math.Sqrt2*lambda)
		}
		if !(r.CI95Low <= r.CI95High) || r.CI95High < float64(r.Value) && r.Value > 0 {
			t.Fatalf("confidence interval [%v, %v] does not hold value %d", r.CI95Low, r.CI95High, r.Value)
		}
	}
}

// TestPlanHashChangesWithParameters: partials and ledger entries of one plan are never mixed
// with another's.
func TestPlanHashChangesWithParameters(t *testing.T) {
	base := mustPlan(t, catalogueConfig()).Hash()
	c := catalogueConfig()
	c.Epsilon = 0.5
	if mustPlan(t, c).Hash() == base {
		t.Error("ε does not change the plan hash")
	}
	c = catalogueConfig()
	c.Features = c.Features[:3]
	if mustPlan(t, c).Hash() == base {
		t.Error("the feature catalogue does not change the plan hash")
	}
	if mustPlan(t, catalogueConfig()).Hash() != base {
		t.Error("the plan hash is not deterministic")
	}
}

// TestWindowOf: windows align to UTC midnight.
func TestWindowOf(t *testing.T) {
	jst := time.FixedZone("JST", 9*3600)
	w := WindowOf(time.Date(2026, 11, 10, 8, 30, 0, 0, jst), 24*time.Hour) // 23:30 UTC on the 9th
	if !w.Start.Equal(time.Date(2026, 11, 9, 0, 0, 0, 0, time.UTC)) || w.End.Sub(w.Start) != 24*time.Hour {
		t.Errorf("daily window %v", w)
	}
	w = WindowOf(time.Date(2026, 11, 10, 8, 30, 0, 0, time.UTC), time.Hour)
	if !w.Start.Equal(time.Date(2026, 11, 10, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("hourly window %v", w)
	}
}
