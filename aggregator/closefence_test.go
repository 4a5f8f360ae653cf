package aggregator

import (
	"context"
	"testing"
	"time"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

// Promise 8's half on the aggregator's side: a close decides which tenants it writes only once
// its insert is open on the server (a deletion that this check misses then waits for the
// insert), and what the check leaves out is not written.
func TestCloseChecksDeletedTenantsWithItsInsertOpen(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	s := &store{conn: conn, db: db, plan: "test-plan"}
	var open uint64 = 99
	s.keep = func(ctx context.Context, closed []closedWindow) ([]closedWindow, error) {
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.processes WHERE startsWith(query, 'INSERT INTO "+db+"_aggregator.aggregate_state')").Scan(&open); err != nil {
			return nil, err
		}
		out := []closedWindow{}
		for _, c := range closed {
			c.tenants = c.tenants[:1] // the second tenant was deleted meanwhile
			out = append(out, c)
		}
		return out, nil
	}
	w := WindowOf(time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), 24*time.Hour)
	closed := []closedWindow{{w: w, tenants: []TenantRow{
		{Tenant: "kept", Metric: "feature_adoption", Cell: "a|trial", Events: 3},
		{Tenant: "deleted-meanwhile", Metric: "feature_adoption", Cell: "a|trial", Events: 5},
	}}}
	if err := s.writeClose(ctx, 0, closed, progress{closed: w.End, resume: 10, high: 10}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if open != 1 {
		t.Errorf("%d inserts into aggregate_state were open while the close checked the deleted tenants, want its own (1)", open)
	}
	rows, err := conn.Query(ctx, "SELECT tenant_id FROM "+db+"_aggregator.aggregate_state WHERE kind = 'tenant' ORDER BY tenant_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	if len(got) != 1 || got[0] != "kept" {
		t.Errorf("tenant rows stored: %v, want only the tenant the check kept", got)
	}
}
