package aggregator

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// partialRows counts the stored partial rows of each window start, and the progress rows.
func (r *aggRig) stateRows(t *testing.T) (partials map[time.Time]uint64, progress uint64) {
	t.Helper()
	rows, err := r.conn.Query(context.Background(), "SELECT kind, window_start, count() FROM "+r.db+"_aggregator.aggregate_state GROUP BY kind, window_start")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	partials = map[time.Time]uint64{}
	for rows.Next() {
		var (
			kind string
			ws   time.Time
			n    uint64
		)
		if err := rows.Scan(&kind, &ws, &n); err != nil {
			t.Fatal(err)
		}
		if kind == "progress" {
			progress += n
		} else {
			partials[ws.UTC()] = n
		}
	}
	return partials, progress
}

// TestExpireStateKeepsWhatTheAggregatorNeeds runs the real aggregator on the real broker and
// server over four days: D is released at T1, D+1 two days later at T2, D+2 is closed but
// refused by the budget (unreleased), D+3 is still open. Retention then deletes the partials of
// D only (released more than the margin ago), never those of D+1 (too recent) or D+2
// (unreleased), and only progress rows a restart does not read. A new instance then resumes
// from the stored progress: D+3 closes with the partials of an uninterrupted run, D is not
// released again and nothing is charged twice.
func TestExpireStateKeepsWhatTheAggregatorNeeds(t *testing.T) {
	r := newAggRig(t, 40)
	ctx := context.Background()
	var w [5]Window
	for i := range w {
		w[i] = WindowOf(day.AddDate(0, 0, i), 24*time.Hour)
	}

	// D, released at T1.
	t1 := w[1].Start.Add(20 * time.Hour)
	r.clock.set(t1)
	r.produce(t, r.pop.Day(w[0].Start), 0)
	a1 := r.aggregator(t)
	stop1 := start(t, a1)
	eventually(t, "the release of D", 90*time.Second, func() bool { return len(r.releasesOf(t, w[0])) > 0 })
	stop1()

	// D+1 and D+2 close and half of D+3 arrives, at T2: D+1 is released, D+2 overdraws the
	// month's budget (two windows) and stays unreleased, D+3 stays open.
	t2 := w[3].Start.Add(20 * time.Hour)
	r.clock.set(t2)
	half, rest := split(r.pop.Day(w[3].Start), w[3].Start.Add(12*time.Hour))
	r.produce(t, append(append(r.pop.Day(w[1].Start), r.pop.Day(w[2].Start)...), half...), 0)
	a2 := r.aggregator(t)
	stop2 := start(t, a2)
	eventually(t, "the release of D+1 and the refusal of D+2", 2*time.Minute, func() bool {
		return len(r.releasesOf(t, w[1])) > 0 && testutil.ToFloat64(a2.m.refusals.WithLabelValues(Purpose, "budget")) >= 1
	})
	eventually(t, "every partition's progress through D+2", time.Minute, func() bool {
		c, err := a2.store.closedAll(ctx)
		if err != nil || len(c) != 3 {
			return false
		}
		for _, ct := range c {
			if !ct.Equal(w[3].Start) {
				return false
			}
		}
		return true
	})
	stop2()

	parts := []int{0, 1, 2}
	progBefore, err := a2.store.loadProgress(ctx, parts)
	if err != nil {
		t.Fatal(err)
	}
	before, progressRows := r.stateRows(t)
	for _, i := range []int{0, 1, 2} {
		if before[w[i].Start] == 0 {
			t.Fatalf("no partials of %v before retention: the test would prove nothing (%v)", w[i], before)
		}
	}
	if before[w[3].Start] != 0 {
		t.Fatalf("D+3 is open but has partials: %v", before)
	}
	if progressRows <= 3 {
		t.Fatalf("%d progress rows: none superseded, the test would prove nothing", progressRows)
	}

	// A margin longer than the time since D's release: nothing is due.
	now := t2.Add(time.Hour)
	if ex, err := ExpireState(ctx, r.conn, r.conn, r.db, now, 72*time.Hour, nil); err != nil || ex.Deleted() != 0 || len(ex.Windows) != 0 {
		t.Fatalf("margin 72h: %+v %v, want nothing deleted", ex, err)
	}
	// A day's margin: D's partials (released at T1, two days before T2) and the progress rows
	// written at T1 (superseded by T2's) go; D+1 (released at T2), D+2 (unreleased) and the
	// latest progress stay.
	ex, err := ExpireState(ctx, r.conn, r.conn, r.db, now, 24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Windows) != 1 || !ex.Windows[0].Start.Equal(w[0].Start) || ex.Windows[0].Plan != r.plan.Hash() ||
		!ex.Windows[0].ReleasedAt.Equal(t1) || ex.Windows[0].Partials != before[w[0].Start] || ex.Partials != before[w[0].Start] {
		t.Errorf("expired %+v, want D's %d partials (released at %v)", ex, before[w[0].Start], t1)
	}
	if ex.Progress == 0 || ex.Progress >= progressRows {
		t.Errorf("deleted %d of %d progress rows, want the superseded ones only", ex.Progress, progressRows)
	}
	after, progressLeft := r.stateRows(t)
	if after[w[0].Start] != 0 || after[w[1].Start] != before[w[1].Start] || after[w[2].Start] != before[w[2].Start] {
		t.Errorf("partials per window before %v, after %v: want D's gone, D+1's and D+2's kept", before, after)
	}
	if progressLeft != progressRows-ex.Progress || progressLeft < 3 {
		t.Errorf("%d progress rows left of %d, %d deleted", progressLeft, progressRows, ex.Progress)
	}
	progAfter, err := a2.store.loadProgress(ctx, parts)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(progAfter, progBefore) {
		t.Errorf("the progress a restart reads changed: %+v, was %+v", progAfter, progBefore)
	}
	if first, ok, err := a2.store.firstWindow(ctx); err != nil || !ok || !first.Equal(w[0].End) {
		t.Errorf("the release step starts at %v (%v %v), want the end of D, the earliest release (its release is kept; D itself is released)", first, ok, err)
	}
	if again, err := ExpireState(ctx, r.conn, r.conn, r.db, now, 24*time.Hour, nil); err != nil || again.Deleted() != 0 {
		t.Errorf("a second run: %+v %v, want nothing more", again, err)
	}

	// A restart resumes from the kept progress: the rest of D+3 arrives, D+3 closes with the
	// partials of an uninterrupted run; D is not released again, nothing charged twice.
	rel0 := r.releasesOf(t, w[0])
	r.clock.set(w[4].Start.Add(20 * time.Hour))
	r.produce(t, rest, 0)
	a3 := r.aggregator(t)
	stop3 := start(t, a3)
	eventually(t, "D+3 to close on every partition", 90*time.Second, func() bool {
		c, err := a3.store.closedAll(ctx)
		if err != nil || len(c) != 3 {
			return false
		}
		for _, ct := range c {
			if !ct.Equal(w[4].Start) {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // a few release rounds
	stop3()
	r.checkPartials(t, w[3])
	if got := r.releasesOf(t, w[0]); !reflect.DeepEqual(got, rel0) {
		t.Errorf("D's release changed after its partials expired: %d rows, was %d", len(got), len(rel0))
	}
	if n := r.ledgerEntries(t); n != 2 {
		t.Errorf("ledger holds %d entries, want 2 (D and D+1)", n)
	}
	// It replayed from the kept resume offsets: D+3's first half (open, so never stored) and
	// then its second half, and nothing of the windows closed before.
	if got, replayed := testutil.ToFloat64(a3.m.events.WithLabelValues("added")), testutil.ToFloat64(a3.m.events.WithLabelValues("replayed")); got != float64(len(half)+len(rest)) || replayed != 0 {
		t.Errorf("the restarted instance added %v events and skipped %v as replayed, want D+3's %d and none", got, replayed, len(half)+len(rest))
	}
}
