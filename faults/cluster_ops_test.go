//go:build cluster

package faults

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/ops"
)

// Replacing a replica (docs/CLUSTER.md, Operations): ch-s2r2's disk is lost and a new server
// takes its place with the table definitions of its shard's other replica and
// force_restore_data (scripts/services.sh replace-node). Every replicated table of the run's
// databases comes back with the rows its peer holds — the shard's events and marts, and the
// tables replicated on every node — and the new replica takes writes that reach the other.
func TestClusterReplicaReplaced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	conns := make([]driver.Conn, len(clusterCH))
	for i, addr := range clusterCH {
		conns[i] = clusterConn(t, addr)
	}
	db := fmt.Sprintf("t_repl_%d", time.Now().UnixNano())
	t.Cleanup(func() { dropRunDatabases(t, db) })
	clusterGrant(t, db)
	if _, err := migrations.ApplyLayout(ctx, conns[0], db, clusterLayout(t)); err != nil {
		t.Fatal(err)
	}
	insert := func(conn driver.Conn, tenant string, n int) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".events (event_id, tenant_id, occurred_at, ingested_at, category, purposes, feature_id, use_count, edition)")
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC().Truncate(time.Second)
		for i := range n {
			if err := b.Append(uuid.New(), tenant, now.Add(-time.Duration(i)*time.Minute), now, "feature_use", uint16(0xffff), "export", uint32(1+i%3), "standard"); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	// Shard 2's rows, written on ch-s2r1, and a registry row (replicated on every node).
	insert(conns[2], "tenant-a", 3000)
	insert(conns[2], "tenant-b", 500)
	reg, err := conns[1].PrepareBatch(ctx, "INSERT INTO "+db+"_registry.tenants (tenant_id, status, edition, size_band, updated_at, shard)")
	if err == nil {
		err = reg.Append("tenant-a", "trial", "standard", "s", time.Now(), uint16(2))
	}
	if err == nil {
		err = reg.Send()
	}
	if err != nil {
		t.Fatal(err)
	}
	// What the peer holds, table by table.
	tables := replicatedTables(t, conns[2], db)
	for _, tb := range tables {
		if err := conns[3].Exec(ctx, "SYSTEM SYNC REPLICA "+tb); err != nil {
			t.Fatalf("sync %s: %v", tb, err)
		}
	}
	want := map[string]uint64{}
	for _, tb := range tables {
		want[tb] = rowsOf(t, conns[2], tb)
	}
	if want[db+".events"] != 3500 || want[db+"_registry.tenants"] != 1 || want[db+"_service_improvement.feature_daily"] == 0 {
		t.Fatalf("before: %d events, %d registry rows, %d mart rows", want[db+".events"], want[db+"_registry.tenants"], want[db+"_service_improvement.feature_daily"])
	}

	began := time.Now()
	node(t, "replace-node", "ch-s2r2")
	fresh := clusterConn(t, clusterCH[3])
	got := replicatedTables(t, fresh, db)
	if strings.Join(got, ",") != strings.Join(tables, ",") {
		t.Fatalf("the new replica has the tables\n%v\nwant\n%v", got, tables)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, tb := range tables {
		for {
			_ = fresh.Exec(ctx, "SYSTEM SYNC REPLICA "+tb)
			n := rowsOf(t, fresh, tb)
			if n == want[tb] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s on the new ch-s2r2: %d rows, its peer %d", tb, n, want[tb])
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Logf("ch-s2r2 replaced and restored in %s: %d tables, %d events of shard 2", time.Since(began).Round(time.Second), len(tables), want[db+".events"])

	// The new replica takes writes, and they reach its peer; every node reads the shard's
	// events through the Distributed table.
	insert(fresh, "tenant-c", 100)
	if err := conns[2].Exec(ctx, "SYSTEM SYNC REPLICA "+db+".events"); err != nil {
		t.Fatal(err)
	}
	if n := rowsOf(t, conns[2], db+".events"); n != 3600 {
		t.Errorf("ch-s2r1 holds %d events after a write on the new replica, want 3600", n)
	}
	for i, c := range []driver.Conn{conns[0], conns[1], conns[2], fresh} {
		if n := rowsOf(t, c, databases.Across("shukei", db+".events")); n != 3600 {
			t.Errorf("%s reads %d events through the Distributed table, want 3600", clusterNodes[i], n)
		}
	}
}

// replicatedTables lists the replicated tables of the run's databases on conn, sorted.
func replicatedTables(t *testing.T, conn driver.Conn, db string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT concat(database, '.', name) FROM system.tables WHERE (database = ? OR startsWith(database, ?)) AND startsWith(engine, 'Replicated') ORDER BY database, name", db, db+"_")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func rowsOf(t *testing.T, conn driver.Conn, table string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+table).Scan(&n); err != nil {
		t.Fatalf("%s: %v", table, err)
	}
	return n
}

// A node without Shukei's tables — a new shard's, or one rebuilt empty — gets them from
// 'shukei migrate' (migrations.Complete), which the replicated migration history alone would
// not give it: here ch-s2r2's databases are dropped on it alone (its replicas leave ZooKeeper,
// as a new node's were never there), and migrate creates every table again from ch-s1r1's
// definitions; the new replicas fetch the shard's events and marts and the tables replicated
// on every node. A second migrate creates nothing.
func TestClusterMigrateCompletesANode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	conns := make([]driver.Conn, len(clusterCH))
	for i, addr := range clusterCH {
		conns[i] = clusterConn(t, addr)
	}
	db := fmt.Sprintf("t_node_%d", time.Now().UnixNano())
	t.Cleanup(func() { dropRunDatabases(t, db) })
	cfg := config.Default()
	asClusterAdmin(t, &cfg)
	cfg.ClickHouse.Database = db
	cfg.ClickHouse.UsersKey = strings.Repeat("ab", 32) // users printed, not installed: this test needs none
	clusterGrant(t, db)                                // printed too: installed as the administrator would
	var out strings.Builder
	if err := ops.Migrate(ctx, &out, cfg); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "created ") {
		t.Errorf("the first migrate created tables node by node:\n%s", out.String())
	}
	b, err := conns[2].PrepareBatch(ctx, "INSERT INTO "+db+".events (event_id, tenant_id, occurred_at, ingested_at, category, purposes, feature_id, use_count, edition)")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for i := range 2000 {
		if err := b.Append(uuid.New(), "tenant-a", now.Add(-time.Duration(i)*time.Minute), now, "feature_use", uint16(0xffff), "export", uint32(1), "standard"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	tables := replicatedTables(t, conns[2], db)
	for _, tb := range tables {
		if err := conns[3].Exec(ctx, "SYSTEM SYNC REPLICA "+tb); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := conns[3].Query(ctx, "SELECT name FROM system.databases WHERE name = ? OR startsWith(name, ?)", db, db+"_")
	if err != nil {
		t.Fatal(err)
	}
	var dbs []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		dbs = append(dbs, n)
	}
	rows.Close()
	for _, d := range dbs {
		if err := conns[3].Exec(ctx, "DROP DATABASE "+d); err != nil {
			t.Fatal(err)
		}
	}
	if got := replicatedTables(t, conns[3], db); len(got) != 0 {
		t.Fatalf("ch-s2r2 still has %v", got)
	}

	out.Reset()
	if err := ops.Migrate(ctx, &out, cfg); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	// Every table but the migration history, which migrate's own first step creates ON CLUSTER.
	all := tablesOn(t, conns[2], db)
	if n := strings.Count(out.String(), "created  "+clusterCH[3]+": "); n != len(all)-1 || strings.Contains(out.String(), ".schema_migrations") {
		t.Errorf("migrate created %d tables on ch-s2r2, want %d:\n%s", n, len(all)-1, out.String())
	}
	if strings.Count(out.String(), "created ") != len(all)-1 {
		t.Errorf("migrate created tables on other nodes too:\n%s", out.String())
	}
	if got, want := tablesOn(t, conns[3], db), all; !reflect.DeepEqual(got, want) {
		t.Errorf("ch-s2r2 has\n%v\nwant (as ch-s2r1)\n%v", got, want)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, tb := range tables {
		want := rowsOf(t, conns[2], tb)
		for {
			_ = conns[3].Exec(ctx, "SYSTEM SYNC REPLICA "+tb)
			if n := rowsOf(t, conns[3], tb); n == want {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("%s on ch-s2r2: %d rows, ch-s2r1 %d", tb, n, want)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	if n := rowsOf(t, conns[3], db+".events"); n != 2000 {
		t.Errorf("ch-s2r2 holds %d events after migrate, want 2000", n)
	}
	out.Reset()
	if err := ops.Migrate(ctx, &out, cfg); err != nil || strings.Contains(out.String(), "created ") {
		t.Errorf("a second migrate: %v\n%s", err, out.String())
	}
	// Without clickhouse.cluster_user, migrate says which user the nodes log in on each other as.
	out.Reset()
	cfg.ClickHouse.ClusterUser = ""
	if err := ops.Migrate(ctx, &out, cfg); err != nil || !strings.Contains(out.String(), "log in on each other as "+clusterUser) {
		t.Errorf("a migrate without clickhouse.cluster_user: %v, want a warning naming %s:\n%s", err, clusterUser, out.String())
	}
}
