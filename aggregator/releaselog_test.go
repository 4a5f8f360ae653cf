package aggregator

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/pipeline/topic"
)

// closedEverywhere waits until every partition of the rig's raw topic has closed w.
func (r *aggRig) closedEverywhere(t *testing.T, a *Aggregator, w Window, parts int) {
	t.Helper()
	eventually(t, "every partition closes "+w.String(), 90*time.Second, func() bool {
		closed, err := a.store.closedAll(context.Background())
		if err != nil || len(closed) < parts {
			return false
		}
		for _, c := range closed {
			if c.Before(w.End) {
				return false
			}
		}
		return true
	})
}

// logRecords reads the whole release log of the rig's database.
func (r *aggRig) logRecords(t *testing.T) *releaseLog {
	t.Helper()
	l := newReleaseLog(r.cfg.Kafka.Brokers, topic.ReleaseSpec(r.cfg.Kafka), r.db)
	defer l.close()
	if err := l.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestZombieDrawIsNeverPublished is the double-spend attack on the release step: instance B
// draws a window's release and is paused (a GC pause, SIGSTOP, a VM stall) before writing it;
// meanwhile A, which took over, releases the window; then B resumes and writes its own,
// independent draw. Averaging two draws would halve the noise's variance at no charge. The
// window must stay released once — A's draw, one ledger charge, a chain that verifies — and
// B's draw must be written (the attack happened) but never published.
func TestZombieDrawIsNeverPublished(t *testing.T) {
	r := newAggRig(t, 60)
	ctx := context.Background()
	w := WindowOf(day, 24*time.Hour)
	r.produce(t, r.pop.Day(w.Start), 5)
	r.clock.set(w.End.Add(20 * time.Hour))

	// A closes the windows but does not release on its own (its release loop is an hour away).
	r.cfg.Aggregator.ReleaseInterval = time.Hour
	a := r.aggregator(t)
	stopA := start(t, a)
	r.closedEverywhere(t, a, w, 3)

	zombie := r.aggregator(t)
	drawn, resume := make(chan struct{}), make(chan struct{})
	zombie.afterDraw = func() { close(drawn); <-resume }
	zdone := make(chan error, 1)
	go func() { zdone <- zombie.releaseWindow(ctx, zombie.kinds[0], w) }()
	select {
	case <-drawn:
	case err := <-zdone:
		t.Fatalf("the zombie returned before drawing: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the zombie did not draw")
	}

	// While the zombie is paused, A releases the window.
	if err := a.ReleaseDue(ctx, 3); err != nil {
		t.Fatal(err)
	}
	first := r.releasesOf(t, w)
	if len(first) == 0 {
		t.Fatal("A released nothing")
	}
	close(resume)
	if err := <-zdone; err != nil {
		t.Fatalf("the zombie: %v", err)
	}
	stopA()

	log := r.logRecords(t)
	if log.others != 1 {
		t.Fatalf("the release log holds %d later draws of the window, want the zombie's 1 (the attack did not happen)", log.others)
	}
	if got := testutil.ToFloat64(zombie.m.draws.WithLabelValues("discarded")); got != 1 {
		t.Errorf("the zombie counted %v discarded draws, want 1", got)
	}
	after := r.releasesOf(t, w)
	if len(after) != len(first) {
		t.Fatalf("%d release rows after the zombie resumed, %d before", len(after), len(first))
	}
	won, _ := log.decided(w)
	want := map[string]int64{}
	for _, c := range won.Cells {
		want[c.Metric+"|"+c.Dims()] = c.Value
	}
	seen := map[string]bool{}
	for i, x := range after {
		k := x.Metric + "|" + x.Dims
		if seen[k] {
			t.Errorf("cell %s published twice", k)
		}
		seen[k] = true
		if x.Value != first[i].Value || x.Value != want[k] {
			t.Errorf("cell %s: published %d, before the zombie %d, first draw %d", k, x.Value, first[i].Value, want[k])
		}
	}
	if n := r.ledgerEntries(t); n != 1 {
		t.Errorf("ledger holds %d charges for the window, want 1", n)
	}
	if err := ledger.New(r.conn, r.db).Verify(ctx, Purpose); err != nil {
		t.Errorf("ledger chain: %v", err)
	}

	// A plan change does not release the window again either: the log decided it.
	other := *r
	other.cfg.Aggregator.Epsilon = r.cfg.Aggregator.Epsilon * 2
	plan, err := NewPlan(other.cfg.Aggregator, 1)
	if err != nil {
		t.Fatal(err)
	}
	other.plan = plan
	other.budget = ledger.Budget{Epsilon: 10 * r.budget.Epsilon, Delta: 10 * r.budget.Delta}
	b := other.aggregator(t)
	if err := b.ReleaseDue(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := b.releaseWindow(ctx, b.kinds[0], w); err != nil {
		t.Fatal(err)
	}
	all, err := Releases(ctx, r.conn, r.db, "") // every plan's
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(first) {
		t.Errorf("after a plan change the database has %d release rows, want the window's %d", len(all), len(first))
	}
	if n := r.ledgerEntries(t); n != 1 {
		t.Errorf("after a plan change the ledger holds %d charges, want 1", n)
	}
}

// TestSecondCloseIsDropped: a partition that closes a window twice — the second time after the
// registry moved a tenant (trial → contracted), so with other cells — must contribute the
// partials of one close only, or a tenant could reach 2·L0 cells.
func TestSecondCloseIsDropped(t *testing.T) {
	r := newAggRig(t, 10)
	ctx := context.Background()
	a := r.aggregator(t)
	w := WindowOf(day, 24*time.Hour)
	first := []Partial{{Metric: "feature_adoption", Cell: "status=trial|feature=a", Tenants: 1, State: []byte("one")}}
	second := []Partial{{Metric: "feature_adoption", Cell: "status=contracted|feature=a", Tenants: 1, State: []byte("two")}}
	pr := progress{closed: w.End, resume: 10, high: 10}
	if err := a.store.writeClose(ctx, 0, []closedWindow{{w: w, partials: first}}, pr, time.Now()); err != nil {
		t.Fatal(err)
	}
	// The second close skips a window closed before …
	if err := a.store.writeClose(ctx, 0, []closedWindow{{w: w, partials: second}}, pr, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// … and should two closes race past that check, the release step still takes one.
	insertRacingClose(t, r, a, w, second)
	got, err := a.store.partials(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Cell != first[0].Cell || string(got[0].State) != "one" {
		t.Errorf("partials %+v, want the first close's only", got)
	}
}

// insertRacingClose writes a second close of window w by partition 0 straight into the store,
// as a close that raced past writeClose's check would (two seconds later, another close id).
func insertRacingClose(t *testing.T, r *aggRig, a *Aggregator, w Window, partials []Partial) {
	t.Helper()
	ctx := context.Background()
	b, err := r.conn.PrepareBatch(ctx, "INSERT INTO "+r.db+"_aggregator.aggregate_state (kind, plan_hash, partition, window_start, window_end, metric, cell, tenants, state, closed_through, resume_offset, high_offset, at, close_id)")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range partials {
		if err := b.Append("partial", a.planHash, uint32(0), w.Start, w.End, q.Metric, q.Cell, uint32(q.Tenants), string(q.State), w.End, int64(10), int64(10), time.Now().Add(2*time.Second), "zzzz-racing-close"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}
