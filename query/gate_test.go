package query_test

import (
	"context"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/gate"
)

// sealWeeks seals every complete week of the store's data as the release step does (without
// its log: gate.Compute and gate.Materialise are what the first seal of a week writes).
func sealWeeks(t *testing.T, conn driver.Conn, db string, k int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	last := gate.Monday(time.Now()).AddDate(0, 0, -7)
	for _, p := range gate.Purposes {
		first, ok, err := gate.FirstWeek(ctx, conn, db, p.String())
		if err != nil {
			t.Fatal(err)
		}
		for w := first.AddDate(0, 0, -7*gate.Before); ok && !w.After(last); w = w.AddDate(0, 0, 7) {
			atoms, err := gate.Compute(ctx, conn, db, p.String(), w, k)
			if err != nil {
				t.Fatal(err)
			}
			if err := gate.Materialise(ctx, conn, db, gate.Seal{Purpose: p.String(), Week: w, K: k, ID: "test", At: time.Now(), Atoms: atoms}); err != nil {
				t.Fatal(err)
			}
		}
	}
}
