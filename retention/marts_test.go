package retention_test

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/retention"
)

// The marts lose an insert's rows (as when ClickHouse stops between the event store's part and
// the views'): rebuild-marts re-derives exactly what the views had made, for the weeks asked,
// and leaves the other weeks alone.
func TestRebuildMartsRederivesFromTheEventStore(t *testing.T) {
	ctx := context.Background()
	conn, cfg := servicetest.ClickHouse(t)
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	thisWeek := gate.Monday(time.Now())
	lastWeek := thisWeek.AddDate(0, 0, -7)
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".events (event_id, tenant_id, occurred_at, ingested_at, category, purposes, feature_id, app_id, use_count, edition, contract_status, user_pseudonym)")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		week := thisWeek
		if i%3 == 0 {
			week = lastWeek
		}
		at := week.Add(time.Duration(i%(6*24)) * time.Hour)
		cat, feature, app := "feature_use", fmt.Sprintf("f.%d", i%7), ""
		if i%4 == 0 {
			cat, feature, app = "app_access", "", fmt.Sprintf("app%d", i%3)
		}
		var user [16]byte
		copy(user[:], fmt.Sprintf("user-%03d", i%120))
		if err := b.Append(uuid.New(), fmt.Sprintf("tenant-%02d", i%12), at, time.Now(), cat, uint16(0xffff), feature, app, uint32(1+i%3), "standard", "trial", string(user[:])); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	snapshot := func() map[string]any {
		out := map[string]any{}
		for _, p := range []policy.Purpose{policy.ServiceImprovement, policy.Marketing} {
			for _, w := range []time.Time{lastWeek, thisWeek} {
				atoms, err := gate.Compute(ctx, conn, db, "", p.String(), w, policy.MinK)
				if err != nil {
					t.Fatal(err)
				}
				out[p.String()+w.Format(time.DateOnly)] = fmt.Sprint(atoms)
			}
		}
		for _, q := range []string{
			"SELECT tenant_id, day, sumMerge(events), uniqMerge(users) FROM " + db + "_follow_up.tenant_daily GROUP BY tenant_id, day ORDER BY tenant_id, day",
			"SELECT tenant_id, week, sumMerge(events) FROM " + db + "_follow_up.tenant_weekly GROUP BY tenant_id, week ORDER BY tenant_id, week",
			"SELECT count(), sum(cityHash64(toString(event_id))) FROM " + db + "_support.trace",
		} {
			rows, err := conn.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for rows.Next() {
				vals := make([]any, len(rows.Columns()))
				for i, ct := range rows.ColumnTypes() {
					vals[i] = reflectNew(ct.ScanType())
				}
				if err := rows.Scan(vals...); err != nil {
					t.Fatal(err)
				}
				lines = append(lines, fmt.Sprint(deref(vals)...))
			}
			rows.Close()
			out[q] = strings.Join(lines, "\n")
		}
		return out
	}
	want := snapshot()
	// This week's marts lose rows: here every mart's rows of this week.
	for _, q := range []string{
		"ALTER TABLE " + db + "_service_improvement.feature_daily DELETE WHERE day >= toDate('" + thisWeek.Format(time.DateOnly) + "')",
		"ALTER TABLE " + db + "_marketing.activity_daily DELETE WHERE day >= toDate('" + thisWeek.Format(time.DateOnly) + "')",
		"ALTER TABLE " + db + "_follow_up.tenant_daily DELETE WHERE day >= toDate('" + thisWeek.Format(time.DateOnly) + "')",
		"ALTER TABLE " + db + "_follow_up.tenant_weekly DELETE WHERE week >= toDate('" + thisWeek.Format(time.DateOnly) + "')",
		"ALTER TABLE " + db + "_support.trace DELETE WHERE toDate(occurred_at) >= toDate('" + thisWeek.Format(time.DateOnly) + "')",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Second)
	if reflect.DeepEqual(snapshot(), want) {
		t.Fatal("deleting this week's mart rows changed nothing: the test shows nothing")
	}
	// Rebuilding this week (asked by any day of it) restores every mart as the views made it;
	// last week, not asked, stays as it was (not counted twice).
	if err := retention.RebuildMarts(ctx, io.Discard, cfg, thisWeek.AddDate(0, 0, 2), time.Now()); err != nil {
		t.Fatal(err)
	}
	got := snapshot()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("after the rebuild %.80s differs:\n got %.300v\nwant %.300v", k, got[k], v)
		}
	}
}

func reflectNew(t reflect.Type) any { return reflect.New(t).Interface() }

func deref(vals []any) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = reflect.ValueOf(v).Elem().Interface()
	}
	return out
}
