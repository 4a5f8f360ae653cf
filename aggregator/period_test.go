package aggregator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shukei/shukei/anonymizer/dp"
	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/dptest"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

func TestPeriodOf(t *testing.T) {
	at := func(s string) time.Time {
		x, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	for _, c := range []struct {
		p          Period
		t          string
		start, end string
	}{
		{PeriodWeek, "2026-02-01T23:59:59Z", "2026-01-26T00:00:00Z", "2026-02-02T00:00:00Z"}, // a Sunday
		{PeriodWeek, "2026-02-02T00:00:00Z", "2026-02-02T00:00:00Z", "2026-02-09T00:00:00Z"}, // a Monday
		{PeriodWeek, "2026-12-31T12:00:00Z", "2026-12-28T00:00:00Z", "2027-01-04T00:00:00Z"},
		{PeriodMonth, "2026-02-28T23:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"},
		{PeriodMonth, "2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{PeriodWindow, "2026-12-01T05:30:00Z", "2026-12-01T05:00:00Z", "2026-12-01T06:00:00Z"},
	} {
		w := c.p.Of(at(c.t), time.Hour)
		if !w.Start.Equal(at(c.start)) || !w.End.Equal(at(c.end)) {
			t.Errorf("%s of %s = %v, want %s/%s", c.p, c.t, w, c.start, c.end)
		}
	}
}

// monthEvents is a synthetic month's events (some days only) tagged as the aggregator tags
// them.
func monthEvents(t *testing.T, pop *population.Population, days []time.Time) []decision.Tagged {
	t.Helper()
	tenants := map[string]*population.Tenant{}
	for i := range pop.Tenants {
		tenants[pop.Tenants[i].ID] = &pop.Tenants[i]
	}
	var out []decision.Tagged
	for _, d := range days {
		for _, ev := range pop.Day(d) {
			tg := decision.Tagged{Event: ev, Tenant: &tenants[ev.TenantID].Tenant, Purposes: uint16(policy.AllPurposes)}
			if ev.User != "" {
				tg.Pseudonym = fakePseudonym(ev.TenantID, ev.User)
			}
			out = append(out, tg)
		}
	}
	return out
}

// A month released from its days' stored tenant rows has exactly the partials of one window
// the length of the month: each tenant bounded once over the month, users counted once however
// many days they were active — not the sum of the days.
func TestPeriodFromTenantRowsEqualsOneLongWindow(t *testing.T) {
	c := config.Default().Aggregator
	c.Features, c.Settings, c.Epsilon = population.Features, population.Settings, 1
	plan, err := NewPlan(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	pop := population.New(80, 5, "p-")
	month := PeriodMonth.Of(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), 24*time.Hour)
	var days []time.Time
	for d := month.Start; d.Before(month.End); d = d.AddDate(0, 0, 3) {
		days = append(days, d)
	}
	evs := monthEvents(t, pop, days)
	key := []byte("sampling")

	whole := plan.NewAcc(month)
	daily := map[int64]*Acc{}
	for i := range evs {
		whole.Add(&evs[i], int64(i))
		w := WindowOf(evs[i].Event.OccurredAt, 24*time.Hour)
		if daily[w.Start.Unix()] == nil {
			daily[w.Start.Unix()] = plan.NewAcc(w)
		}
		daily[w.Start.Unix()].Add(&evs[i], int64(i))
	}
	merged := plan.NewAcc(month)
	var sumOfDays int64
	for _, a := range daily {
		if err := merged.AddRows(a.TenantRows()); err != nil {
			t.Fatal(err)
		}
		ps, err := a.Partials(key)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.Metric == "feature_adoption" {
				v, _ := dp.PartialValue(p.State)
				sumOfDays += v
			}
		}
	}
	want, err := whole.Partials(key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := merged.Partials(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("merged month has %d partials, one long window %d", len(got), len(want))
	}
	var monthAdoption int64
	for i := range want {
		gv, _ := dp.PartialValue(got[i].State)
		wv, _ := dp.PartialValue(want[i].State)
		if got[i].Metric != want[i].Metric || got[i].Cell != want[i].Cell || got[i].Tenants != want[i].Tenants || gv != wv {
			t.Fatalf("partial %d: merged %s/%s tenants=%d value=%d, one window %s/%s tenants=%d value=%d",
				i, got[i].Metric, got[i].Cell, got[i].Tenants, gv, want[i].Metric, want[i].Cell, want[i].Tenants, wv)
		}
		if got[i].Metric == "feature_adoption" {
			monthAdoption += gv
		}
	}
	// A tenant counts once a month per feature, not once a day.
	if monthAdoption > int64(len(pop.Tenants))*12 || sumOfDays < 3*monthAdoption {
		t.Errorf("feature_adoption: month %d, sum of days %d: the month must bound each tenant once (≤ %d)", monthAdoption, sumOfDays, len(pop.Tenants)*12)
	}
}

// The capped union of capped user sets is the capped union: AddRows never counts a user twice
// and never more than LInf.
func TestAddRowsCapsUsersAtLInf(t *testing.T) {
	c := config.Default().Aggregator
	c.Epsilon = 1
	plan, err := NewPlan(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	acc := plan.NewAcc(Window{})
	rows := []TenantRow{
		{Tenant: "a", Metric: "client_users", Cell: "windows|desktop", Users: []uint64{1, 2, 3}},
		{Tenant: "a", Metric: "client_users", Cell: "windows|desktop", Users: []uint64{2, 3, 4}},
		{Tenant: "b", Metric: "feature_active_users", Cell: "f1|standard", Users: []uint64{1, 2, 3, 4, 5, 6, 7, 8}},
		{Tenant: "b", Metric: "feature_active_users", Cell: "f1|standard", Users: []uint64{9, 10, 11, 12}},
		{Tenant: "b", Metric: "app_access", Cell: "open|trial", Events: 4},
		{Tenant: "b", Metric: "app_access", Cell: "open|trial", Events: 5},
	}
	if err := acc.AddRows(rows); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, r := range acc.TenantRows() {
		got[r.Tenant+"/"+r.Metric] = len(r.Users) + int(r.Events)
	}
	if got["a/client_users"] != 4 || got["b/feature_active_users"] != 10 || got["b/app_access"] != 9 {
		t.Errorf("merged rows: %v, want a/client_users 4 (union), b/feature_active_users 10 (LInf), b/app_access 9 (sum)", got)
	}
	if err := acc.AddRows([]TenantRow{{Tenant: "a", Metric: "nope", Cell: "x"}}); err == nil {
		t.Error("a row of a metric the plan lacks was merged")
	}
	if err := acc.AddRows([]TenantRow{{Tenant: "a", Metric: "app_access", Cell: "open"}}); err == nil {
		t.Error("a row with the wrong number of dimensions was merged")
	}
}

// TestNonNegativeBias measures the post-processing against its stated bias: for Laplace
// noise of scale b and truth t, E[max(0, t+N)] − t = (b/2)·e^(−t/b); the clamped interval covers
// the truth exactly as often as the unclamped one.
func TestNonNegativeBias(t *testing.T) {
	if raceDetector {
		t.Skip("statistical, one goroutine: make test runs it without -race")
	}
	const n = 40000
	p := dp.Params{Epsilon: 1, L0: 4, LInf: 1, Mechanism: dp.Laplace}
	b := float64(p.L0*p.LInf) / p.Epsilon
	for _, truth := range []int64{0, 2, 4, 12, 40} {
		var sum, sq float64
		var covered, coveredRaw int
		for range n {
			cell, err := dp.NewCount(p)
			if err != nil {
				t.Fatal(err)
			}
			for range truth {
				if err := cell.Add(1); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := cell.Result()
			if err != nil {
				t.Fatal(err)
			}
			r := nonNegative(raw)
			if r.Value < 0 || r.CI95Low < 0 || r.CI95High < r.CI95Low {
				t.Fatalf("post-processed release %+v is negative or inverted", r)
			}
			x := float64(r.Value)
			sum += x
			sq += x * x
			if float64(truth) >= r.CI95Low && float64(truth) <= r.CI95High {
				covered++
			}
			if float64(truth) >= raw.CI95Low && float64(truth) <= raw.CI95High {
				coveredRaw++
			}
		}
		mean := sum / n
		se := math.Sqrt((sq/n - mean*mean) / n)
		// The integer noise is a rounded Laplace; its clamped mean differs from the continuous
		// formula by less than 0.5 (the rounding).
		stated := float64(truth) + b/2*math.Exp(-float64(truth)/b)
		if d := math.Abs(mean - stated); d > 5*se+0.5 {
			t.Errorf("truth %d: mean of the clamped value %.3f, stated %.3f (±%.3f)", truth, mean, stated, 5*se+0.5)
		}
		if covered != coveredRaw {
			t.Errorf("truth %d: clamped intervals cover %d times, unclamped %d", truth, covered, coveredRaw)
		}
	}
}

// TestWeekAndMonthReleasesOnServices runs weeks and months on the real broker and server,
// with base windows accumulated but not released: events of some days of February 2026 arrive
// as the clock moves through the month; once every partition has closed the month, each ISO
// week from the first data and the month are released once, charged once each; the month's
// partials, read back from the stored tenant rows, equal one in-process window over the whole
// month; no released value is negative.
func TestWeekAndMonthReleasesOnServices(t *testing.T) {
	r := newAggRig(t, 40)
	r.cfg.Aggregator.Epsilon, r.cfg.Aggregator.WeekEpsilon, r.cfg.Aggregator.MonthEpsilon = 0, 0.5, 1
	r.budget = ledger.Budget{Epsilon: 100, Delta: 1e-3}
	ctx := context.Background()
	feb := func(d int) time.Time { return time.Date(2026, 2, d, 0, 0, 0, 0, time.UTC) }
	a := r.aggregator(t)
	start(t, a)
	added := 0
	for _, d := range []int{2, 3, 10, 24, 27} {
		r.clock.set(feb(d).Add(25 * time.Hour))
		time.Sleep(1500 * time.Millisecond) // the aggregator's decision clock is refreshed every second
		evs := r.pop.Day(feb(d))
		r.produce(t, evs, 0)
		added += len(evs)
		eventually(t, "the day's events to be added", time.Minute, func() bool {
			return testutil.ToFloat64(a.m.events.WithLabelValues("added")) == float64(added)
		})
	}
	r.clock.set(time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC))
	month := PeriodMonth.Of(feb(1), 24*time.Hour)
	weeks := []Window{PeriodWeek.Of(feb(2), 0), PeriodWeek.Of(feb(9), 0), PeriodWeek.Of(feb(16), 0), PeriodWeek.Of(feb(23), 0)}
	spans := func() map[spanKey]int {
		all, err := Releases(ctx, r.conn, r.db, "")
		if err != nil {
			t.Fatal(err)
		}
		out := map[spanKey]int{}
		for _, x := range all {
			out[Window{Start: x.WindowStart, End: x.WindowEnd}.key()]++
			if x.Value < 0 || x.CI95Low < 0 {
				t.Fatalf("a released cell is negative: %+v", x)
			}
		}
		return out
	}
	eventually(t, "four weeks and the month to be released", 2*time.Minute, func() bool {
		s := spans()
		for _, w := range append(weeks, month) {
			if s[w.key()] == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // more release rounds: nothing may be added
	s := spans()
	if len(s) != 5 {
		t.Errorf("released spans: %v, want the four weeks and the month only (no base window: epsilon 0)", s)
	}
	if n := r.ledgerEntries(t); n != 5 {
		t.Errorf("ledger has %d entries, want 5", n)
	}
	var monthEps float64
	if err := r.conn.QueryRow(ctx, "SELECT sum(epsilon) FROM "+r.db+"_external_aggregate.budget_ledger WHERE window_start = ? AND window_end = ?", month.Start, month.End).Scan(&monthEps); err != nil {
		t.Fatal(err)
	}
	if math.Abs(monthEps-5*1) > 1e-9 {
		t.Errorf("the month was charged ε=%v, want 5 (five metrics at ε=1)", monthEps)
	}

	// Tenant rows are kept until every week and month containing their window was released
	// aggregator.state_retention ago, then deleted.
	tenantRows := func() uint64 {
		var n uint64
		if err := r.conn.QueryRow(ctx, "SELECT count() FROM "+r.db+"_aggregator.aggregate_state WHERE kind = 'tenant'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := tenantRows()
	released := r.clock.now()
	if ex, err := ExpireState(ctx, r.conn, r.conn, r.db, released.Add(time.Hour), 2*time.Hour, PeriodsOf(r.cfg.Aggregator)); err != nil || ex.Tenants != 0 {
		t.Fatalf("tenant rows expired before state_retention passed: %+v %v", ex, err)
	}
	if ex, err := ExpireState(ctx, r.conn, r.conn, r.db, released.Add(time.Hour), 2*time.Hour, []Period{PeriodWeek, PeriodMonth, PeriodWindow}); err != nil || ex.Tenants != 0 {
		t.Fatalf("tenant rows expired although their base windows were never released: %+v %v", ex, err)
	}
	// The month's partials from the stored tenant rows equal one window over the month.
	var monthKind releaseKind
	for _, k := range a.kinds {
		if k.period == PeriodMonth {
			monthKind = k
		}
	}
	got, err := a.partialsOf(ctx, monthKind, month)
	if err != nil {
		t.Fatal(err)
	}
	msgs := readTopicTagged(t, r, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	whole := r.plan.NewAcc(month)
	for i := range msgs {
		whole.Add(&msgs[i], int64(i))
	}
	want, err := whole.Partials(r.master.Derive("aggregator-sampling"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("the month has %d partials from tenant rows, %d from one window", len(got), len(want))
	}
	for i := range want {
		gv, _ := dp.PartialValue(got[i].State)
		wv, _ := dp.PartialValue(want[i].State)
		if got[i].Metric != want[i].Metric || got[i].Cell != want[i].Cell || got[i].Tenants != want[i].Tenants || gv != wv {
			t.Fatalf("month partial %d: stored %s/%s %d/%d, one window %s/%s %d/%d", i, got[i].Metric, got[i].Cell, got[i].Tenants, gv, want[i].Metric, want[i].Cell, want[i].Tenants, wv)
		}
	}
	ex, err := ExpireState(ctx, r.conn, r.conn, r.db, released.Add(3*time.Hour), 2*time.Hour, PeriodsOf(r.cfg.Aggregator))
	if err != nil || ex.Tenants != before || before == 0 || tenantRows() != 0 {
		t.Fatalf("after every week and month was released: expired %+v (%v), want all %d tenant rows; %d left", ex, err, before, tenantRows())
	}
}

// readTopicTagged decides every message of the raw topic as of now.
func readTopicTagged(t *testing.T, r *aggRig, now time.Time) []decision.Tagged {
	t.Helper()
	dctx := &decision.Context{Now: now, Limits: event.Limits{MaxAge: 40 * 24 * time.Hour}.WithDefaults(), Tenants: r.cache.Snapshot(), Keyring: r.keyring, Policy: r.tagger}
	var out []decision.Tagged
	for _, m := range servicetest.ReadTopic(t, r.cfg.Kafka.Brokers, r.cfg.Kafka.RawTopic) {
		tg, rej := decision.Decide(m.Value, dctx)
		if rej != nil {
			t.Fatalf("reference decision rejected a message: %+v", rej)
		}
		out = append(out, tg)
	}
	return out
}

// TestNeighbouringMonthReleases is the δ′ test of a month's release through the real period
// path (days accumulated apart, tenant rows merged, the tenant bounded once over the month,
// released with the period plan's noise): on datasets that differ by one tenant active with far
// more than any bound on each of ten days, a cell moves by exactly LInf = 1 before noise, and
// its releases are (ε/L0)-close. Releasing the month as the sum of its days' partials instead
// moves the cell by ten, and the same estimator flags it.
func TestNeighbouringMonthReleases(t *testing.T) {
	if raceDetector {
		t.Skip("statistical, one goroutine: make test runs it without -race")
	}
	p := mustPlan(t, catalogueConfig())
	pop := population.New(200, 3, "t")
	tenants := map[string]*registry.Tenant{}
	for i := range pop.Tenants {
		tenants[pop.Tenants[i].ID] = &pop.Tenants[i].Tenant
	}
	first := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	month := PeriodMonth.Of(first, 24*time.Hour)
	m := p.Metrics[0] // feature_adoption, LInf = 1
	cell := population.Features[0] + "|" + registry.StatusContracted
	key := []byte("test-key")
	run := func(heavy bool) (monthStates, dayStates [][]byte) {
		merged := p.NewAcc(month)
		for d := range 10 {
			w := WindowOf(first.AddDate(0, 0, d), 24*time.Hour)
			acc := p.NewAcc(w)
			var off int64
			add := func(tg *decision.Tagged) { acc.Add(tg, off); off++ }
			for _, ev := range pop.Day(w.Start) {
				tg := decision.Tagged{Event: ev, Tenant: tenants[ev.TenantID], Purposes: uint16(policy.AllPurposes), Pseudonym: fakePseudonym(ev.TenantID, ev.User)}
				add(&tg)
			}
			if heavy {
				heavyTenant(20_000)(add)
			}
			if err := merged.AddRows(acc.TenantRows()); err != nil {
				t.Fatal(err)
			}
			ps, err := acc.Partials(key)
			if err != nil {
				t.Fatal(err)
			}
			dayStates = append(dayStates, statesOf(ps, m.Name, cell)...)
		}
		ps, err := merged.Partials(key)
		if err != nil {
			t.Fatal(err)
		}
		return statesOf(ps, m.Name, cell), dayStates
	}
	ma, da := run(true)
	mb, db := run(false)
	if d := rawSum(t, ma) - rawSum(t, mb); d != 1 {
		t.Fatalf("the heavy tenant moves the month's %s by %d before noise, want 1 (LInf, once a month)", cell, d)
	}
	if d := rawSum(t, da) - rawSum(t, db); d != 10 {
		t.Fatalf("summing the days, the heavy tenant moves %s by %d, want 10 (once a day)", cell, d)
	}
	const n = 100_000
	est, slack, claimed := cellDeltaPrime(t, p, m, ma, mb, rawSum(t, mb), n)
	t.Logf("month: δ′ = %.5f, allowed %.5f (ε = %.4f a cell)", est, slack, claimed)
	if est > slack {
		t.Errorf("the month's release: δ′ = %.5f > %.5f: not ε=%.4f-DP for one cell", est, slack, claimed)
	}
	nest, nslack, _ := cellDeltaPrime(t, p, m, da, db, rawSum(t, db), n)
	t.Logf("sum of the days: δ′ = %.5f, allowed %.5f", nest, nslack)
	if nest <= nslack {
		t.Errorf("the estimator did not flag the sum of the days (δ′ = %.5f ≤ %.5f)", nest, nslack)
	}
}

// TestDoubleCloseNeighbours: a partition closes one window twice with a registry change in
// between (the heavy tenant X trial at the first close, contracted at the second), the second
// close racing past the store's check, on datasets with and without X. The release step reads
// one close only: X moves feature_adoption in at most L0 cells by at most LInf (merging both
// closes would move 2·L0), and the released values of X's cell pass the δ′ test at ε/L0.
func TestDoubleCloseNeighbours(t *testing.T) {
	if raceDetector {
		t.Skip("statistical, one goroutine: make test runs it without -race")
	}
	ctx := context.Background()
	w := WindowOf(day, 24*time.Hour)
	cfg := catalogueConfig()
	p := mustPlan(t, cfg)
	m := p.Metrics[0] // feature_adoption, LInf = 1
	key := []byte("test-key")
	pop := population.New(150, 3, "t")
	tenants := map[string]*registry.Tenant{}
	for i := range pop.Tenants {
		tenants[pop.Tenants[i].ID] = &pop.Tenants[i].Tenant
	}
	closeOf := func(heavyStatus string) []Partial {
		acc := p.NewAcc(w)
		var off int64
		add := func(tg *decision.Tagged) { acc.Add(tg, off); off++ }
		for _, ev := range pop.Day(day) {
			tg := decision.Tagged{Event: ev, Tenant: tenants[ev.TenantID], Purposes: uint16(policy.AllPurposes), Pseudonym: fakePseudonym(ev.TenantID, ev.User)}
			add(&tg)
		}
		if heavyStatus != "" {
			heavyTenant(20_000)(func(tg *decision.Tagged) {
				x := *tg.Tenant
				x.Status = heavyStatus
				tg.Tenant = &x
				add(tg)
			})
		}
		ps, err := acc.Partials(key)
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}
	released := func(withX bool) []Partial {
		r := newAggRig(t, 1)
		r.cfg.Aggregator = cfg
		r.plan = p
		r.budget = ledger.Budget{Epsilon: 100, Delta: 1e-3}
		a := r.aggregator(t)
		first, second := closeOf(""), closeOf("")
		if withX {
			first, second = closeOf(registry.StatusTrial), closeOf(registry.StatusContracted)
		}
		pr := progress{closed: w.End, resume: 10, high: 10}
		if err := a.store.writeClose(ctx, 0, []closedWindow{{w: w, partials: first}}, pr, time.Now()); err != nil {
			t.Fatal(err)
		}
		insertRacingClose(t, r, a, w, second)
		got, err := a.store.partials(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	with, without := released(true), released(false)
	moved := map[string]int64{}
	for _, q := range with {
		if q.Metric == m.Name {
			v, _ := dp.PartialValue(q.State)
			moved[q.Cell] += v
		}
	}
	for _, q := range without {
		if q.Metric == m.Name {
			v, _ := dp.PartialValue(q.State)
			moved[q.Cell] -= v
		}
	}
	var cells, total int64
	for _, d := range moved {
		if d < 0 || d > m.LInf {
			t.Errorf("X moves a cell by %d, want 0..%d", d, m.LInf)
		}
		if d > 0 {
			cells++
			total += d
		}
	}
	if cells == 0 || cells > m.L0 {
		t.Fatalf("X moves %d cells (total %d) after two closes, want 1..L0=%d (merging both closes would move up to %d)", cells, total, m.L0, 2*m.L0)
	}
	cell := population.Features[0] + "|" + registry.StatusTrial
	sa, sb := statesOf(with, m.Name, cell), statesOf(without, m.Name, cell)
	if d := rawSum(t, sa) - rawSum(t, sb); d != 1 {
		t.Fatalf("X moves %s by %d, want 1 (the first close: X was a trial tenant)", cell, d)
	}
	est, slack, claimed := cellDeltaPrime(t, p, m, sa, sb, rawSum(t, sb), 100_000)
	t.Logf("double close: X in %d cells; δ′ = %.5f, allowed %.5f (ε = %.4f a cell)", cells, est, slack, claimed)
	if est > slack {
		t.Errorf("after a double close: δ′ = %.5f > %.5f: not ε=%.4f-DP for one cell", est, slack, claimed)
	}
}

// cellDeltaPrime draws n releases of m's cell from each of two neighbouring states and
// returns dptest.DeltaPrime at ε/L0 a cell over bins of 8 (any binning is post-processing)
// from two noise standard deviations below low (the smaller raw value) on: few bins, so the estimator has power.
func cellDeltaPrime(t *testing.T, p *Plan, m *Metric, a, b [][]byte, low int64, n int) (est, slack, claimed float64) {
	t.Helper()
	claimed = p.params(m).Epsilon / float64(m.L0)
	sd := noiseSD(p, m)
	const width = 8
	// The draws are independent; they are spread over every CPU, each worker drawing a stride.
	draw := func(states [][]byte, lo int64) []int64 {
		out := make([]int64, n)
		workers := runtime.GOMAXPROCS(0)
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					r, err := p.releaseCell(m, states)
					if err != nil {
						errs[w] = err
						return
					}
					out[i] = -1
					if r.Value >= lo {
						out[i] = (r.Value - lo) / width
					}
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		return out
	}
	lo := low - int64(2*sd)
	est, slack = dptest.DeltaPrime(draw(a, lo), draw(b, lo), claimed, 0, int64(4*sd+10)/width)
	return est, slack, claimed
}

// One tenant cannot grow a window without bound: past aggregator.max_tenant_cells distinct
// cells of a metric, its events for new cells are counted and not added; its existing cells
// and other tenants are not affected.
func TestAccCapsCellsPerTenant(t *testing.T) {
	c := config.Default().Aggregator
	c.Epsilon, c.MaxTenantCells = 1, 64
	plan, err := NewPlan(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	w := Window{Start: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)}
	acc := plan.NewAcc(w)
	add := func(tenant, feature string) {
		ev := event.Event{Envelope: event.Envelope{
			EventID: fmt.Sprintf("00000000-0000-4000-8000-%012d", acc.Events()+1), TenantID: tenant, OccurredAt: w.Start.Add(time.Hour),
			Schema: event.SchemaFeatureUseV1, Source: "test", Client: event.Client{OS: event.OSWindows, DeviceKind: event.DeviceDesktop},
		}, Data: &event.FeatureUse{FeatureID: feature, Count: 1}}
		tg := decision.Tagged{Event: ev, Tenant: &registry.Tenant{ID: tenant, Status: registry.StatusContracted, Edition: "standard"},
			Pseudonym: pseudonym.Pseudonym{1}}
		acc.Add(&tg, 1)
	}
	for i := range 500 {
		add("greedy", fmt.Sprintf("f.%04d", i))
	}
	add("greedy", "f.0001") // an existing cell still counts
	add("modest", "f.0001")
	cells := map[string]map[string]bool{}
	for _, r := range acc.TenantRows() {
		if cells[r.Tenant+"/"+r.Metric] == nil {
			cells[r.Tenant+"/"+r.Metric] = map[string]bool{}
		}
		cells[r.Tenant+"/"+r.Metric][r.Cell] = true
	}
	for _, m := range []string{"feature_adoption", "feature_active_users"} {
		if n := len(cells["greedy/"+m]); n != 64 {
			t.Errorf("greedy has %d cells of %s, want 64", n, m)
		}
		if n := len(cells["modest/"+m]); n != 1 {
			t.Errorf("modest has %d cells of %s, want 1", n, m)
		}
	}
	// Two metrics refuse 436 new cells each.
	if acc.CellsRefused != 2*436 {
		t.Errorf("cells refused %d, want %d", acc.CellsRefused, 2*436)
	}
}
