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
	for _, tc := range []struct {
		in, want string
		on       Target
		after    []string
	}{
		{"CREATE DATABASE IF NOT EXISTS sk_support", "CREATE DATABASE IF NOT EXISTS sk_support", Everywhere, nil},
		{"CREATE TABLE IF NOT EXISTS sk.events (\n a String\n) ENGINE = MergeTree\nORDER BY a",
			"CREATE TABLE IF NOT EXISTS sk.events (\n a String\n) ENGINE = ReplicatedMergeTree('/clickhouse/shukei/tables/{shard}/sk.events', '{replica}')\nORDER BY a", Everywhere,
			[]string{"CREATE TABLE IF NOT EXISTS sk.events_all AS sk.events ENGINE = Distributed(c, sk, events)"}},
		{"CREATE TABLE IF NOT EXISTS sk.tenants (\n a String, u DateTime\n) ENGINE = ReplacingMergeTree(u)\nORDER BY a",
			"CREATE TABLE IF NOT EXISTS sk.tenants (\n a String, u DateTime\n) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/shukei/tables/all/sk.tenants', '{shard}-{replica}', u)\nORDER BY a", Everywhere, nil},
		{"ALTER TABLE sk_audit.audit_log ADD COLUMN x Int64", "ALTER TABLE sk_audit.audit_log ADD COLUMN x Int64", Once, nil},
		{"ALTER TABLE sk.events ADD COLUMN x Int64", "ALTER TABLE sk.events ADD COLUMN x Int64", PerShard, []string{"ALTER TABLE sk.events_all ADD COLUMN x Int64"}},
		{"ALTER TABLE sk.events DELETE WHERE 1", "ALTER TABLE sk.events DELETE WHERE 1", PerShard, nil},
		{"RENAME TABLE sk.tenants TO sk_registry.tenants", "RENAME TABLE sk.tenants TO sk_registry.tenants", Everywhere, nil},
		{"DROP TABLE IF EXISTS sk_marketing.x", "DROP TABLE IF EXISTS sk_marketing.x", Everywhere, nil},
		{"DROP TABLE IF EXISTS sk.events", "DROP TABLE IF EXISTS sk.events", Everywhere, []string{"DROP TABLE IF EXISTS sk.events_all"}},
		{"CREATE MATERIALIZED VIEW IF NOT EXISTS sk_support.trace_mv TO sk_support.trace AS\nSELECT 1 FROM sk.events", "CREATE MATERIALIZED VIEW IF NOT EXISTS sk_support.trace_mv TO sk_support.trace AS\nSELECT 1 FROM sk.events", Everywhere, nil},
	} {
		got, err := l.Rewrite("sk", tc.in)
		if err != nil || got.SQL != tc.want || got.On != tc.on || !slices.Equal(got.After, tc.after) {
			t.Errorf("Rewrite(%q):\n got %q on %d after %q, %v\nwant %q on %d after %q", tc.in, got.SQL, got.On, got.After, err, tc.want, tc.on, tc.after)
		}
		if strings.Contains(got.SQL, "ON CLUSTER") {
			t.Errorf("Rewrite(%q) = %q: no statement goes through the distributed DDL queue", tc.in, got.SQL)
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

// A statement runs on every node, on the first node of each shard, or on the first node.
func TestTargets(t *testing.T) {
	l := Layout{Cluster: "c", Nodes: []Node{{Name: "a", Shard: 1}, {Name: "b", Shard: 1}, {Name: "c", Shard: 2}, {Name: "d", Shard: 2}, {Name: "e", Shard: 3}}}
	names := func(ns []Node) (out []string) {
		for _, n := range ns {
			out = append(out, n.Name)
		}
		return out
	}
	for on, want := range map[Target][]string{Everywhere: {"a", "b", "c", "d", "e"}, PerShard: {"a", "c", "e"}, Once: {"a"}} {
		if got := names(l.targets(on)); !slices.Equal(got, want) {
			t.Errorf("targets(%d) = %v, want %v", on, got, want)
		}
	}
}

// The cluster's internal user is granted the databases of sharded tables and no other: the
// registry, keys, principals, audit, break-glass, aggregator and release databases stay out.
func TestClusterGrantFile(t *testing.T) {
	b, err := ClusterGrantFile("sk", "shukei_cluster")
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, d := range []string{"sk", "sk_follow_up", "sk_interview_selection", "sk_external_consented", "sk_marketing", "sk_service_improvement", "sk_support"} {
		if !strings.Contains(got, "<"+d+">"+d+"</"+d+">") {
			t.Errorf("the grant lacks %s:\n%s", d, got)
		}
	}
	for _, d := range []string{"sk_registry", "sk_keys", "sk_principals", "sk_audit", "sk_breakglass", "sk_aggregator", "sk_external_aggregate", "_gated"} {
		if strings.Contains(got, d) {
			t.Errorf("the grant names %s, which holds no sharded table:\n%s", d, got)
		}
	}
	if strings.Count(got, "</allow_databases>") != 1 || strings.Contains(got, "password") || strings.Contains(got, "<profile>") {
		t.Errorf("the grant must only add databases to the user declared with remote_servers:\n%s", got)
	}
	if _, err := ClusterGrantFile("sk", "x><y"); err == nil {
		t.Error("a user name that is not an XML name must be refused")
	}
}
