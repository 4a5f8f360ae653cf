package migrations

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// Every statement of every migration has a cluster form, and the tables are laid out as the
// design says: the event store and the marts its views fill are sharded, the rest everywhere.
func TestTheLayoutOfEveryTable(t *testing.T) {
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	l := Layout{Cluster: "shukei"}
	for _, m := range migs {
		for i, stmt := range m.Statements("sk") {
			step, err := l.Rewrite("sk", stmt)
			if err != nil {
				t.Errorf("%04d statement %d: %v", m.Version, i+1, err)
				continue
			}
			if strings.HasPrefix(stmt, "CREATE TABLE") && !strings.Contains(step.SQL, "ENGINE = Replicated") {
				t.Errorf("%04d statement %d is not replicated on a cluster:\n%s", m.Version, i+1, step.SQL)
			}
			if strings.HasPrefix(stmt, "INSERT") != (step.Backfill != "") {
				t.Errorf("%04d statement %d: backfill %q", m.Version, i+1, step.Backfill)
			}
		}
	}
	keys, err := shardKeys()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		".events",
		"_follow_up.tenant_daily", "_follow_up.tenant_weekly",
		"_interview_selection.tenant_daily", "_interview_selection.tenant_weekly",
		"_external_consented.tenant_daily",
		"_marketing.activity_cells_weekly", "_marketing.activity_daily", "_marketing.activity_weekly",
		"_service_improvement.feature_cells_weekly", "_service_improvement.feature_daily", "_service_improvement.feature_weekly",
		"_support.trace",
	}
	slices.Sort(want)
	if got := slices.Sorted(maps.Keys(keys)); !slices.Equal(got, want) {
		t.Errorf("sharded tables:\n got %v\nwant %v", got, want)
	}
}

func TestRewriteExamples(t *testing.T) {
	l := Layout{Cluster: "c"}
	for _, tc := range []struct{ in, want string }{
		{"CREATE DATABASE IF NOT EXISTS sk_support", "CREATE DATABASE IF NOT EXISTS sk_support ON CLUSTER c"},
		{"CREATE TABLE IF NOT EXISTS sk.events (\n a String\n) ENGINE = MergeTree\nORDER BY a",
			"CREATE TABLE IF NOT EXISTS sk.events ON CLUSTER c (\n a String\n) ENGINE = ReplicatedMergeTree('/clickhouse/shukei/tables/{shard}/sk.events', '{replica}')\nORDER BY a"},
		{"CREATE TABLE IF NOT EXISTS sk.tenants (\n a String, u DateTime\n) ENGINE = ReplacingMergeTree(u)\nORDER BY a",
			"CREATE TABLE IF NOT EXISTS sk.tenants ON CLUSTER c (\n a String, u DateTime\n) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/shukei/tables/all/sk.tenants', '{shard}-{replica}', u)\nORDER BY a"},
		{"ALTER TABLE sk_audit.audit_log ADD COLUMN x Int64", "ALTER TABLE sk_audit.audit_log ADD COLUMN x Int64"},
		{"ALTER TABLE sk.events ADD COLUMN x Int64", "ALTER TABLE sk.events ON CLUSTER c ADD COLUMN x Int64"},
		{"RENAME TABLE sk.tenants TO sk_registry.tenants", "RENAME TABLE sk.tenants TO sk_registry.tenants ON CLUSTER c"},
		{"DROP TABLE IF EXISTS sk_marketing.x", "DROP TABLE IF EXISTS sk_marketing.x ON CLUSTER c"},
		{"CREATE MATERIALIZED VIEW IF NOT EXISTS sk_support.trace_mv TO sk_support.trace AS\nSELECT 1 FROM sk.events", "CREATE MATERIALIZED VIEW IF NOT EXISTS sk_support.trace_mv ON CLUSTER c TO sk_support.trace AS\nSELECT 1 FROM sk.events"},
	} {
		got, err := l.Rewrite("sk", tc.in)
		if err != nil || got.SQL != tc.want {
			t.Errorf("Rewrite(%q):\n got %q, %v\nwant %q", tc.in, got.SQL, err, tc.want)
		}
	}
	for _, bad := range []string{"OPTIMIZE TABLE sk.events", "CREATE TABLE IF NOT EXISTS sk.t (a String) ENGINE = Log", "CREATE TABLE IF NOT EXISTS sk.t (a String) ENGINE = MergeTree ORDER BY a ENGINE = MergeTree"} {
		if _, err := l.Rewrite("sk", bad); err == nil {
			t.Errorf("Rewrite(%q) has no cluster form and must fail", bad)
		}
	}
	if got, _ := (Layout{}).Rewrite("sk", "OPTIMIZE TABLE sk.events"); got.SQL != "OPTIMIZE TABLE sk.events" {
		t.Errorf("one server runs statements as written, got %q", got.SQL)
	}
}
