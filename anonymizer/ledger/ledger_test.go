package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

func TestLedgerOnRealServer(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx := context.Background()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	l := ledger.New(conn, db)
	budget := ledger.Budget{Epsilon: 1, Delta: 1e-7}
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	entry := func(i int) ledger.Entry {
		return ledger.Entry{
			ReleaseID: fmt.Sprintf("r%d", i), Purpose: "external_aggregate", Period: "2026-11",
			Epsilon: 0.1, Delta: 1e-8, L0: 3, LInf: 5,
			WindowStart: day.AddDate(0, 0, i), WindowEnd: day.AddDate(0, 0, i+1),
			QueryHash: "feature_adoption/v1", PolicyVersion: 1,
		}
	}
	// Ten releases of ε=0.1 fit a monthly ε=1 exactly; the eleventh is refused.
	for i := range 10 {
		if _, again, err := l.Charge(ctx, entry(i), budget); err != nil || again {
			t.Fatalf("release %d: again=%v err=%v", i, again, err)
		}
	}
	if _, _, err := l.Charge(ctx, entry(10), budget); !errors.Is(err, ledger.ErrOverdraw) {
		t.Fatalf("the eleventh release: %v, want ErrOverdraw", err)
	}
	// A window already released is found again, not charged again.
	first, again, err := l.Charge(ctx, entry(3), budget)
	if err != nil || !again || first.ReleaseID != "r3" {
		t.Fatalf("re-run of window 3: %+v again=%v err=%v", first, again, err)
	}
	spent, err := l.Spent(ctx, "external_aggregate", "2026-11")
	if err != nil || spent.Epsilon < 0.999 || spent.Epsilon > 1.001 {
		t.Errorf("spent %+v %v, want ε=1", spent, err)
	}
	// Another period has its own budget.
	next := entry(40)
	next.Period = "2026-12"
	if _, _, err := l.Charge(ctx, next, budget); err != nil {
		t.Errorf("December charge refused: %v", err)
	}
	if err := l.Verify(ctx, "external_aggregate"); err != nil {
		t.Fatalf("an untouched chain fails: %v", err)
	}
	// Editing an entry breaks the chain.
	if err := conn.Exec(ctx, "ALTER TABLE "+db+"_external_aggregate.budget_ledger UPDATE epsilon = 0.01 WHERE release_id = 'r5'"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := l.Verify(ctx, "external_aggregate")
		if errors.Is(err, ledger.ErrBroken) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("an edited entry went unnoticed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Invalid charges never reach the table.
	bad := entry(50)
	bad.Epsilon = 0
	if _, _, err := l.Charge(ctx, bad, budget); err == nil {
		t.Error("a charge of ε=0 was accepted")
	}
}
