//go:build cluster

package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/ops"
)

// The tables the migrations leave, replayed from their statements: created, dropped, moved.
func expectedTables(t *testing.T, db string) []string {
	t.Helper()
	migs, err := migrations.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	create := regexp.MustCompile(`^CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS ([a-z0-9_]+\.[a-z0-9_]+)\b`)
	drop := regexp.MustCompile(`^DROP TABLE IF EXISTS ([a-z0-9_]+\.[a-z0-9_]+)$`)
	rename := regexp.MustCompile(`^RENAME TABLE ([a-z0-9_]+\.[a-z0-9_]+) TO ([a-z0-9_]+\.[a-z0-9_]+)$`)
	set := map[string]bool{db + ".schema_migrations": true}
	for _, m := range migs {
		for _, s := range m.Statements(db) {
			if c := create.FindStringSubmatch(s); c != nil {
				set[c[1]] = true
			} else if d := drop.FindStringSubmatch(s); d != nil {
				delete(set, d[1])
			} else if r := rename.FindStringSubmatch(s); r != nil {
				delete(set, r[1])
				set[r[2]] = true
			}
		}
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// tablesOn lists the node's tables of the run's databases with their engines.
func tablesOn(t *testing.T, conn driver.Conn, db string) map[string]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT database, name, engine, engine_full FROM system.tables WHERE database = ? OR startsWith(database, ?)", db, db+"_")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var database, name, engine, full string
		if err := rows.Scan(&database, &name, &engine, &full); err != nil {
			t.Fatal(err)
		}
		out[database+"."+name] = engine + " " + full
	}
	return out
}

// Shukei's migrations under the cluster layout: every table on every node, every stored table
// replicated, the event store and its marts per shard and the rest on every node, the ALTERs
// on every replica, and a second run that applies nothing.
func TestClusterMigrationsLayOutEveryTable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	conns := make([]driver.Conn, len(clusterCH))
	for i, addr := range clusterCH {
		conns[i] = clusterConn(t, addr)
	}
	db := fmt.Sprintf("t_mig_%d", time.Now().UnixNano())
	t.Cleanup(func() { dropRunDatabases(conns[0], db) })
	layout := migrations.Layout{Cluster: "shukei"}
	start := time.Now()
	first, err := migrations.ApplyLayout(ctx, conns[0], db, layout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("applied %d migrations on the cluster in %v", len(first.Applied), time.Since(start).Round(time.Millisecond))
	// Run again from another node: everything is recorded, in the replicated history.
	second, err := migrations.ApplyLayout(ctx, conns[3], db, layout)
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Applied) != 0 || len(second.Skipped) != len(first.Applied) {
		t.Errorf("second run from another node applied %d, skipped %d; want 0, %d", len(second.Applied), len(second.Skipped), len(first.Applied))
	}

	// Beside each sharded table, its Distributed table for readers.
	want := expectedTables(t, db)
	for _, name := range want {
		if isSharded(db, name) {
			want = append(want, name+databases.AllShards)
		}
	}
	slices.Sort(want)
	for i, conn := range conns {
		got := tablesOn(t, conn, db)
		names := make([]string, 0, len(got))
		for n := range got {
			names = append(names, n)
		}
		slices.Sort(names)
		if !slices.Equal(names, want) {
			t.Errorf("%s has tables\n%v\nwant\n%v", clusterNodes[i], names, want)
		}
		for name, engine := range got {
			switch {
			case strings.HasSuffix(name, databases.AllShards):
				local := strings.TrimSuffix(name, databases.AllShards)
				db, table, _ := strings.Cut(local, ".")
				if want := "Distributed Distributed(shukei, " + db + ", " + table + ")"; engine != want {
					t.Errorf("%s: %s is %q, want %q", clusterNodes[i], name, engine, want)
				}
			case strings.HasPrefix(engine, "MaterializedView"):
			case !strings.HasPrefix(engine, "Replicated"):
				t.Errorf("%s: %s is %s, not replicated", clusterNodes[i], name, strings.Fields(engine)[0])
			case strings.Contains(engine, "/tables/{shard}/") != isSharded(db, name):
				t.Errorf("%s: %s laid out wrongly: %s", clusterNodes[i], name, engine)
			}
		}
	}

	// A column one migration added to a table replicated everywhere is on every node.
	for i, conn := range conns {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = 'audit_log' AND name = 'log_offset'", db+"_audit").Scan(&n); err != nil || n != 1 {
			t.Errorf("%s: audit_log.log_offset: %d, %v", clusterNodes[i], n, err)
		}
	}

	// A registry row written on one node reaches all four; an event stored on shard 1 stays on
	// shard 1, on both its replicas, and its marts are filled there.
	tenant := "tenant-" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	exec := func(conn driver.Conn, q string, args ...any) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, q)
		if err == nil {
			err = b.Append(args...)
		}
		if err == nil {
			err = b.Send()
		}
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(conns[1], "INSERT INTO "+db+"_registry.tenants (tenant_id, status, edition, size_band, updated_at)", tenant, "trial", "standard", "s", time.Now())
	now := time.Now().UTC().Truncate(time.Second)
	exec(conns[0], "INSERT INTO "+db+".events (event_id, tenant_id, occurred_at, ingested_at, category, purposes, feature_id, use_count, edition)",
		uuid.New(), tenant, now, now, "feature_use", uint16(0xffff), "export", uint32(3), "standard")
	count := func(conn driver.Conn, table string) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+table+" WHERE tenant_id = ?", tenant).Scan(&n); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		return n
	}
	marts := []string{db + ".events", db + "_service_improvement.feature_daily", db + "_follow_up.tenant_daily", db + "_support.trace"}
	want1 := map[string][]uint64{db + "_registry.tenants": {1, 1, 1, 1}}
	for _, m := range marts {
		want1[m] = []uint64{1, 1, 0, 0}
	}
	deadline := time.Now().Add(30 * time.Second)
	for table, want := range want1 {
		for i, conn := range conns {
			n := count(conn, table)
			for n != want[i] && time.Now().Before(deadline) {
				time.Sleep(200 * time.Millisecond)
				n = count(conn, table)
			}
			if n != want[i] {
				t.Errorf("%s on %s: %d rows of the tenant, want %d", table, clusterNodes[i], n, want[i])
			}
		}
	}
	// Every node reads the event and its marts through the Distributed tables, shard 2's
	// nodes included, and the tenant's rows once (one replica a shard).
	for _, m := range marts {
		for i, conn := range conns {
			if n := count(conn, databases.Across("shukei", m)); n != 1 {
				t.Errorf("%s on %s: %d rows of the tenant, want 1", databases.Across("shukei", m), clusterNodes[i], n)
			}
		}
	}
	// Nothing writes through a Distributed table: with no sharding key, an insert is refused.
	b, err := conns[2].PrepareBatch(ctx, "INSERT INTO "+db+".events"+databases.AllShards+" (event_id, tenant_id, occurred_at, ingested_at, category, purposes)")
	if err == nil {
		if err = b.Append(uuid.New(), tenant, now, now, "feature_use", uint16(1)); err == nil {
			err = b.Send()
		}
	}
	if err == nil {
		t.Error("an insert into the Distributed event store was accepted; want a refusal (no sharding key)")
	} else {
		t.Logf("an insert through the Distributed table is refused: %v", err)
	}
}

func isSharded(db, name string) bool {
	for _, s := range []string{".events", "_service_improvement.feature_daily", "_service_improvement.feature_cells_weekly", "_marketing.activity_daily", "_marketing.activity_cells_weekly", "_follow_up.tenant_daily", "_follow_up.tenant_weekly", "_interview_selection.tenant_daily", "_interview_selection.tenant_weekly", "_external_consented.tenant_daily", "_support.trace"} {
		if name == db+s {
			return true
		}
	}
	return false
}

// 'shukei migrate' with clickhouse.cluster set lays the schema out on the cluster and declares
// every role's users on every node: a role connects to any node, as its own users, and reaches
// only its databases there.
func TestClusterMigrateDeclaresUsersOnEveryNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	admin := clusterConn(t, clusterCH[0])
	db := fmt.Sprintf("t_users_%d", time.Now().UnixNano())
	t.Cleanup(func() { dropRunDatabases(admin, db) })

	root := servicetest.ModuleRoot(t)
	base, err := os.ReadFile(filepath.Join(root, ".services", "cluster", "clickhouse.dir"))
	if err != nil {
		servicetest.Unavailable(t, "the ClickHouse cluster's state (scripts/services.sh up --cluster)", err)
	}
	var dirs []string
	for _, n := range clusterNodes {
		dirs = append(dirs, filepath.Join(strings.TrimSpace(string(base)), n, "users.d"))
	}
	key := make([]byte, chain.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.ClickHouse.Addr = []string{clusterCH[0]}
	cfg.ClickHouse.Database = db
	cfg.ClickHouse.Cluster = "shukei"
	cfg.ClickHouse.UsersDir = strings.Join(dirs, string(filepath.ListSeparator))
	cfg.ClickHouse.UsersKey = hex.EncodeToString(key)
	var out strings.Builder
	if err := ops.Migrate(ctx, &out, cfg); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "on every node of cluster shukei") || strings.Count(out.String(), "role users:") != len(dirs) {
		t.Errorf("migrate said:\n%s", out.String())
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			_ = os.Remove(filepath.Join(d, migrations.UsersFileName(db)))
		}
	})

	users := migrations.AllUsers(db, key)
	proc, ok := migrations.Find(users, db+"_processor")
	if !ok {
		t.Fatal("no processor user")
	}
	for i, addr := range clusterCH {
		var conn driver.Conn
		var err error
		deadline := time.Now().Add(30 * time.Second) // a node reloads users.d within seconds
		for {
			conn, err = clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Username: proc.Name, Password: proc.Password, Database: db}, DialTimeout: 5 * time.Second})
			if err == nil {
				err = conn.Ping(ctx)
			}
			if err == nil || time.Now().After(deadline) {
				break
			}
			if conn != nil {
				_ = conn.Close()
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("%s: the processor's user cannot connect: %v", clusterNodes[i], err)
			continue
		}
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".events").Scan(&n); err != nil {
			t.Errorf("%s: the processor's user cannot read its store: %v", clusterNodes[i], err)
		}
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"_audit.audit_log").Scan(&n); err == nil {
			t.Errorf("%s: the processor's user read the audit log, which is not its database", clusterNodes[i])
		}
		_ = conn.Close()
	}
}

// dropRunDatabases drops the run's databases on every node.
func dropRunDatabases(conn driver.Conn, db string) {
	rows, err := conn.Query(context.Background(), "SELECT name FROM system.databases WHERE name = ? OR startsWith(name, ?)", db, db+"_")
	if err != nil {
		return
	}
	var names []string
	for rows.Next() {
		var n string
		if rows.Scan(&n) == nil {
			names = append(names, n)
		}
	}
	rows.Close()
	for _, n := range names {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+n+" ON CLUSTER shukei")
	}
}
