package marts_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/marts"
)

// A mart filled by many inserts (its states merged part by part, in any order) reads, key by
// key, the same as its view's SELECT over the same events run at once: what the repair and
// rebuild-marts compare. The weekly follow-up mart finalises features to an array whose order
// follows the merged state's hash table.
func TestMartReadsAsItsViewWhateverTheMerges(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx := context.Background()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	all, err := marts.List(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	byTable := map[string]marts.Mart{}
	for _, m := range all {
		byTable[strings.TrimPrefix(m.Table, db)] = m
	}
	for _, want := range []string{"_support.trace", "_service_improvement.feature_daily", "_marketing.activity_daily",
		"_follow_up.tenant_daily", "_follow_up.tenant_weekly", "_interview_selection.tenant_daily", "_interview_selection.tenant_weekly", "_external_consented.tenant_daily"} {
		if _, ok := byTable[want]; !ok {
			t.Errorf("List has no mart %s%s (it has %d)", db, want, len(all))
		}
	}
	weekly := byTable["_follow_up.tenant_weekly"]
	if weekly.Time != "week" || !weekly.Aggregating() || fmt.Sprint(weekly.Keys) != "[week tenant_id]" {
		t.Errorf("follow_up.tenant_weekly: time %q, keys %v, %d aggregates", weekly.Time, weekly.Keys, len(weekly.Merges))
	}
	if trace := byTable["_support.trace"]; trace.Aggregating() || len(trace.Keys) != len(trace.Columns) || trace.Time != "occurred_at" {
		t.Errorf("support.trace: keys %v of columns %v, time %q", trace.Keys, trace.Columns, trace.Time)
	}
	// 40 inserts of 25 feature uses each, by 3 tenants, features overlapping between inserts.
	for i := range 40 {
		q := fmt.Sprintf("INSERT INTO %s.events (event_id, tenant_id, occurred_at, ingested_at, category, user_pseudonym, purposes, feature_id, use_count, edition, contract_status) "+
			"SELECT generateUUIDv4(), concat('tenant-', toString(number %% 3)), now() - %d * 3600, now(), 'feature_use', toFixedString(concat('user-000000000', toString(number %% 7)), 16), 31, "+
			"concat('feature.', toString((number * 7 + %d) %% 61)), 1 + number %% 4, 'standard', 'contracted' FROM numbers(25)", db, i%50, i*13)
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range all {
		have, err := marts.ReadValues(ctx, conn, m.Values(m.Rows("1")))
		if err != nil {
			t.Fatalf("%s: %v", m.Table, err)
		}
		want, err := marts.ReadValues(ctx, conn, m.Values(m.Over("1")))
		if err != nil {
			t.Fatalf("%s over the store: %v", m.Table, err)
		}
		if len(want) == 0 && !strings.HasSuffix(m.Table, "external_consented.tenant_daily") {
			t.Errorf("%s: its view makes nothing of 1,000 events", m.Table)
		}
		if differ := marts.Differ(have, want); len(differ) > 0 || len(have) != len(want) {
			t.Errorf("%s: %d of %d keys read differently from its view over the same events (%d keys in the mart)", m.Table, len(differ), len(want), len(have))
		}
		// Show describes a key alike on both sides, in words naming its columns.
		for k := range want {
			a, b := marts.ShowKey(ctx, conn, m, m.Rows("1"), k), marts.ShowKey(ctx, conn, m, m.Over("1"), k)
			if a != b || !strings.Contains(a, "tenant_id=tenant-") || strings.Contains(a, "user_pseudonym") || strings.Contains(a, "user-0000") {
				t.Errorf("%s: key %d shows as %q in the mart, %q over the store", m.Table, k, a, b)
			}
			if none := marts.ShowKey(ctx, conn, m, m.Rows("1"), k+1); none != "(none)" {
				t.Errorf("%s: a key no row has shows as %q", m.Table, none)
			}
			break
		}
	}
}

// Differ names a key whose value changed, one only the view has (a row missing from the mart)
// and one only the mart has (a row its view does not make), in order, and nothing else.
func TestDiffer(t *testing.T) {
	have := map[uint64]uint64{1: 10, 2: 20, 5: 50, 9: 90}
	want := map[uint64]uint64{1: 10, 2: 21, 3: 30, 9: 90}
	if got := fmt.Sprint(marts.Differ(have, want)); got != "[2 3 5]" {
		t.Errorf("Differ = %s, want [2 3 5]", got)
	}
	if got := marts.Differ(want, want); len(got) != 0 {
		t.Errorf("Differ of equal values = %v", got)
	}
}
