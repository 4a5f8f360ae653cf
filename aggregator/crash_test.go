package aggregator

import (
	"context"
	"testing"
	"time"

	"github.com/shukei/shukei/anonymizer/ledger"
)

// TestChargedWindowIsReleasedOnce: an instance that charged the ledger for a window and died
// before storing the release (the charge comes first, by design) leaves a charge and no
// release. The next instance must release the window without charging it again, and from the
// same partials as an uninterrupted run.
func TestChargedWindowIsReleasedOnce(t *testing.T) {
	r := newAggRig(t, 40)
	ctx := context.Background()
	w := WindowOf(day, 24*time.Hour)
	r.produce(t, r.pop.Day(w.Start), 5)
	r.clock.set(w.End.Add(20 * time.Hour))

	// What the dead instance left: the charge releaseWindow makes before anything else.
	eps, delta := r.plan.Cost()
	l0, linf := r.plan.maxBounds()
	entry := ledger.Entry{
		ReleaseID: ReleaseID(r.plan.Hash(), w), Purpose: Purpose, Period: w.Start.UTC().Format("2006-01"),
		Epsilon: eps, Delta: delta, L0: l0, LInf: linf, WindowStart: w.Start, WindowEnd: w.End,
		QueryHash: r.plan.Hash(), PolicyVersion: r.plan.PolicyVersion,
	}
	if _, already, err := ledger.New(r.conn, r.db).Charge(ctx, entry, r.budget); err != nil || already {
		t.Fatalf("charge as the dead instance: already=%v err=%v", already, err)
	}

	a := r.aggregator(t)
	stop := start(t, a)
	eventually(t, "the release of the charged window", 90*time.Second, func() bool { return len(r.releasesOf(t, w)) > 0 })
	time.Sleep(time.Second) // a second release or charge would show now
	stop()
	if n := r.ledgerEntries(t); n != 1 {
		t.Errorf("ledger holds %d charges for the window, want the dead instance's one", n)
	}
	rel := r.releasesOf(t, w)
	cells := map[string]int{}
	for _, x := range rel {
		if x.ReleaseID != entry.ReleaseID {
			t.Errorf("release id %s, want the charged %s", x.ReleaseID, entry.ReleaseID)
		}
		cells[x.Metric+"|"+x.Dims]++
	}
	for c, n := range cells {
		if n != 1 {
			t.Errorf("cell %s released %d times", c, n)
		}
	}
	r.checkPartials(t, w)
}
