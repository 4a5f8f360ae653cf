//go:build cluster

package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

// The cluster `scripts/services.sh up --cluster` starts (scripts/cluster.sh): ClickHouse as two
// shards of two replicas over ZooKeeper, three Kafka brokers. These tests hold it to what
// Shukei's cluster mode needs of it, on the real processes.
var (
	clusterCH      = []string{"127.0.0.1:19100", "127.0.0.1:19101", "127.0.0.1:19102", "127.0.0.1:19103"} // s1r1 s1r2 s2r1 s2r2
	clusterNodes   = []string{"ch-s1r1", "ch-s1r2", "ch-s2r1", "ch-s2r2"}
	clusterBrokers = []string{"127.0.0.1:19192", "127.0.0.1:19193", "127.0.0.1:19194"}
)

// clusterUser is the user one node logs in as on another (scripts/cluster.sh, remote_servers).
const clusterUser = "shukei_cluster"

// clusterPassword reads the password scripts/cluster.sh generated for name: "admin" (the
// administrator, `default`) or "internal" (clusterUser).
func clusterPassword(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(servicetest.ModuleRoot(t), ".services", "cluster", name+".password"))
	if err != nil {
		servicetest.Unavailable(t, "the ClickHouse cluster's "+name+" password (scripts/services.sh up --cluster)", err)
	}
	return strings.TrimSpace(string(b))
}

// asClusterAdmin points cfg at the cluster as its administrator, with the cluster's internal
// user named so that 'shukei migrate' grants it the sharded databases.
func asClusterAdmin(t testing.TB, cfg *config.Config) {
	cfg.ClickHouse.Addr = []string{clusterCH[0]}
	cfg.ClickHouse.Username = "default"
	cfg.ClickHouse.Password = clusterPassword(t, "admin")
	cfg.ClickHouse.Cluster = "shukei"
	cfg.ClickHouse.ClusterUser = clusterUser
}

// clusterLayout is the cluster's migration layout, with an administrator's connection to
// every node (clusterCH is in shard order: two replicas of shard 1, then of shard 2).
func clusterLayout(t testing.TB) migrations.Layout {
	t.Helper()
	l := migrations.Layout{Cluster: "shukei"}
	for i, addr := range clusterCH {
		l.Nodes = append(l.Nodes, migrations.Node{Name: clusterNodes[i], Shard: uint32(i/2 + 1), Conn: clusterConn(t, addr)})
	}
	return l
}

// onEveryNode runs each statement on every node of the cluster, as the administrator: the
// servers have no distributed DDL queue (ON CLUSTER), as Shukei's migrations need none.
func onEveryNode(t testing.TB, stmts ...string) {
	t.Helper()
	for _, n := range clusterLayout(t).Nodes {
		for _, q := range stmts {
			if err := n.Conn.Exec(context.Background(), q); err != nil {
				t.Fatalf("%s: %s: %v", n.Name, q, err)
			}
		}
	}
}

// dropOnEveryNode drops database db on every node it can reach.
func dropOnEveryNode(conns []driver.Conn, db string) {
	for _, c := range conns {
		_ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
	}
}

// clusterGrant grants the cluster's internal user db's sharded databases on every node, as
// 'shukei migrate' does before it migrates (migrations.WriteClusterGrant), and waits until no
// node refuses that user the database db: a Distributed table's reads of the other shards, and
// migrate's check that a backfill's table is empty on every shard, need it.
func clusterGrant(t testing.TB, db string) {
	t.Helper()
	for _, dir := range clusterUsersDirs(t) {
		path, err := migrations.WriteClusterGrant(dir, db, clusterUser)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(path) })
	}
	pw := clusterPassword(t, "internal")
	for _, addr := range clusterCH {
		deadline := time.Now().Add(30 * time.Second)
		for {
			conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Username: clusterUser, Password: pw}, DialTimeout: 5 * time.Second})
			if err == nil {
				var n uint64
				err = conn.QueryRow(context.Background(), "SELECT count() FROM "+db+".events").Scan(&n)
				conn.Close()
			}
			// Allowed once no longer refused: the database or table may not exist yet.
			if err == nil || !strings.Contains(err.Error(), "Access denied") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still refuses %s the database %s 30 s after its grant was written: %v", addr, clusterUser, db, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}

// clusterUsersDirs are the users.d directories of the cluster's nodes, in clusterNodes order.
func clusterUsersDirs(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(servicetest.ModuleRoot(t), ".services", "cluster", "clickhouse.dir"))
	if err != nil {
		servicetest.Unavailable(t, "the ClickHouse cluster's state (scripts/services.sh up --cluster)", err)
	}
	var dirs []string
	for _, n := range clusterNodes {
		dirs = append(dirs, filepath.Join(strings.TrimSpace(string(b)), n, "users.d"))
	}
	return dirs
}

func clusterConn(t testing.TB, addr string) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Username: "default", Password: clusterPassword(t, "admin")}, DialTimeout: 5 * time.Second})
	if err == nil {
		err = conn.Ping(context.Background())
	}
	if err != nil {
		servicetest.Unavailable(t, "the ClickHouse cluster (scripts/services.sh up --cluster) at "+addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// node runs scripts/services.sh stop-node|start-node NODE.
func node(t *testing.T, verb, name string) {
	t.Helper()
	root := servicetest.ModuleRoot(t)
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "services.sh"), verb, name)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		// One line, so that make's filter of the test output keeps it.
		t.Fatalf("services.sh %s %s: %v: %s", verb, name, err, strings.Join(strings.Fields(string(out)), " "))
	}
}

// DDL ON CLUSTER is refused, a Distributed table reads every shard (and takes no insert), each shard's
// two replicas hold the same rows, and a replica stopped while rows arrive catches up when it
// comes back.
func TestClusterClickHouseShardsAndReplicates(t *testing.T) {
	ctx := context.Background()
	conns := make([]driver.Conn, len(clusterCH))
	for i, addr := range clusterCH {
		conns[i] = clusterConn(t, addr)
	}
	db := fmt.Sprintf("t_cluster_%d", time.Now().UnixNano())
	ddl := []string{
		"CREATE DATABASE " + db,
		"CREATE TABLE " + db + ".events_local (tenant_id String, n UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/shukei/tables/{shard}/" + db + "/events', '{replica}') ORDER BY (tenant_id, n)",
		"CREATE TABLE " + db + ".events AS " + db + ".events_local ENGINE = Distributed(shukei, " + db + ", events_local, cityHash64(tenant_id))",
	}
	// No distributed DDL queue: its worker would run a user's CREATE … AS SELECT unrestricted.
	if err := conns[0].Exec(ctx, "CREATE DATABASE "+db+" ON CLUSTER shukei"); err == nil {
		t.Fatal("DDL ON CLUSTER ran: the servers must have no distributed DDL queue (<distributed_ddl>)")
	}
	t.Cleanup(func() { dropOnEveryNode(conns, db) })
	onEveryNode(t, ddl...)

	clusterGrant(t, db)
	// The writer chooses the shard, as Shukei's processor does: a node logs in on another as
	// the cluster's internal user, which is read-only, so nothing writes through a Distributed
	// table (and nothing that reaches a node can write elsewhere as that user).
	ictx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
	if err := conns[0].Exec(ictx, "INSERT INTO "+db+".events (tenant_id, n) SELECT 'tenant-x', number FROM system.numbers LIMIT 10"); err == nil || !strings.Contains(err.Error(), "readonly") {
		t.Fatalf("an insert through the Distributed table: %v, want it refused (the cluster's internal user is read-only)", err)
	}
	insert := func(from, to int) {
		t.Helper()
		for shard, conn := range []driver.Conn{conns[0], conns[2]} { // s1r1, s2r1
			b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".events_local (tenant_id, n)")
			if err != nil {
				t.Fatal(err)
			}
			for i := from; i < to; i++ {
				if (i%100)%2 != shard {
					continue
				}
				if err := b.Append(fmt.Sprintf("tenant-%03d", i%100), uint64(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Send(); err != nil {
				t.Fatal(err)
			}
		}
	}
	local := func(i int) (rows uint64, tenants []string) {
		t.Helper()
		if err := conns[i].QueryRow(ctx, "SELECT count() FROM "+db+".events_local").Scan(&rows); err != nil {
			t.Fatalf("%s: %v", clusterNodes[i], err)
		}
		r, err := conns[i].Query(ctx, "SELECT DISTINCT tenant_id FROM "+db+".events_local ORDER BY tenant_id")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for r.Next() {
			var s string
			if err := r.Scan(&s); err != nil {
				t.Fatal(err)
			}
			tenants = append(tenants, s)
		}
		return rows, tenants
	}
	waitReplicas := func(want uint64) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			r0, t0 := local(0)
			r1, _ := local(1)
			r2, t2 := local(2)
			r3, _ := local(3)
			if r0 == r1 && r2 == r3 && r0+r2 == want {
				if r0 == 0 || r2 == 0 {
					t.Fatalf("one shard holds every row: shard 1 %d, shard 2 %d", r0, r2)
				}
				seen := map[string]bool{}
				for _, s := range t0 {
					seen[s] = true
				}
				for _, s := range t2 {
					if seen[s] {
						t.Fatalf("tenant %s has rows on both shards: a tenant must live on one", s)
					}
				}
				t.Logf("%d rows: shard 1 %d (%d tenants) on both replicas, shard 2 %d (%d tenants) on both", want, r0, len(t0), r2, len(t2))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("replicas do not agree after 60 s: s1r1 %d s1r2 %d s2r1 %d s2r2 %d, want %d in all", r0, r1, r2, r3, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	insert(0, 10000)
	waitReplicas(10000)

	// A replica down while rows arrive: its shard keeps taking them through the other one.
	node(t, "stop-node", "ch-s2r2")
	stopped := true
	defer func() {
		if stopped {
			node(t, "start-node", "ch-s2r2")
		}
	}()
	insert(10000, 20000)
	node(t, "start-node", "ch-s2r2")
	stopped = false
	conns[3] = clusterConn(t, clusterCH[3])
	waitReplicas(20000)

	var total uint64
	if err := conns[1].QueryRow(ctx, "SELECT count() FROM "+db+".events").Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != 20000 {
		t.Fatalf("the Distributed table reads %d rows, want 20000", total)
	}
}

// A topic with three replicas and min.insync.replicas=2 takes acks=all writes through the
// loss of its partition leader's broker, and loses none of what it acknowledged.
func TestClusterKafkaSurvivesTheLeadersBroker(t *testing.T) {
	ctx := context.Background()
	conn, err := kafka.DialContext(ctx, "tcp", clusterBrokers[0])
	if err != nil {
		servicetest.Unavailable(t, "the Kafka cluster (scripts/services.sh up --cluster)", err)
	}
	defer conn.Close()
	topic := fmt.Sprintf("t-cluster-%d", time.Now().UnixNano())
	ctrl, err := conn.Controller()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := kafka.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := cc.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: 1, ReplicationFactor: 3,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "min.insync.replicas", ConfigValue: "2"}}}); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(clusterBrokers...), Topic: topic, RequiredAcks: kafka.RequireAll,
		MaxAttempts: 20, WriteBackoffMin: 200 * time.Millisecond, WriteBackoffMax: 2 * time.Second, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	write := func(from, to int) {
		t.Helper()
		var msgs []kafka.Message
		for i := from; i < to; i++ {
			msgs = append(msgs, kafka.Message{Key: []byte("k"), Value: []byte(strconv.Itoa(i))})
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			err := w.WriteMessages(ctx, msgs...)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("write %d..%d: %v", from, to, err)
			}
			time.Sleep(time.Second)
		}
	}
	leader := func(except int) int {
		t.Helper()
		for range 60 {
			for i, b := range clusterBrokers { // any broker that is up answers for the cluster
				if i+1 == except {
					continue
				}
				parts, err := kafka.LookupPartitions(ctx, "tcp", b, topic)
				if err == nil && len(parts) == 1 && parts[0].Leader.ID > 0 && parts[0].Leader.ID != except {
					return parts[0].Leader.ID
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatal("the topic has no leader")
		return 0
	}
	write(0, 1000)
	before := leader(0)
	victim := "kafka-" + strconv.Itoa(before)
	node(t, "stop-node", victim)
	defer node(t, "start-node", victim)
	write(1000, 2000)
	after := leader(before)
	if after == before {
		t.Fatalf("the leader is still broker %d after it stopped", before)
	}
	t.Logf("leader moved from broker %d to %d; writes with acks=all went on", before, after)

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: clusterBrokers, Topic: topic, Partition: 0, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	seen := make([]bool, 2000)
	for n := 0; n < 2000; {
		m, err := r.ReadMessage(rctx)
		if err != nil {
			t.Fatalf("read after %d of 2000: %v", n, err)
		}
		i, err := strconv.Atoi(string(m.Value))
		if err != nil || i < 0 || i >= 2000 {
			t.Fatalf("unexpected message %q", m.Value)
		}
		if !seen[i] {
			seen[i] = true
			n++
		}
	}
}
