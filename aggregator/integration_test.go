package aggregator

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/anonymizer/dp"
	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

type aggRig struct {
	cfg     config.Config
	conn    driver.Conn
	db      string
	cache   *registry.Cache
	keyring *pseudonym.Keyring
	master  *pseudonym.MasterKey
	keyText string // the master key, for subprocesses
	tagger  decision.Tagger
	plan    *Plan
	budget  ledger.Budget
	clock   *clock
	pop     *population.Population
}

func newAggRig(t *testing.T, tenants int) *aggRig {
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	cfg.Kafka.RawTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 3)
	cfg.Kafka.ReleaseTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 1)
	cfg.Aggregator.GroupID = servicetest.Name(t, "agg.")
	cfg.Aggregator.ReleaseInterval = 200 * time.Millisecond
	cfg.Aggregator.Features, cfg.Aggregator.Settings = population.Features, population.Settings
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	keyText := pseudonym.NewMasterKeyText()
	master, err := pseudonym.ParseMasterKey(keyText)
	if err != nil {
		t.Fatal(err)
	}
	// Subprocesses of the fault and attack tests connect as the roles' own users (promise 16).
	servicetest.DeclareRoleUsers(t, cfg.ClickHouse.Database, master.Derive("clickhouse-users"))
	reg := registry.New(conn, cfg.ClickHouse.Database, master)
	pop := population.New(tenants, 11, "agg-")
	for _, ten := range pop.Registry() {
		if _, err := reg.Add(ctx, ten); err != nil {
			t.Fatal(err)
		}
	}
	keyring := pseudonym.NewKeyring(master)
	cache := registry.NewCache(reg, keyring, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	versions, err := policy.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := NewPlan(cfg.Aggregator, 1)
	if err != nil {
		t.Fatal(err)
	}
	eps, delta := plan.Cost()
	return &aggRig{
		cfg: cfg, conn: conn, db: cfg.ClickHouse.Database, cache: cache, keyring: keyring, master: master, keyText: keyText,
		tagger: decision.NewPolicyTagger(versions), plan: plan, pop: pop, clock: &clock{},
		// Two windows fit the month's budget; a third is refused.
		budget: ledger.Budget{Epsilon: 2 * eps, Delta: 2 * delta},
	}
}

func (r *aggRig) aggregator(t *testing.T) *Aggregator {
	a, err := New(r.cfg, Deps{
		Conn: r.conn, Database: r.db, Cache: r.cache, Keyring: r.keyring, Policy: r.tagger,
		HashKey: r.master.Derive("dlq"), SampleKey: r.master.Derive("aggregator-sampling"), Plan: r.plan, Budget: r.budget,
		Registry: prometheus.NewRegistry(), Now: r.clock.now,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// start runs a in the background; the returned stop cancels it and waits for Run to return.
func start(t *testing.T, a *Aggregator) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("aggregator: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("aggregator did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (r *aggRig) produce(t *testing.T, evs []event.Event, dupes int) {
	t.Helper()
	var msgs []kafka.Message
	for i, ev := range evs {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Key: []byte(ev.TenantID), Value: b})
		if i < dupes { // a collector retry: the same event again, at a later offset
			msgs = append(msgs, kafka.Message{Key: []byte(ev.TenantID), Value: b})
		}
	}
	w := &kafka.Writer{Addr: kafka.TCP(r.cfg.Kafka.Brokers...), Topic: r.cfg.Kafka.RawTopic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchSize: 2000, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *aggRig) releasesOf(t *testing.T, w Window) []StoredRelease {
	all, err := Releases(context.Background(), r.conn, r.db, r.plan.Hash())
	if err != nil {
		t.Fatal(err)
	}
	var out []StoredRelease
	for _, x := range all {
		if x.WindowStart.Equal(w.Start) {
			out = append(out, x)
		}
	}
	return out
}

func (r *aggRig) ledgerEntries(t *testing.T) int {
	var n uint64
	if err := r.conn.QueryRow(context.Background(), "SELECT count() FROM "+r.db+"_external_aggregate.budget_ledger").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func split(evs []event.Event, at time.Time) (before, after []event.Event) {
	for _, ev := range evs {
		if ev.OccurredAt.Before(at) {
			before = append(before, ev)
		} else {
			after = append(after, ev)
		}
	}
	return before, after
}

// TestRestartMidWindowAndBudget runs the aggregator on the real broker and server:
//
//  1. half of day D is read, then the aggregator stops mid-window (its state is lost);
//  2. a new instance replays from the stored progress, the rest of D arrives (with collector
//     retries), D closes and is released: its partials equal those of an uninterrupted
//     in-process run over the same messages, and the ledger has one entry;
//  3. two instances in the group then close D+1 and D+2, plus a late event for D: D+1 is
//     released, D+2 would overdraw the month's budget and is refused with a metric, D's release
//     is untouched and the late event is only counted.
func TestRestartMidWindowAndBudget(t *testing.T) {
	r := newAggRig(t, 60)
	ctx := context.Background()
	w1 := WindowOf(day, 24*time.Hour)
	w2 := WindowOf(day.AddDate(0, 0, 1), 24*time.Hour)
	w3 := WindowOf(day.AddDate(0, 0, 2), 24*time.Hour)
	d1 := r.pop.Day(w1.Start)
	first, second := split(d1, w1.Start.Add(12*time.Hour))

	// 1. Mid-window: half of D, clock inside D.
	r.clock.set(w1.Start.Add(20 * time.Hour))
	r.produce(t, first, 0)
	a1 := r.aggregator(t)
	stop1 := start(t, a1)
	eventually(t, "the first half of D to be added", time.Minute, func() bool {
		return testutil.ToFloat64(a1.m.events.WithLabelValues("added")) == float64(len(first))
	})
	eventually(t, "progress of every partition", time.Minute, func() bool {
		c, err := a1.store.closedAll(ctx)
		return err == nil && len(c) == 3
	})
	stop1()
	if n := len(r.releasesOf(t, w1)); n != 0 {
		t.Fatalf("D was released before it closed (%d rows)", n)
	}

	// 2. Restart a day later: the rest of D arrives, with 20 collector retries.
	r.clock.set(w2.Start.Add(20 * time.Hour))
	r.produce(t, second, 20)
	a2 := r.aggregator(t)
	stop2 := start(t, a2)
	eventually(t, "the release of D", 90*time.Second, func() bool { return len(r.releasesOf(t, w1)) > 0 })
	stop2()
	if got := testutil.ToFloat64(a2.m.events.WithLabelValues("duplicate")); got != 20 {
		t.Errorf("collector retries dropped: %v, want 20", got)
	}
	rel1 := r.releasesOf(t, w1)
	if n := r.ledgerEntries(t); n != 1 {
		t.Fatalf("ledger has %d entries after releasing D, want 1", n)
	}
	r.checkPartials(t, w1)
	wantCells := 0
	for _, m := range r.plan.Metrics {
		wantCells += len(m.configuredCells())
	}
	if len(rel1) < wantCells {
		t.Errorf("D released %d cells, want at least every configured cell (%d)", len(rel1), wantCells)
	}
	for _, x := range rel1 {
		if x.ReleaseID != ReleaseID(r.plan.Hash(), w1) || x.Mechanism != "laplace" || x.StdDev <= 0 || x.Epsilon <= 0 || x.L0 < 1 || x.LInf < 1 {
			t.Fatalf("release row lacks its parameters: %+v", x)
		}
	}

	// 3. Two instances; D+1 and D+2 close; a late event for D arrives.
	r.clock.set(w3.End.Add(3 * time.Hour))
	late := r.pop.Day(w1.Start)[0]
	late.EventID = "7b0e5d6c-1111-4222-8333-444455556666"
	r.produce(t, append(append(r.pop.Day(w2.Start), r.pop.Day(w3.Start)...), late), 0)
	a3, a4 := r.aggregator(t), r.aggregator(t)
	stop3, stop4 := start(t, a3), start(t, a4)
	refusals := func() float64 {
		return testutil.ToFloat64(a3.m.refusals.WithLabelValues(Purpose, "budget")) + testutil.ToFloat64(a4.m.refusals.WithLabelValues(Purpose, "budget"))
	}
	eventually(t, "the release of D+1 and the refusal of D+2", 2*time.Minute, func() bool {
		return len(r.releasesOf(t, w2)) > 0 && refusals() >= 1
	})
	eventually(t, "the late event to be counted", time.Minute, func() bool {
		return testutil.ToFloat64(a3.m.late)+testutil.ToFloat64(a4.m.late) == 1
	})
	time.Sleep(time.Second) // a few more release rounds: nothing may change
	stop3()
	stop4()

	if n := len(r.releasesOf(t, w3)); n != 0 {
		t.Errorf("D+2 was released (%d rows) although it overdraws the budget", n)
	}
	if n := r.ledgerEntries(t); n != 2 {
		t.Errorf("ledger has %d entries, want 2 (D and D+1; D+2 refused)", n)
	}
	l := ledger.New(r.conn, r.db)
	if err := l.Verify(ctx, Purpose); err != nil {
		t.Error(err)
	}
	again := r.releasesOf(t, w1)
	if len(again) != len(rel1) {
		t.Fatalf("D's release changed from %d to %d rows", len(rel1), len(again))
	}
	for i := range again {
		if again[i] != rel1[i] {
			t.Fatalf("D's release changed: %+v became %+v", rel1[i], again[i])
		}
	}
	spent, err := l.Spent(ctx, Purpose, "2026-11")
	if err != nil {
		t.Fatal(err)
	}
	eps, _ := r.plan.Cost()
	if d := spent.Epsilon - 2*eps; d > 1e-9 || d < -1e-9 {
		t.Errorf("spent ε = %v, want %v", spent.Epsilon, 2*eps)
	}
	var remaining float64
	for _, a := range []*Aggregator{a3, a4} {
		remaining += testutil.ToFloat64(a.m.budgetEps.WithLabelValues(Purpose))
	}
	if remaining > 1e-9 || remaining < -1e-9 {
		t.Errorf("shukei_budget_epsilon_remaining = %v, want 0 (the budget holds exactly two windows)", remaining)
	}
}

// checkPartials compares the stored partials of w with an uninterrupted in-process run over
// the topic's messages, partition by partition.
func (r *aggRig) checkPartials(t *testing.T, w Window) {
	t.Helper()
	r.checkPartialsAt(t, w, w.End.Add(20*time.Hour))
}

// checkPartialsAt is checkPartials with the reference decision made as of now.
func (r *aggRig) checkPartialsAt(t *testing.T, w Window, now time.Time) {
	t.Helper()
	msgs := servicetest.ReadTopic(t, r.cfg.Kafka.Brokers, r.cfg.Kafka.RawTopic)
	dctx := &decision.Context{Now: now, Limits: event.Limits{}.WithDefaults(), Tenants: r.cache.Snapshot(), Keyring: r.keyring, Policy: r.tagger}
	accs := map[int]*Acc{}
	for _, m := range msgs {
		tg, rej := decision.Decide(m.Value, dctx)
		if rej != nil {
			t.Fatalf("reference decision rejected a message: %+v", rej)
		}
		if WindowOf(tg.Event.OccurredAt, 24*time.Hour) != w {
			continue
		}
		if accs[m.Partition] == nil {
			accs[m.Partition] = r.plan.NewAcc(w)
		}
		accs[m.Partition].Add(&tg, m.Offset)
	}
	type key struct {
		part         int
		metric, cell string
	}
	want := map[key][2]int64{}
	for part, acc := range accs {
		ps, err := acc.Partials(r.master.Derive("aggregator-sampling"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			v, _ := dp.PartialValue(p.State)
			want[key{part, p.Metric, p.Cell}] = [2]int64{p.Tenants, v}
		}
	}
	rows, err := r.conn.Query(context.Background(), "SELECT partition, metric, cell, tenants, state FROM "+r.db+"_aggregator.aggregate_state WHERE kind = 'partial' AND window_start = ?", w.Start)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[key][2]int64{}
	for rows.Next() {
		var (
			part    uint32
			k       key
			tenants uint32
			state   string
		)
		if err := rows.Scan(&part, &k.metric, &k.cell, &tenants, &state); err != nil {
			t.Fatal(err)
		}
		k.part = int(part)
		if _, dup := got[k]; dup {
			t.Errorf("partial %+v stored twice", k)
		}
		v, err := dp.PartialValue([]byte(state))
		if err != nil {
			t.Fatal(err)
		}
		got[k] = [2]int64{int64(tenants), v}
	}
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("%d partials stored, the uninterrupted run makes %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("partial %+v: stored (tenants, value) %v, uninterrupted run %v", k, got[k], v)
		}
	}
}
