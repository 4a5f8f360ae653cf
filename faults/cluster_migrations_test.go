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
	t.Cleanup(func() { dropRunDatabases(t, db) })
	layout := clusterLayout(t)
	start := time.Now()
	clusterGrant(t, db)
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
// only its databases there; and the nodes talk to each other as their own user (nodesTalkAsTheirOwnUser).
func TestClusterMigrateDeclaresUsersOnEveryNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	_ = clusterConn(t, clusterCH[0]) // the cluster answers, or the test says why not
	db := fmt.Sprintf("t_users_%d", time.Now().UnixNano())
	t.Cleanup(func() { dropRunDatabases(t, db) })

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
	asClusterAdmin(t, &cfg)
	cfg.ClickHouse.Database = db
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
	nodesTalkAsTheirOwnUser(t, db, users)
	readersStayOnTheirNode(t, db, users)
}

// readersStayOnTheirNode: a user that reads only (readonly=1, promise 16) sends nothing through
// another node — no table function (cluster(), remote(), url()), no SETTINGS clause
// (prefer_localhost_replica = 0), and settings sent with the query are ignored — so the
// internal user's wider grant (the sharded databases) is out of its reach: the second blind
// cluster attack's reader route, tried on every node with every read-only user.
func readersStayOnTheirNode(t *testing.T, db string, users []migrations.User) {
	ctx := context.Background()
	tried := 0
	for _, u := range users {
		if u.Mode != migrations.ReadOnly {
			continue
		}
		for i, addr := range clusterCH {
			conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Username: u.Name, Password: u.Password, Database: u.Databases[0]}, DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			var n uint64
			for _, q := range []string{
				"SELECT count() FROM cluster('shukei', " + db + ", events) SETTINGS prefer_localhost_replica = 0",
				"SELECT count() FROM cluster('shukei', " + db + ", events)",
				"SELECT count() FROM remote('" + clusterCH[(i+1)%len(clusterCH)] + "', " + db + ", events, '" + clusterUser + "', '')",
			} {
				if err := conn.QueryRow(ctx, q).Scan(&n); err == nil || !strings.Contains(err.Error(), "readonly") {
					t.Errorf("%s on %s: %s: %v (%d rows), want refused in readonly mode", u.Name, clusterNodes[i], q, err, n)
				}
			}
			// A Distributed table the user may read, with the setting sent over the native
			// protocol: ignored, so the node's own replica answers, as the user itself.
			if slices.Contains(u.Databases, db+"_marketing") {
				sent := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"prefer_localhost_replica": 0}))
				var v string
				if err := conn.QueryRow(sent, "SELECT value FROM system.settings WHERE name = 'prefer_localhost_replica'").Scan(&v); err != nil || v != "1" {
					t.Errorf("%s on %s: prefer_localhost_replica = %q (%v) after sending 0, want 1", u.Name, clusterNodes[i], v, err)
				}
			}
			_ = conn.Close()
			tried++
		}
	}
	if tried < 4*len(clusterCH) {
		t.Errorf("tried %d read-only users × nodes, want at least %d", tried, 4*len(clusterCH))
	}
}

// nodesTalkAsTheirOwnUser: a query one node sends another runs there as the cluster's internal
// user (docs/CLUSTER.md, "Nodes talk to each other as a user of their own"), which reads only
// the sharded tables' databases and writes nothing; remote() naming no user, or naming the
// internal user without its password, is refused. Tried as the aggregator's writer, which on
// ClickHouse 18.16 may lift allow_ddl (promise 16's stated limit) and create a Distributed
// table of its own in its database, and as every node's own way out: prefer_localhost_replica=0.
func nodesTalkAsTheirOwnUser(t *testing.T, db string, users []migrations.User) {
	ctx := context.Background()
	agg, ok := migrations.Find(users, db+"_aggregator")
	if !ok || agg.Mode != migrations.Write {
		t.Fatalf("no aggregator writer among the users (%+v)", agg)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clusterCH[0]}, Auth: clickhouse.Auth{Username: agg.Name, Password: agg.Password, Database: db + "_aggregator"}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lifted := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"allow_ddl": 1}))
	remoteRead := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"prefer_localhost_replica": 0}))
	secret := map[string]string{ // outside the aggregator's row, and not sharded
		"principals": db + "_principals.principals", "audit": db + "_audit.audit_log",
		"keys": db + "_keys.pseudonym_roots", "breakglass": db + "_breakglass.breakglass",
	}
	for name, table := range secret {
		d, tb, _ := strings.Cut(table, ".")
		own := db + "_aggregator.atk_" + name
		if err := conn.Exec(lifted, "CREATE TABLE "+own+" (dummy UInt8) ENGINE = Distributed(shukei, "+d+", "+tb+")"); err != nil {
			t.Logf("%s: a Distributed table over %s was refused (%v)", agg.Name, table, err)
			continue
		}
		var n uint64
		if err := conn.QueryRow(remoteRead, "SELECT count() FROM "+own).Scan(&n); err == nil {
			t.Errorf("%s read %s (%d rows) through a Distributed table of its own, as the cluster's internal user: that user must not be allowed %s", agg.Name, table, n, d)
		} else if !strings.Contains(err.Error(), "Access denied") || !strings.Contains(err.Error(), clusterUser) {
			t.Errorf("reading %s through %s: %v, want the other shard to refuse %s access", table, own, err, clusterUser)
		}
		for _, q := range []string{
			"SELECT count() FROM remote('" + clusterCH[2] + "', " + d + ", " + tb + ")",
			"SELECT count() FROM remote('" + clusterCH[2] + "', " + d + ", " + tb + ", '" + clusterUser + "', '')",
			"SELECT count() FROM remote('" + clusterCH[2] + "', " + d + ", " + tb + ", 'default', '')",
		} {
			if err := conn.QueryRow(ctx, q).Scan(&n); err == nil {
				t.Errorf("%s: %s ran (%d rows)", agg.Name, q, n)
			}
		}
	}
	// The stated limit: a sharded database is readable that way. Writing through it is not.
	own := db + "_aggregator.atk_events"
	if err := conn.Exec(lifted, "CREATE TABLE "+own+" (event_id UUID, tenant_id String) ENGINE = Distributed(shukei, "+db+", events, rand())"); err != nil {
		t.Fatalf("%s: a Distributed table over the event store: %v", agg.Name, err)
	}
	var n uint64
	if err := conn.QueryRow(remoteRead, "SELECT count() FROM "+own).Scan(&n); err != nil {
		t.Logf("%s: reading the event store through a Distributed table of its own was refused too: %v", agg.Name, err)
	} else {
		t.Logf("%s reads the event store through a Distributed table of its own (%d rows): promise 16's stated 18.16 limit on a cluster", agg.Name, n)
	}
	sync := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1, "prefer_localhost_replica": 0}))
	if err := conn.Exec(sync, "INSERT INTO "+own+" (event_id, tenant_id) SELECT generateUUIDv4(), 'atk' FROM system.numbers LIMIT 50"); err == nil || !strings.Contains(err.Error(), "readonly") {
		t.Errorf("%s: an insert into the event store through a Distributed table of its own: %v, want it refused (the cluster's internal user is read-only)", agg.Name, err)
	}
	for i, addr := range clusterCH {
		admin := clusterConn(t, addr)
		if err := admin.QueryRow(ctx, "SELECT count() FROM "+db+".events WHERE tenant_id = 'atk'").Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: %d rows written through the aggregator's Distributed table (%v)", clusterNodes[i], n, err)
		}
	}
}

// dropRunDatabases drops the run's databases on every node that answers.
func dropRunDatabases(t testing.TB, db string) {
	pw := clusterPassword(t, "admin")
	for _, addr := range clusterCH {
		conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Username: "default", Password: pw}, DialTimeout: 5 * time.Second})
		if err != nil {
			continue
		}
		rows, err := conn.Query(context.Background(), "SELECT name FROM system.databases WHERE name = ? OR startsWith(name, ?)", db, db+"_")
		if err != nil {
			conn.Close()
			continue
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
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+n)
		}
		conn.Close()
	}
}
