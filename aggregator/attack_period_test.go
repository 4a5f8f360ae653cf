//go:build faults

package aggregator

// Attack tests for promises 7 and 8 of docs/promises.md ("Weeks and months bound the tenant
// over the whole period"), written from the promises, the README and the public surface alone;
// the brief is ATTACK-PERIOD.md. When an attack fails, the code is fixed, never the attack.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shukei/shukei/anonymizer/dp"
	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/registry"
)

// ---------------------------------------------------------------------------------------------
// Harness.

const (
	apWeekEps  = 8.0  // ε of one metric of a week (high: the noise stays far below the probe groups)
	apMonthEps = 10.0 // ε of one metric of a month
)

func apFeb(d int) time.Time { return time.Date(2026, 2, d, 0, 0, 0, 0, time.UTC) }

// apGroup is a group of probe tenants, each using features nobody else uses.
type apGroup struct {
	name     string
	ids      []string
	features []string
}

func apNewGroup(prefix string, n, features int) apGroup {
	g := apGroup{name: prefix}
	for i := range n {
		g.ids = append(g.ids, fmt.Sprintf("%s-%03d", prefix, i))
	}
	for i := range features {
		g.features = append(g.features, fmt.Sprintf("app.probe.%s%02d", prefix, i))
	}
	return g
}

// apRig is the aggregator rig with base windows off (epsilon 0), weeks and months on, a budget
// that fits every period, events.max_age long enough for a month, and the probe features in
// the public catalogue (so their cells are always released).
func apRig(t *testing.T, tenants int, groups ...apGroup) *aggRig {
	t.Helper()
	r := newAggRig(t, tenants)
	c := &r.cfg.Aggregator
	c.Epsilon, c.WeekEpsilon, c.MonthEpsilon = 0, apWeekEps, apMonthEps
	features := slices.Clone(population.Features)
	for _, g := range groups {
		features = append(features, g.features...)
	}
	c.Features = features
	c.BudgetEpsilon, c.BudgetEpsilonYear = 10000, 100000
	r.cfg.Events.MaxAge = 40 * 24 * time.Hour
	plan, err := NewPlan(*c, 1)
	if err != nil {
		t.Fatalf("harness: plan: %v", err)
	}
	r.plan = plan
	r.budget = ledger.Budget{Epsilon: 10000, Delta: 1}
	ctx := context.Background()
	reg := registry.New(r.conn, r.db, r.master)
	for _, g := range groups {
		for _, id := range g.ids {
			if _, err := reg.Add(ctx, registry.Tenant{ID: id, Status: registry.StatusTrial, Edition: "standard", SizeBand: "s"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

func apL0LInf(t *testing.T, r *aggRig, metric string) (int, int) {
	t.Helper()
	for _, m := range r.plan.Metrics {
		if m.Name == metric {
			return int(m.L0), int(m.LInf)
		}
	}
	t.Fatalf("harness: the plan has no metric %s", metric)
	return 0, 0
}

// apUse is one feature_use event of a probe tenant.
func apUse(tenant, feature string, at time.Time, user int) event.Event {
	return event.Event{Envelope: event.Envelope{
		EventID: atkEventID(), TenantID: tenant, OccurredAt: at,
		Schema: event.SchemaFeatureUseV1, Source: "population", User: fmt.Sprintf("u%05d", user),
		Client: event.Client{OS: event.OSWindows, DeviceKind: event.DeviceDesktop},
	}, Data: &event.FeatureUse{FeatureID: feature, Count: 1}}
}

// apDayUses: every tenant of g uses, on day d, the features pick(tenant index, day) returns.
func apDayUses(g apGroup, d time.Time, pick func(i int) []string) []event.Event {
	var out []event.Event
	for i, id := range g.ids {
		for j, f := range pick(i) {
			out = append(out, apUse(id, f, d.Add(time.Duration(60+i*41+j*613)*time.Second), j%3))
		}
	}
	return out
}

// apCheckAccepted is the harness's check that probe events are accepted by the stages'
// decision as of now.
func apCheckAccepted(t *testing.T, r *aggRig, evs []event.Event, now time.Time, prefixes ...string) {
	t.Helper()
	dctx := &decision.Context{Now: now, Limits: event.Limits{MaxAge: r.cfg.Events.MaxAge}.WithDefaults(), Tenants: r.cache.Snapshot(), Keyring: r.keyring, Policy: r.tagger}
	checked := 0
	for _, ev := range evs {
		probe := false
		for _, p := range prefixes {
			probe = probe || strings.HasPrefix(ev.TenantID, p+"-")
		}
		if !probe {
			continue
		}
		if checked++; checked > 200 {
			return
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, rej := decision.Decide(b, dctx); rej != nil {
			t.Fatalf("harness: a probe event is refused (%+v): %s", rej, b)
		}
	}
}

// apRow is one row of <db>_external_aggregate.releases, with its span.
type apRow struct {
	ReleaseID, Plan string
	Start, End      time.Time
	Metric, Dims    string
	Names, Values   []string
	Value           int64
	StdDev, Epsilon float64
	SelEpsilon      float64
	Selected        uint8
	L0, LInf        int64
	Mechanism       string
}

func (x apRow) dim(name string) string {
	for i, n := range x.Names {
		if n == name && i < len(x.Values) {
			return x.Values[i]
		}
	}
	return ""
}

type apSpan struct{ Start, End time.Time }

func (s apSpan) String() string {
	return s.Start.UTC().Format("2006-01-02") + ".." + s.End.UTC().Format("2006-01-02")
}

func apReleases(t *testing.T, r *aggRig) []apRow {
	t.Helper()
	rows, err := r.conn.Query(context.Background(), "SELECT release_id, plan_hash, window_start, window_end, metric, dims, dim_names, dim_values, value, stddev, epsilon, selection_epsilon, selected, l0, linf, mechanism FROM "+
		r.db+"_external_aggregate.releases ORDER BY window_start, window_end, metric, dims")
	if err != nil {
		t.Fatalf("read releases: %v", err)
	}
	defer rows.Close()
	var out []apRow
	for rows.Next() {
		var x apRow
		if err := rows.Scan(&x.ReleaseID, &x.Plan, &x.Start, &x.End, &x.Metric, &x.Dims, &x.Names, &x.Values, &x.Value, &x.StdDev, &x.Epsilon, &x.SelEpsilon, &x.Selected, &x.L0, &x.LInf, &x.Mechanism); err != nil {
			t.Fatal(err)
		}
		x.Start, x.End = x.Start.UTC(), x.End.UTC()
		out = append(out, x)
	}
	return out
}

func apSpans(rows []apRow) map[apSpan][]apRow {
	out := map[apSpan][]apRow{}
	for _, x := range rows {
		s := apSpan{x.Start, x.End}
		out[s] = append(out[s], x)
	}
	return out
}

type apCharge struct {
	ReleaseID, Period string
	Start, End        time.Time
	Epsilon           float64
	Seq               uint64
}

func apLedger(t *testing.T, r *aggRig) []apCharge {
	t.Helper()
	rows, err := r.conn.Query(context.Background(), "SELECT release_id, period, window_start, window_end, epsilon, seq FROM "+r.db+"_external_aggregate.budget_ledger ORDER BY seq")
	if err != nil {
		t.Fatalf("read ledger: %v", err)
	}
	defer rows.Close()
	var out []apCharge
	for rows.Next() {
		var c apCharge
		if err := rows.Scan(&c.ReleaseID, &c.Period, &c.Start, &c.End, &c.Epsilon, &c.Seq); err != nil {
			t.Fatal(err)
		}
		c.Start, c.End = c.Start.UTC(), c.End.UTC()
		out = append(out, c)
	}
	return out
}

// apMonth and apWeek are the spans the promise's periods must state.
func apMonth(t time.Time) apSpan {
	s := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return apSpan{s, s.AddDate(0, 1, 0)}
}

func apWeek(monday time.Time) apSpan { return apSpan{monday, monday.AddDate(0, 0, 7)} }

// apCells sums the feature_adoption cells of span s whose feature is in features and whose
// status is in statuses; it returns the sum, the noise allowance of that sum (the clamping
// bias of a cell whose truth is 0, b/2 with b = stddev/√2, and half a unit of rounding, per
// cell, plus 6 standard deviations of the sum) and how many cells were found.
func apCells(rows []apRow, s apSpan, features []string, statuses ...string) (sum int64, allowance float64, n int) {
	var variance float64
	for _, x := range rows {
		if x.Metric != "feature_adoption" || !x.Start.Equal(s.Start) || !x.End.Equal(s.End) {
			continue
		}
		if !slices.Contains(features, x.dim("feature")) || !slices.Contains(statuses, x.dim("status")) {
			continue
		}
		sum += x.Value
		allowance += x.StdDev/math.Sqrt2/2 + 0.5
		variance += x.StdDev * x.StdDev
		n++
	}
	return sum, allowance + 6*math.Sqrt(variance), n
}

// apWaitSpans waits until every span in want has release rows.
func apWaitSpans(t *testing.T, r *aggRig, what string, d time.Duration, want ...apSpan) {
	t.Helper()
	eventually(t, what, d, func() bool {
		got := apSpans(apReleases(t, r))
		for _, s := range want {
			if len(got[s]) == 0 {
				return false
			}
		}
		return true
	})
}

// apWaitClosed waits until every partition's progress has closed everything before at.
func apWaitClosed(t *testing.T, r *aggRig, at time.Time, d time.Duration) {
	t.Helper()
	eventually(t, "every partition to close everything before "+at.Format(time.RFC3339), d, func() bool {
		ct := atkClosedThrough(t, r)
		if len(ct) < 3 {
			return false
		}
		for _, c := range ct {
			if c.Before(at) {
				return false
			}
		}
		return true
	})
}

// apCheckPeriods holds the stored releases and ledger to "published once, with one draw of
// noise and one charge of the period's ε, and states its own span": every span in want is
// released; every released span is an ISO week (Monday 00:00 UTC, 7 days) or a calendar
// month; it has one release id and one row per cell; its rows carry the period's ε and, for
// catalogued cells, noise of the period's ε (Laplace stddev √2·L0·LInf/ε); the ledger holds
// exactly one entry per released span (same start and end, the released id), charging the
// period's ε times the number of metrics, and nothing else; the chain verifies.
func apCheckPeriods(t *testing.T, r *aggRig, want []apSpan) []apRow {
	t.Helper()
	rows := apReleases(t, r)
	charges := apLedger(t, r)
	spans := apSpans(rows)
	for _, s := range want {
		if len(spans[s]) == 0 {
			t.Errorf("period %s was never released", s)
		}
	}
	nMetrics := float64(len(r.plan.Metrics))
	periodEps := map[apSpan]float64{}
	var keys []apSpan
	for s := range spans {
		keys = append(keys, s)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Start.Before(keys[j].Start) })
	for _, s := range keys {
		xs := spans[s]
		var eps float64
		switch {
		case s == apMonth(s.Start):
			eps = apMonthEps
		case s.Start.Weekday() == time.Monday && s.Start.Equal(s.Start.Truncate(24*time.Hour)) && s.End.Sub(s.Start) == 7*24*time.Hour:
			eps = apWeekEps
		default:
			t.Errorf("released span %s (%d rows) is neither an ISO week nor a calendar month (base windows are off: epsilon 0)", s, len(xs))
			continue
		}
		periodEps[s] = eps
		ids := map[string]bool{}
		cells := map[string]int{}
		for _, x := range xs {
			ids[x.ReleaseID] = true
			cells[x.Metric+" "+x.Dims]++
		}
		if len(ids) != 1 {
			t.Errorf("period %s is released under %d release ids %v: more than one draw published", s, len(ids), atkKeys(ids))
		}
		dup := 0
		for c, k := range cells {
			if k > 1 {
				if dup++; dup <= 5 {
					t.Errorf("period %s: cell %s has %d rows", s, c, k)
				}
			}
		}
		badEps, badNoise := 0, 0
		for _, x := range xs {
			// The metric's ε is the period's; a data-derived metric spends selection_share of it
			// on selection, so a cell's noise ε is the period's ε or its non-selection share.
			if x.Epsilon+x.SelEpsilon > eps+1e-9 || x.Epsilon < eps*(1-r.plan.SelectionShare)-1e-9 {
				if badEps++; badEps <= 3 {
					t.Errorf("period %s: cell %s %s carries ε=%g (noise) + %g (selection); the period's ε is %g a metric (selection share %g)", s, x.Metric, x.Dims, x.Epsilon, x.SelEpsilon, eps, r.plan.SelectionShare)
				}
			}
			if x.Mechanism == "laplace" && x.L0 > 0 && x.Epsilon > 0 {
				want := math.Sqrt2 * float64(x.L0*x.LInf) / x.Epsilon
				if math.Abs(x.StdDev-want) > 0.02*want {
					if badNoise++; badNoise <= 3 {
						t.Errorf("period %s: cell %s %s has noise stddev %.3f; one Laplace draw at its noise ε=%g with L0=%d, LInf=%d has %.3f", s, x.Metric, x.Dims, x.StdDev, x.Epsilon, x.L0, x.LInf, want)
					}
				}
			}
		}
	}
	per := map[apSpan][]apCharge{}
	for _, c := range charges {
		per[apSpan{c.Start, c.End}] = append(per[apSpan{c.Start, c.End}], c)
	}
	for s, cs := range per {
		if len(spans[s]) == 0 {
			t.Errorf("the ledger charges span %s (%d entries, ε=%g) that has no release rows", s, len(cs), cs[0].Epsilon)
			continue
		}
		if len(cs) != 1 {
			t.Errorf("period %s is charged %d times", s, len(cs))
		}
		for _, c := range cs {
			if eps, ok := periodEps[s]; ok && math.Abs(c.Epsilon-eps*nMetrics) > 1e-9 {
				t.Errorf("period %s is charged ε=%g; the period's ε is %g a metric, %d metrics: %g", s, c.Epsilon, eps, len(r.plan.Metrics), eps*nMetrics)
			}
			if !slices.ContainsFunc(spans[s], func(x apRow) bool { return x.ReleaseID == c.ReleaseID }) {
				t.Errorf("period %s: the ledger charges release %s, which is not the released one", s, c.ReleaseID)
			}
		}
	}
	for s := range spans {
		if len(per[s]) == 0 {
			t.Errorf("period %s is released but never charged (the ledger states no entry with its start and end)", s)
		}
	}
	if err := ledger.New(r.conn, r.db).Verify(context.Background(), Purpose); err != nil {
		t.Errorf("the ledger's hash chain does not verify: %v", err)
	}
	var desc []string
	for _, s := range keys {
		desc = append(desc, fmt.Sprintf("%s (%d rows, %d charges)", s, len(spans[s]), len(per[s])))
	}
	t.Logf("released periods: %s; %d ledger entries", strings.Join(desc, ", "), len(charges))
	return rows
}

// ---------------------------------------------------------------------------------------------
// Promise 7.

// TestAttackPeriodBoundsTenantOnce: a month of daily activity by three groups of probe tenants,
// with the days closed by one aggregator and, after a registry change, the rest of the month
// (and whatever it replays) by another aggregator in a new consumer group. Every week and the
// month must count each tenant in at most L0 cells and at most LInf in each over the whole
// period, be released once with one draw and one charge of the period's ε, and state its span.
//
//   - deep: every day the same L0 features (nobody else's). Per cell, a period holds n·LInf;
//     counted once a day (or once a close) it would hold several times that.
//   - wide: on day d, L0 features out of 3·L0 (block d mod 3). Over any week or the month a
//     wide tenant used 3·L0 features; bounded once over the period, the 3·L0 cells hold n·L0
//     in all; bounded per day and summed, 3·n·L0.
//   - moved: every day the same L0 features, trial until Feb 14, contracted from Feb 15 (the
//     registry changes between the two aggregators). A week or month that spans the change
//     sees each moved tenant in 2·L0 (feature, status) cells; bounded once, their trial and
//     contracted cells hold n·L0 in all; bounded per close, 2·n·L0.
func TestAttackPeriodBoundsTenantOnce(t *testing.T) {
	const n = 40
	probeL0 := 12
	const nWide = 160 // many: a fraction of a cell more a tenant shows above the noise
	deep, wide, moved := apNewGroup("pd", n, probeL0), apNewGroup("pw", nWide, 3*probeL0), apNewGroup("pm", n, probeL0)
	r := apRig(t, 30, deep, wide, moved)
	l0, linf := apL0LInf(t, r, "feature_adoption")
	if l0 != probeL0 || linf != 1 {
		t.Fatalf("harness: feature_adoption has L0=%d LInf=%d; the attack was built for L0=%d, LInf=1", l0, linf, probeL0)
	}
	ctx := context.Background()
	dayEvents := func(d time.Time) []event.Event {
		evs := r.pop.Day(d)
		evs = append(evs, apDayUses(deep, d, func(int) []string { return deep.features })...)
		block := (d.Day() % 3) * l0
		evs = append(evs, apDayUses(wide, d, func(int) []string { return wide.features[block : block+l0] })...)
		evs = append(evs, apDayUses(moved, d, func(int) []string { return moved.features })...)
		return evs
	}
	watch := atkWatchReleases(r)
	defer watch.finish()

	// Phase 1: Feb 2..14 closed by A, every probe tenant trial.
	r.clock.set(apFeb(15).Add(3 * time.Hour))
	var phase1 []event.Event
	for d := 2; d <= 14; d++ {
		phase1 = append(phase1, dayEvents(apFeb(d))...)
	}
	apCheckAccepted(t, r, phase1, r.clock.now(), "pd", "pw", "pm")
	r.produce(t, phase1, 20)
	a := r.aggregator(t)
	stopA := start(t, a)
	apWaitClosed(t, r, apFeb(15), 90*time.Second)
	apWaitSpans(t, r, "A to release the week of Feb 2", 60*time.Second, apWeek(apFeb(2)))
	time.Sleep(time.Second)
	stopA()
	if got := apSpans(apReleases(t, r)); len(got[apMonth(apFeb(1))]) > 0 || len(got[apWeek(apFeb(9))]) > 0 {
		t.Fatalf("harness: the month or the week of Feb 9 was released before they ended (%d spans)", len(got))
	}
	t.Logf("after A: %d tenant rows, aggregate_state:\n%s", apCount(t, r, "SELECT count() FROM "+r.db+"_aggregator.aggregate_state WHERE kind = 'tenant'"), atkStateSummary(t, r))

	// The registry changes: moved tenants become contracted.
	time.Sleep(1100 * time.Millisecond) // the registry keeps the newest row by second
	reg := registry.New(r.conn, r.db, r.master)
	for _, id := range moved.ids {
		if _, err := reg.Update(ctx, id, func(tn *registry.Tenant) error { tn.Status = registry.StatusContracted; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}

	// Phase 2: Feb 15..28 arrive; B, a new consumer group (Kafka delivers the topic from its
	// start again), closes the rest of the month and may close the first days again.
	var phase2 []event.Event
	for d := 15; d <= 28; d++ {
		phase2 = append(phase2, dayEvents(apFeb(d))...)
	}
	r.clock.set(time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC))
	apCheckAccepted(t, r, phase2, r.clock.now(), "pd", "pw", "pm")
	r.produce(t, phase2, 20)
	// B and C, each in a new consumer group (Kafka delivers the topic from its start again),
	// run together: each is the release step of its group, each closes the rest of the month
	// (and whatever it replays), and both reach the weeks and the month at once.
	group := r.cfg.Aggregator.GroupID
	r.cfg.Aggregator.GroupID = group + ".b"
	b := r.aggregator(t)
	r.cfg.Aggregator.GroupID = group + ".c"
	c := r.aggregator(t)
	stopB, stopC := start(t, b), start(t, c)
	month := apMonth(apFeb(1))
	weeks := []apSpan{apWeek(apFeb(2)), apWeek(apFeb(9)), apWeek(apFeb(16)), apWeek(apFeb(23))}
	apWaitSpans(t, r, "B and C to release the four weeks and the month", 120*time.Second, append(slices.Clone(weeks), month)...)
	time.Sleep(3 * time.Second) // more release rounds: nothing may be added
	stopB()
	stopC()
	t.Logf("after B and C: aggregate_state:\n%s", atkStateSummary(t, r))
	closes := map[string]uint64{}
	for d := 2; d <= 28; d++ {
		w := WindowOf(apFeb(d), 24*time.Hour)
		for p, c := range atkPartialCloses(t, r, w) {
			if c > 1 {
				closes[fmt.Sprintf("%s/p%d", atkDay(w.Start), p)] = uint64(c)
			}
		}
	}
	t.Logf("days closed more than once (window/partition → closes): %v", closes)

	// One release, one draw, one charge per period; spans stated.
	var want []apSpan
	for _, s := range append(slices.Clone(weeks), month) {
		want = append(want, s)
	}
	wantW := make([]Window, 0, len(want))
	for _, s := range want {
		wantW = append(wantW, Window{Start: s.Start, End: s.End})
	}
	atkCheckOnce(t, r, watch, wantW)
	rows := apCheckPeriods(t, r, want)

	// The bounded, un-noised truth of each period, as one in-process accumulator over the
	// period's messages makes it (a reference for the log: how far the released figures are
	// from it; the registry is read as of now, so the moved tenants are all contracted there).
	msgs := readTopicTagged(t, r, r.clock.now())
	refPlan, err := r.plan.WithEpsilon(apWeekEps) // the base plan's ε is 0; partials need one
	if err != nil {
		t.Fatal(err)
	}
	truth := map[apSpan]map[string]int64{} // span → group → sum of feature_adoption truths
	for _, s := range want {
		acc := refPlan.NewAcc(Window{Start: s.Start, End: s.End})
		for i := range msgs {
			if at := msgs[i].Event.OccurredAt; !at.Before(s.Start) && at.Before(s.End) {
				acc.Add(&msgs[i], int64(i))
			}
		}
		ps, err := acc.Partials(r.master.Derive("aggregator-sampling"))
		if err != nil {
			t.Fatal(err)
		}
		truth[s] = map[string]int64{}
		for _, p := range ps {
			if p.Metric != "feature_adoption" {
				continue
			}
			v, _ := dp.PartialValue(p.State)
			f, _, _ := strings.Cut(p.Cell, "|")
			for _, g := range []apGroup{deep, wide, moved} {
				if slices.Contains(g.features, f) {
					truth[s][g.name] += v
				}
			}
		}
	}

	// The un-noised partials the release step itself builds from the stored material of each
	// period (the aggregator's partialsOf, as TestWeekAndMonthReleasesOnServices reads it): an
	// exact, noise-free view of what each group contributes.
	stored := map[apSpan]map[string]int64{}
	wideCells := map[apSpan][]int64{}
	for _, s := range want {
		stored[s] = map[string]int64{}
		for _, k := range b.kinds {
			if (k.period == PeriodMonth && s == apMonth(s.Start)) || (k.period == PeriodWeek && s != apMonth(s.Start)) {
				ps, err := b.partialsOf(ctx, k, Window{Start: s.Start, End: s.End})
				if err != nil {
					t.Logf("partials of %s from the stored material: %v", s, err)
					continue
				}
				for _, p := range ps {
					if p.Metric != "feature_adoption" {
						continue
					}
					v, _ := dp.PartialValue(p.State)
					f, _, _ := strings.Cut(p.Cell, "|")
					for _, g := range []apGroup{deep, wide, moved} {
						if slices.Contains(g.features, f) {
							stored[s][g.name] += v
						}
					}
					if slices.Contains(wide.features, f) {
						wideCells[s] = append(wideCells[s], v)
					}
				}
			}
		}
		sort.Slice(wideCells[s], func(i, j int) bool { return wideCells[s][i] > wideCells[s][j] })
		t.Logf("%s: un-noised wide cells (each wide tenant used all %d wide features; bounded to L0 = %d): %v", s, len(wide.features), l0, wideCells[s])
		t.Logf("%s: un-noised feature_adoption from the stored material: deep %d (≤ %d), wide %d (≤ %d), moved %d (≤ %d)",
			s, stored[s][deep.name], l0*n*linf, stored[s][wide.name], l0*nWide*linf, stored[s][moved.name], l0*n*linf)
		for _, g := range []struct {
			name string
			n    int
		}{{deep.name, n}, {wide.name, nWide}, {moved.name, n}} {
			if v := stored[s][g.name]; v > int64(l0*g.n*linf) {
				t.Errorf("%s: the un-noised partials the release step builds from the stored material give the %s tenants %d in feature_adoption, more than n·L0·LInf = %d: a tenant is counted in more than L0 cells (or more than LInf in one) over the period", s, g.name, v, l0*g.n*linf)
			}
		}
	}

	// Bounds, per period.
	both := []string{registry.StatusTrial, registry.StatusContracted}
	for _, s := range want {
		// deep: each of its L0 cells n·LInf; in all L0·n·LInf.
		sum, allow, cells := apCells(rows, s, deep.features, registry.StatusTrial)
		bound := float64(l0 * n * linf)
		t.Logf("%s deep: %d cells, sum %d (bound %g + noise allowance %.0f; in-process bounded truth %d)", s, cells, sum, bound, allow, truth[s][deep.name])
		if cells != l0 {
			t.Errorf("%s: %d deep cells released, want %d (catalogued)", s, cells, l0)
		}
		if float64(sum) > bound+allow {
			t.Errorf("%s: the deep tenants' %d cells sum to %d > n·L0·LInf = %g (+ noise %.0f): each deep tenant (the same L0 features every day) counts more than LInf in its cells over the period — counted per day or per close", s, cells, sum, bound, allow)
		}
		if float64(sum) < bound/2 {
			t.Errorf("%s: the deep tenants' cells sum to %d, far below %g: the probe tenants were not counted (harness or lost data)", s, sum, bound)
		}
		for _, x := range rows {
			if x.Metric == "feature_adoption" && x.Start.Equal(s.Start) && x.End.Equal(s.End) && slices.Contains(deep.features, x.dim("feature")) && x.dim("status") == registry.StatusTrial {
				if float64(x.Value) > 1.5*float64(n*linf)+10*x.StdDev {
					t.Errorf("%s: deep cell %s/trial = %d, far above n·LInf = %d (±%.1f): a tenant counted more than LInf in one cell", s, x.dim("feature"), x.Value, n*linf, x.StdDev)
				}
			}
		}
		// wide: 3·L0 cells, nWide·L0·LInf in all.
		sum, allow, cells = apCells(rows, s, wide.features, registry.StatusTrial)
		bound = float64(l0 * nWide * linf)
		t.Logf("%s wide: %d cells, sum %d (bound %g + noise allowance %.0f; %.2f cells a tenant; in-process bounded truth %d; bounded per day it would be ≈%d)", s, cells, sum, bound, allow, float64(sum)/nWide, truth[s][wide.name], 3*l0*nWide)
		if float64(sum) > bound+allow {
			t.Errorf("%s: the wide tenants (L0 = %d features a day, %d over the period) are in %d cells summing to %d > n·L0·LInf = %g (+ noise %.0f): a tenant is counted in more than L0 cells over the period (bounded per day, not once over the period)", s, l0, 3*l0, cells, sum, bound, allow)
		}
		if float64(sum) < bound/2 {
			t.Errorf("%s: the wide tenants' cells sum to %d, far below %g: not counted (harness or lost data)", s, sum, bound)
		}
		bound = float64(l0 * n * linf)
		// moved: trial and contracted cells, n·L0·LInf in all.
		sum, allow, cells = apCells(rows, s, moved.features, both...)
		trial, _, _ := apCells(rows, s, moved.features, registry.StatusTrial)
		t.Logf("%s moved: %d cells, sum %d (trial %d, contracted %d; bound %g + noise allowance %.0f; in-process truth, all contracted, %d)", s, cells, sum, trial, sum-trial, bound, allow, truth[s][moved.name])
		if float64(sum) > bound+allow {
			t.Errorf("%s: the moved tenants (L0 = %d features, trial then contracted) are counted in trial and contracted cells summing to %d > n·L0·LInf = %g (+ noise %.0f): a tenant is counted in more than L0 cells over the period (bounded per close or per status, not once)", s, l0, sum, bound, allow)
		}
		if float64(sum) < bound/2 {
			t.Errorf("%s: the moved tenants' cells sum to %d, far below %g: not counted (harness or lost data)", s, sum, bound)
		}
	}
}

func apCount(t *testing.T, r *aggRig, q string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := r.conn.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// ---------------------------------------------------------------------------------------------
// Promise 8.

// apLeftovers counts, in every table of every Shukei database of the rig (<db> and <db>_*),
// the rows holding one of ids in any String or Array(String) column (tenant_id above all). It
// returns "db.table.column: rows" for each hit, and the tables it could not read.
func apLeftovers(t *testing.T, r *aggRig, ids []string) (hits, unreadable []string, scanned int) {
	t.Helper()
	ctx := context.Background()
	engines := map[string]string{}
	trows, err := r.conn.Query(ctx, "SELECT database, name, engine FROM system.tables")
	if err != nil {
		t.Fatal(err)
	}
	for trows.Next() {
		var db, name, engine string
		if err := trows.Scan(&db, &name, &engine); err != nil {
			t.Fatal(err)
		}
		if db == r.db || strings.HasPrefix(db, r.db+"_") {
			engines[db+"."+name] = engine
		}
	}
	trows.Close()
	if len(engines) == 0 {
		t.Fatalf("harness: no table found in %s or %s_*", r.db, r.db)
	}
	crows, err := r.conn.Query(ctx, "SELECT database, table, name, type FROM system.columns")
	if err != nil {
		t.Fatal(err)
	}
	type col struct{ db, table, name, typ string }
	var cols []col
	for crows.Next() {
		var c col
		if err := crows.Scan(&c.db, &c.table, &c.name, &c.typ); err != nil {
			t.Fatal(err)
		}
		if _, ok := engines[c.db+"."+c.table]; ok {
			cols = append(cols, c)
		}
	}
	crows.Close()
	var quoted []string
	for _, id := range ids {
		quoted = append(quoted, "'"+id+"'")
	}
	list := strings.Join(quoted, ",")
	tables := map[string]bool{}
	for _, c := range cols {
		if e := engines[c.db+"."+c.table]; e == "View" || e == "Kafka" {
			continue
		}
		var cond string
		switch c.typ {
		case "String", "Nullable(String)", "LowCardinality(String)":
			cond = fmt.Sprintf("`%s` IN (%s)", c.name, list)
		case "Array(String)":
			cond = fmt.Sprintf("hasAny(`%s`, [%s])", c.name, list)
		default:
			continue
		}
		tables[c.db+"."+c.table] = true
		var n uint64
		if err := r.conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM `%s`.`%s` WHERE %s", c.db, c.table, cond)).Scan(&n); err != nil {
			unreadable = append(unreadable, fmt.Sprintf("%s.%s.%s: %v", c.db, c.table, c.name, err))
			continue
		}
		if n > 0 {
			hits = append(hits, fmt.Sprintf("%s.%s.%s: %d rows", c.db, c.table, c.name, n))
		}
	}
	return hits, unreadable, len(tables)
}

// apCLI runs the shukei binary with the rig's settings.
func apCLI(t *testing.T, bin string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestAttackPeriodDeletedTenantLeavesNothing: victims and a control group (each using L0
// features nobody else uses) are active on Mon Feb 2 – Wed Feb 4; those days are closed (the
// period material is stored); the victims are deleted (`shukei tenants delete`, which the
// promise names, and retention: a contract end long past and `shukei retention run`). No table
// of any Shukei database may then hold a row with a victim's id; the week of Feb 2 and the
// month of February, released only afterwards, must be computed without them (their cells
// noise only) while the control group's cells show its tenants. Two ways the aggregator may
// go on: the same instance keeps running across the deletion (in-memory material), or it is
// replaced by one in a new consumer group (Kafka still holds the victims' raw events).
func TestAttackPeriodDeletedTenantLeavesNothing(t *testing.T) {
	bin := atkBuild(t)
	for _, mode := range []string{"running", "restart-new-group"} {
		t.Run(mode, func(t *testing.T) { apDeletion(t, bin, mode) })
	}
}

func apDeletion(t *testing.T, bin, mode string) {
	const n = 40
	gone, kept := apNewGroup("pv", n, 12), apNewGroup("pk", n, 12)
	r := apRig(t, 30, gone, kept)
	l0, linf := apL0LInf(t, r, "feature_adoption")
	if l0 != 12 {
		t.Fatalf("harness: feature_adoption L0 = %d, the attack was built for 12", l0)
	}
	ctx := context.Background()
	env := atkEnv(t, r, fmt.Sprintf("SHUKEI_AGGREGATOR_WEEK_EPSILON=%g", apWeekEps), fmt.Sprintf("SHUKEI_AGGREGATOR_MONTH_EPSILON=%g", apMonthEps),
		"SHUKEI_AGGREGATOR_EPSILON=0", "SHUKEI_AGGREGATOR_FEATURES="+strings.Join(r.cfg.Aggregator.Features, ","))
	// The harness's own check: the table scan finds a registered tenant's rows.
	if hits, unread, _ := apLeftovers(t, r, kept.ids[:1]); len(hits) == 0 {
		t.Fatalf("harness: the table scan finds nothing of a registered tenant (unreadable: %v)", unread)
	}

	r.clock.set(apFeb(5).Add(3 * time.Hour))
	var evs []event.Event
	for d := 2; d <= 4; d++ {
		evs = append(evs, r.pop.Day(apFeb(d))...)
		evs = append(evs, apDayUses(gone, apFeb(d), func(int) []string { return gone.features })...)
		evs = append(evs, apDayUses(kept, apFeb(d), func(int) []string { return kept.features })...)
	}
	apCheckAccepted(t, r, evs, r.clock.now(), "pv", "pk")
	r.produce(t, evs, 0)
	a := r.aggregator(t)
	stopA := start(t, a)
	apWaitClosed(t, r, apFeb(5), 90*time.Second)
	before, _, _ := apLeftovers(t, r, gone.ids)
	t.Logf("before the deletion the victims are in: %v", before)
	if got := apSpans(apReleases(t, r)); len(got[apWeek(apFeb(2))]) > 0 || len(got[apMonth(apFeb(1))]) > 0 {
		t.Fatalf("harness: the week of Feb 2 or the month was released before the deletion")
	}
	if mode == "restart-new-group" {
		stopA()
	}

	// Delete the victims through retention: a contract end long past (more than
	// retention.after_contract_end_days before now), and a retention run. (`shukei tenants
	// delete` is attacked in TestAttackPeriodTenantsDeleteCommand.)
	for _, id := range gone.ids {
		if out, err := apCLI(t, bin, env, "tenants", "set", "--tenant", id, "--contract-end", "2026-02-05"); err != nil {
			t.Fatalf("tenants set --contract-end: %v: %s", err, firstLines(out, 5))
		}
	}
	out, err := apCLI(t, bin, env, "retention", "run")
	if err != nil {
		t.Fatalf("retention run: %v\n%s", err, out)
	}
	t.Logf("retention run: %s", firstLines(out, 8))
	hits, unread, scanned := apLeftovers(t, r, gone.ids)
	for _, u := range unread {
		t.Errorf("table scan: cannot read %s", u)
	}
	t.Logf("after the deletion: %d tables scanned; victims' rows: %v", scanned, hits)
	for _, h := range hits {
		t.Errorf("after the deletion of the victims, a table of a Shukei database still holds rows of them: %s", h)
	}
	if err := r.cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}

	// The rest of February passes; the week of Feb 2 and the month are released now.
	r.clock.set(time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC))
	if mode == "restart-new-group" {
		r.cfg.Aggregator.GroupID += ".after"
		b := r.aggregator(t)
		defer start(t, b)()
	}
	week, month := apWeek(apFeb(2)), apMonth(apFeb(1))
	apWaitSpans(t, r, "the week of Feb 2 and the month to be released after the deletion", 120*time.Second, week, month)
	time.Sleep(2 * time.Second)
	stopA()
	rows := apCheckPeriods(t, r, []apSpan{week, month})
	for _, s := range []apSpan{week, month} {
		g, gAllow, gCells := apCells(rows, s, gone.features, registry.StatusTrial, registry.StatusContracted, registry.StatusTerminated)
		k, kAllow, _ := apCells(rows, s, kept.features, registry.StatusTrial)
		full := float64(l0 * n * linf)
		t.Logf("%s: deleted tenants' %d cells sum to %d (noise allowance %.0f; with them ≈%g); control cells %d (≈%g)", s, gCells, g, gAllow, full, k, full)
		if float64(g) > gAllow {
			t.Errorf("%s, released after the deletion: the cells only the deleted tenants used sum to %d, above the noise allowance %.0f (with them ≈%g): the period is computed with the deleted tenants", s, g, gAllow, full)
		}
		if float64(k) < full-kAllow {
			t.Errorf("%s: the control tenants' cells sum to %d, below %g − %.0f: the probe tenants are not counted, so the check cannot see the victims (harness or lost data)", s, k, full, kAllow)
		}
	}
	// Nothing of the victims came back.
	hits, _, _ = apLeftovers(t, r, gone.ids)
	for _, h := range hits {
		t.Errorf("after the period releases, a table again holds rows of the deleted tenants: %s", h)
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}

// TestAttackPeriodTenantsDeleteCommand: the promise names `shukei tenants delete` as a way to
// delete a tenant. It is run on a registered tenant with rows in several tables (registry,
// pseudonymisation root, and the aggregator's stored period material after a close); it must
// succeed and leave no row of the tenant in any table.
func TestAttackPeriodTenantsDeleteCommand(t *testing.T) {
	bin := atkBuild(t)
	victim := apNewGroup("px", 1, 12)
	r := apRig(t, 5, victim)
	env := atkEnv(t, r)
	id := victim.ids[0]
	if hits, _, _ := apLeftovers(t, r, victim.ids); len(hits) == 0 {
		t.Fatal("harness: the registered tenant has no rows to delete")
	}
	var tried []string
	deleted := false
	for _, args := range [][]string{
		{"tenants", "delete", "--tenant", id},
		{"tenants", "delete", id},
	} {
		out, err := apCLI(t, bin, env, args...)
		tried = append(tried, fmt.Sprintf("`shukei %s` → exit %v: %s", strings.Join(args, " "), err, firstLines(out, 2)))
		if err == nil {
			deleted = true
			t.Logf("`shukei %s` exited 0: %s", strings.Join(args, " "), firstLines(out, 3))
			break
		}
	}
	if !deleted {
		help, _ := apCLI(t, bin, env, "tenants", "--help")
		t.Fatalf("promise 8 names `shukei tenants delete`, but no form of it deletes a tenant:\n  %s\n`shukei tenants --help` lists: %s",
			strings.Join(tried, "\n  "), firstLines(help[strings.Index(help, "Available Commands:"):], 9))
	}
	hits, unread, _ := apLeftovers(t, r, victim.ids)
	for _, u := range unread {
		t.Errorf("table scan: cannot read %s", u)
	}
	for _, h := range hits {
		t.Errorf("after `shukei tenants delete` exited 0, a table still holds rows of the tenant: %s (tried: %s)", h, strings.Join(tried, "; "))
	}
}

// TestAttackPeriodDeletedTenantStaysDeleted: the deleted tenants' raw events are still in the
// raw topic (Kafka cannot delete one tenant's records). A processor that had not yet read them
// when the tenants were deleted (stopped, lagging, or a new deployment) reads them afterwards.
// "Once deleted, no table of any Shukei database holds a row of it" must still hold then.
func TestAttackPeriodDeletedTenantStaysDeleted(t *testing.T) {
	bin := atkBuild(t)
	const n = 10
	gone, kept := apNewGroup("pv", n, 12), apNewGroup("pk", n, 12)
	r := apRig(t, 10, gone, kept)
	dlq := servicetest.Topic(t, r.cfg.Kafka.Brokers, 1)
	env := atkEnv(t, r)
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -1)
	var evs []event.Event
	evs = append(evs, apDayUses(gone, day, func(int) []string { return gone.features[:3] })...)
	evs = append(evs, apDayUses(kept, day, func(int) []string { return kept.features[:3] })...)
	r.produce(t, evs, 0)

	// Delete the victims (retention: a contract end long past).
	for _, id := range gone.ids {
		if out, err := apCLI(t, bin, env, "tenants", "set", "--tenant", id, "--contract-end", "2026-01-05"); err != nil {
			t.Fatalf("tenants set --contract-end: %v: %s", err, firstLines(out, 5))
		}
	}
	out, err := apCLI(t, bin, env, "retention", "run")
	if err != nil {
		t.Fatalf("retention run: %v\n%s", err, out)
	}
	if hits, _, _ := apLeftovers(t, r, gone.ids); len(hits) > 0 {
		t.Fatalf("right after the deletion the victims still have rows: %v", hits)
	}
	baseline, _, _ := apLeftovers(t, r, kept.ids)

	// A processor that had not read the raw topic yet starts.
	addr := atkFreeAddr(t)
	cmd := exec.Command(bin, "processor")
	cmd.Env = append(slices.Clone(env), "SHUKEI_KAFKA_DLQ_TOPIC="+dlq, "SHUKEI_PROCESSOR_GROUP_ID="+servicetest.Name(t, "proc."), "SHUKEI_PROCESSOR_LISTEN="+addr)
	var po servicetest.Output
	cmd.Stdout, cmd.Stderr = &po, &po
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("processor output (tail):\n%s", po.Tail(30))
		}
	}()
	// Wait until the processor stored the control tenants' events (their rows grow and settle).
	count := func(h []string) int {
		total := 0
		for _, x := range h {
			var k int
			if i := strings.LastIndex(x, ": "); i >= 0 {
				fmt.Sscanf(x[i+2:], "%d", &k)
			}
			total += k
		}
		return total
	}
	base := count(baseline)
	last, stable := -1, 0
	deadline := time.Now().Add(60 * time.Second)
	for stable < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("harness: the processor did not store the control tenants' events within 60s (rows %d → %d)\n%s", base, last, po.Tail(20))
		}
		time.Sleep(time.Second)
		h, _, _ := apLeftovers(t, r, kept.ids)
		c := count(h)
		if c > base && c == last {
			stable++
		} else {
			stable = 0
		}
		last = c
	}
	keptNow, _, _ := apLeftovers(t, r, kept.ids)
	t.Logf("the processor stored the control tenants: %v", keptNow)
	hits, unread, scanned := apLeftovers(t, r, gone.ids)
	for _, u := range unread {
		t.Errorf("table scan: cannot read %s", u)
	}
	t.Logf("%d tables scanned after the processor caught up; deleted tenants' rows: %v", scanned, hits)
	for _, h := range hits {
		t.Errorf("the tenants were deleted before the processor read their raw events; afterwards a table of a Shukei database holds rows of them again: %s", h)
	}
	if len(hits) > 0 {
		var quoted []string
		for _, id := range gone.ids {
			quoted = append(quoted, "'"+id+"'")
		}
		rows, err := r.conn.Query(context.Background(), "SELECT reason, toString(class), count(), any(event_id), any(length(payload)) FROM "+r.db+".rejections WHERE tenant_id IN ("+strings.Join(quoted, ",")+") GROUP BY reason, class")
		if err == nil {
			for rows.Next() {
				var reason, class, eid string
				var c, plen uint64
				if rows.Scan(&reason, &class, &c, &eid, &plen) == nil {
					t.Logf("rejections of the deleted tenants: reason %q class %s: %d rows (e.g. event %s, payload %d bytes)", reason, class, c, eid, plen)
				}
			}
			rows.Close()
		}
	}
}
