//go:build cluster

package attack

// Promise 19 ("On a cluster, deletion and least privilege hold on every node", docs/promises.md;
// brief: CLUSTER.md): once 'shukei tenants delete' has returned, no replica of any shard holds a
// row of the tenant in any table of any Shukei database (the audit log excepted), even when a
// replica was stopped or killed while the deletion ran and came back afterwards; and each
// role's ClickHouse users are refused, on every node, everything promise 16's matrix refuses
// them, reaching a node directly or through the Distributed tables (<table>_all).
//
// Written from the promises, the README, docs/, scripts/*.sh, the command-line help,
// internal/servicetest and the earlier attack harness alone: nothing under pipeline/,
// retention/, migrations/, registry/, aggregator/, query/, ops/, databases/, gate/, faults/,
// anonymizer/, event/, policy/ or cmd/ was read. What the tests know of the tables comes from
// each node's system.tables and system.columns.
//
// Run: scripts/services.sh up --cluster, then
//
//	SHUKEI_TEST_REQUIRE_SERVICES=1 go test -tags cluster -count=1 -run TestCluster -v ./attack/

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
)

// The cluster scripts/services.sh up --cluster starts (scripts/cluster.sh).
const clName = "shukei"

type clNode struct{ name, addr string }

var (
	clNodes = []clNode{
		{"ch-s1r1", "127.0.0.1:19100"}, {"ch-s1r2", "127.0.0.1:19101"},
		{"ch-s2r1", "127.0.0.1:19102"}, {"ch-s2r2", "127.0.0.1:19103"},
	}
	clBrokers = []string{"127.0.0.1:19192", "127.0.0.1:19193", "127.0.0.1:19194"}
	// clShardNodes are the replicas of each shard (shard_num of system.clusters).
	clShardNodes = map[int][]string{1: {"ch-s1r1", "ch-s1r2"}, 2: {"ch-s2r1", "ch-s2r2"}}
)

// clStack is one test's Shukei on the cluster: its databases (migrated on every node), its topics
// (replication factor 3), a master key, the roles' users written into every node's users.d,
// an administrator connection to every node, and the roles it runs.
type clStack struct {
	t        *testing.T
	root     string
	bin      string
	dir      string
	db       string
	raw, dlq string
	env      []string
	admin    map[string]driver.Conn // node → administrator connection
	usersDir []string
	began    time.Time

	mu      sync.Mutex
	outputs []*output
	procs   []*proc
	stopped map[string]bool // nodes this test stopped or killed and has not started again
}

// clAdminPassword is the cluster administrator's (`default`) password, which
// scripts/services.sh up --cluster generates into .services/cluster/admin.password.
func clAdminPassword() string {
	dir, err := os.Getwd()
	for err == nil {
		if b, rerr := os.ReadFile(filepath.Join(dir, ".services", "cluster", "admin.password")); rerr == nil {
			return strings.TrimSpace(string(b))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return ""
}

func clOpen(addr, user, password, db string) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:         []string{addr},
		Auth:         clickhouse.Auth{Database: db, Username: user, Password: password},
		DialTimeout:  5 * time.Second,
		MaxOpenConns: 4, MaxIdleConns: 2,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// clRequire checks that the whole cluster answers: every ClickHouse node, every broker.
func clRequire(t *testing.T) map[string]driver.Conn {
	t.Helper()
	conns := map[string]driver.Conn{}
	for _, n := range clNodes {
		c, err := clOpen(n.addr, "default", clAdminPassword(), "")
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			servicetest.Unavailable(t, "the ClickHouse cluster node "+n.name+" at "+n.addr+" (scripts/services.sh up --cluster)", err)
			return nil
		}
		conns[n.name] = c
	}
	for _, b := range clBrokers {
		c, err := net.DialTimeout("tcp", b, 5*time.Second)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			servicetest.Unavailable(t, "the cluster's Kafka broker "+b+" (scripts/services.sh up --cluster)", err)
			return nil
		}
		c.Close()
	}
	return conns
}

func newClStack(t *testing.T, extraEnv ...string) *clStack {
	t.Helper()
	began := time.Now()
	admin := clRequire(t)
	root := servicetest.ModuleRoot(t)
	b, err := os.ReadFile(filepath.Join(root, ".services", "cluster", "clickhouse.dir"))
	if err != nil {
		servicetest.Unavailable(t, "the cluster's users.d (.services/cluster/clickhouse.dir)", err)
	}
	chDir := strings.TrimSpace(string(b))
	s := &clStack{
		t: t, root: root, bin: binary(t), dir: t.TempDir(), admin: admin, began: began,
		db:      "t_atk_" + drLetters(4) + "_" + randHex(3),
		stopped: map[string]bool{},
	}
	for _, n := range clNodes {
		s.usersDir = append(s.usersDir, filepath.Join(chDir, n.name, "users.d"))
	}
	s.raw, s.dlq = s.db+".raw", s.db+".dlq"
	keyFile := filepath.Join(s.dir, "master.key")
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SHUKEI_") {
			continue // nothing from outside decides what the roles do
		}
		env = append(env, kv)
	}
	var addrs []string
	for _, n := range clNodes {
		addrs = append(addrs, n.addr)
	}
	env = append(env,
		"SHUKEI_CLICKHOUSE_ADDR="+strings.Join(addrs, ","),
		"SHUKEI_CLICKHOUSE_CLUSTER="+clName,
		"SHUKEI_CLICKHOUSE_DATABASE="+s.db,
		"SHUKEI_CLICKHOUSE_USERNAME=default",
		"SHUKEI_CLICKHOUSE_PASSWORD="+clAdminPassword(),
		"SHUKEI_CLICKHOUSE_CLUSTER_USER=shukei_cluster",
		"SHUKEI_CLICKHOUSE_USERS_DIR="+strings.Join(s.usersDir, ":"),
		"SHUKEI_KAFKA_BROKERS="+strings.Join(clBrokers, ","),
		"SHUKEI_KAFKA_REPLICATION_FACTOR=3",
		"SHUKEI_KAFKA_RAW_TOPIC="+s.raw, "SHUKEI_KAFKA_DLQ_TOPIC="+s.dlq,
		"SHUKEI_KAFKA_RELEASE_TOPIC="+s.db+".releases", "SHUKEI_AUDIT_TOPIC="+s.db+".audit",
		"SHUKEI_KAFKA_RAW_PARTITIONS=3", "SHUKEI_KAFKA_DLQ_PARTITIONS=2",
		"SHUKEI_PROCESSOR_GROUP_ID="+s.db+".proc",
		"SHUKEI_AGGREGATOR_GROUP_ID="+s.db+".agg",
		"SHUKEI_REGISTRY_REFRESH=2s",
		"SHUKEI_ANONYMIZER_MASTER_KEY_FILE="+keyFile,
		"SHUKEI_PROCESSOR_LISTEN="+freeAddr(t),
		"SHUKEI_COLLECTOR_LISTEN="+freeAddr(t), "SHUKEI_COLLECTOR_OPS_LISTEN="+freeAddr(t),
		"SHUKEI_LOG_LEVEL=info", "SHUKEI_LOG_FORMAT=text",
	)
	s.env = append(env, extraEnv...)
	t.Cleanup(s.cleanup)
	s.cli("keys", "init", "--file", keyFile)
	s.cli("topics")
	s.cli("migrate")
	t.Logf("stack %s migrated on the cluster in %s", s.db, time.Since(began).Round(100*time.Millisecond))
	return s
}

func (s *clStack) logf(format string, args ...any) {
	s.t.Logf("%7.2fs %s", time.Since(s.began).Seconds(), fmt.Sprintf(format, args...))
}

func (s *clStack) addOutput(name string) *servicetest.Output {
	o := &servicetest.Output{}
	s.mu.Lock()
	s.outputs = append(s.outputs, &output{name: name, out: o})
	s.mu.Unlock()
	return o
}

func (s *clStack) tryCLI(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	o := s.addOutput("shukei " + strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Dir, cmd.Env = s.dir, s.env
	cmd.Stdout, cmd.Stderr = o, o
	err := cmd.Run()
	return o.String(), err
}

func (s *clStack) cli(args ...string) string {
	s.t.Helper()
	out, err := s.tryCLI(3*time.Minute, args...)
	if err != nil {
		s.t.Fatalf("shukei %s: %v\n%s", strings.Join(args, " "), err, tailText(out, 20))
	}
	return out
}

// start starts 'shukei <role>' and waits for /healthz on health.
func (s *clStack) start(role, health string) *proc {
	s.t.Helper()
	p := &proc{name: role, out: s.addOutput(role), done: make(chan struct{})}
	p.cmd = exec.Command(s.bin, role)
	p.cmd.Dir, p.cmd.Env = s.dir, s.env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", role, err)
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := client.Get("http://" + health + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if !p.running() {
			s.t.Fatalf("%s exited during start-up (%v):\n%s", role, p.err, tail(p.out, 40))
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: /healthz on %s does not answer 200 after 90s:\n%s", role, health, tail(p.out, 40))
		}
	}
}

func (s *clStack) envValue(key string) string {
	for _, kv := range s.env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// node runs scripts/services.sh stop-node|kill-node|start-node NODE.
func (s *clStack) node(verb, name string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.root, "scripts", "services.sh"), verb, name)
	cmd.Dir = s.root
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("harness: scripts/services.sh %s %s: %v\n%s", verb, name, err, out)
	}
	s.mu.Lock()
	s.stopped[name] = verb != "start-node"
	s.mu.Unlock()
	if verb == "start-node" {
		// The administrator's connection to the node is new (the old one's sockets are dead).
		for _, n := range clNodes {
			if n.name != name {
				continue
			}
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
				c, err := clOpen(n.addr, "default", clAdminPassword(), "")
				if err == nil {
					old := s.admin[name]
					s.admin[name] = c
					if old != nil {
						old.Close()
					}
					break
				}
				if time.Now().After(deadline) {
					s.t.Fatalf("harness: %s does not answer 60 s after start-node: %v", name, err)
				}
			}
		}
	}
	s.logf("services.sh %s %s", verb, name)
}

func (s *clStack) cleanup() {
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	var down []string
	for n, st := range s.stopped {
		if st {
			down = append(down, n)
		}
	}
	s.mu.Unlock()
	for _, p := range procs {
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	// A node this test left stopped is started again (the next test needs the whole cluster).
	for _, n := range down {
		cmd := exec.Command(filepath.Join(s.root, "scripts", "services.sh"), "start-node", n)
		cmd.Dir = s.root
		if out, err := cmd.CombinedOutput(); err != nil {
			s.t.Logf("cleanup: start-node %s: %v\n%s", n, err, out)
		}
	}
	if c := s.admin["ch-s1r1"]; c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rows, err := c.Query(ctx, "SELECT name FROM system.databases WHERE name = ? OR startsWith(name, ?)", s.db, s.db+"_")
		var dbs []string
		if err == nil {
			for rows.Next() {
				var n string
				if rows.Scan(&n) == nil {
					dbs = append(dbs, n)
				}
			}
			rows.Close()
		}
		cancel()
		// On every node: the servers have no distributed DDL queue (ON CLUSTER).
		for _, n := range clNodes {
			nc := s.admin[n.name]
			if nc == nil {
				continue
			}
			for _, d := range dbs {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				if err := nc.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(d)); err != nil {
					s.t.Logf("cleanup: drop %s on %s (left in place): %v", d, n.name, err)
				}
				cancel()
			}
		}
	}
	for _, c := range s.admin {
		c.Close()
	}
	for _, d := range s.usersDir {
		files, _ := filepath.Glob(filepath.Join(d, s.db+"*"))
		for _, f := range files {
			_ = os.Remove(f)
		}
	}
	if c, err := kafka.Dial("tcp", clBrokers[0]); err == nil {
		if ctl, err := c.Controller(); err == nil {
			if cc, err := kafka.Dial("tcp", net.JoinHostPort(ctl.Host, fmt.Sprint(ctl.Port))); err == nil {
				_ = cc.DeleteTopics(s.raw, s.dlq, s.db+".releases", s.db+".audit")
				cc.Close()
			}
		}
		c.Close()
	}
}

// ---- what every node holds ----

// clTables lists, on one node, every table of every Shukei database (<db> and <db>_*) that a
// count can read — every engine but views and Kafka, so the Distributed <table>_all and the
// views' .inner tables are in — with its columns, from that node's system.tables and
// system.columns.
func (s *clStack) clTables(node string) ([]drTable, error) {
	c := s.admin[node]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := c.Query(ctx, "SELECT database, name, engine FROM system.tables WHERE database = ? OR startsWith(database, ?)", s.db, s.db+"_")
	if err != nil {
		return nil, err
	}
	byName := map[string]*drTable{}
	var out []*drTable
	for rows.Next() {
		var tb drTable
		if err := rows.Scan(&tb.db, &tb.name, &tb.engine); err != nil {
			rows.Close()
			return nil, err
		}
		switch tb.engine {
		case "View", "MaterializedView", "Kafka", "Null", "Dictionary", "LiveView":
			continue
		}
		tb.cols = map[string]string{}
		p := &tb
		byName[tb.db+"\x00"+tb.name] = p
		out = append(out, p)
	}
	rows.Close()
	rows, err = c.Query(ctx, "SELECT database, table, name, type FROM system.columns WHERE database = ? OR startsWith(database, ?)", s.db, s.db+"_")
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var d, tbl, name, typ string
		if err := rows.Scan(&d, &tbl, &name, &typ); err != nil {
			rows.Close()
			return nil, err
		}
		if p := byName[d+"\x00"+tbl]; p != nil {
			p.cols[name] = typ
		}
	}
	rows.Close()
	res := make([]drTable, 0, len(out))
	for _, p := range out {
		res = append(res, *p)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].String() < res[j].String() })
	return res, nil
}

func (s *clStack) isAuditLog(tb drTable) bool {
	return tb.name == "audit_log" || tb.name == "audit_log_all" || strings.HasPrefix(tb.name, "audit_log") && tb.db == s.db+"_audit"
}

// tenantOnNode counts, on one node, every table's rows of the tenant (the audit log excepted):
// rows whose tenant_id is the tenant, and rows naming it in any string column (a row of the
// tenant whose tenant column is named otherwise). The Distributed tables are read too (each
// through its shards). table → rows; errs lists tables that could not be read.
func (s *clStack) tenantOnNode(node, tenant string) (map[string]uint64, []string) {
	found := map[string]uint64{}
	tbs, err := s.clTables(node)
	if err != nil {
		return nil, []string{fmt.Sprintf("%s: list the tables: %v", node, err)}
	}
	var errs []string
	for _, tb := range tbs {
		if s.isAuditLog(tb) {
			continue
		}
		var conds []string
		if _, ok := tb.cols["tenant_id"]; ok {
			conds = append(conds, "toString(tenant_id) = '"+tenant+"'")
		}
		for c, typ := range tb.cols {
			if !strings.Contains(typ, "String") || strings.Contains(typ, "AggregateFunction") {
				continue
			}
			if strings.HasPrefix(typ, "Array(") {
				conds = append(conds, fmt.Sprintf("arrayExists(x -> position(toString(x), '%s') > 0, %s)", tenant, quoteIdent(c)))
			} else {
				conds = append(conds, fmt.Sprintf("position(toString(%s), '%s') > 0", quoteIdent(c), tenant))
			}
		}
		if len(conds) == 0 {
			continue
		}
		var n uint64
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := s.admin[node].QueryRow(ctx, "SELECT count() FROM "+tb.ident()+" WHERE "+strings.Join(conds, " OR ")).Scan(&n)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %s: %s", node, tb, short(err)))
			continue
		}
		if n > 0 {
			found[tb.String()] = n
		}
	}
	return found, errs
}

// tenantEverywhere is tenantOnNode on every node: node → table → rows (nodes holding some).
func (s *clStack) tenantEverywhere(tenant string) (map[string]map[string]uint64, []string) {
	out := map[string]map[string]uint64{}
	var errs []string
	for _, n := range clNodes {
		f, e := s.tenantOnNode(n.name, tenant)
		errs = append(errs, e...)
		if len(f) > 0 {
			out[n.name] = f
		}
	}
	return out, errs
}

func clFmt(m map[string]map[string]uint64) string {
	var parts []string
	for _, n := range sortedKeys(m) {
		var ts []string
		for _, tb := range sortedKeys(m[n]) {
			ts = append(ts, fmt.Sprintf("%s=%d", tb, m[n][tb]))
		}
		parts = append(parts, n+": "+strings.Join(ts, " "))
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, "; ")
}

// localEvents is how many events of the tenant each node's own event store (<db>.events, not
// the Distributed table) holds.
func (s *clStack) localEvents(tenant string) map[string]uint64 {
	out := map[string]uint64{}
	for _, n := range clNodes {
		var c uint64
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := s.admin[n.name].QueryRow(ctx, "SELECT count() FROM "+quoteIdent(s.db)+".events WHERE toString(tenant_id) = ?", tenant).Scan(&c)
		cancel()
		if err == nil {
			out[n.name] = c
		}
	}
	return out
}

// shardOf is the shard (shard_num, 1-based) ClickHouse's cityHash64 places a tenant on, by the
// rule docs/CLUSTER.md states (cityHash64(tenant_id) % shards).
func (s *clStack) shardOf(tenant string) int {
	s.t.Helper()
	var h uint64
	if err := s.admin["ch-s1r1"].QueryRow(context.Background(), "SELECT toUInt64(cityHash64(?) % 2)", tenant).Scan(&h); err != nil {
		s.t.Fatal(err)
	}
	return int(h) + 1
}

// ---- deletion with a replica away ----

// clDeleteLimit bounds one 'shukei tenants delete': docs/CLUSTER.md says a replica that does
// not answer is waited for up to 2 minutes, then the deletion fails; every node these tests stop
// is back within seconds, so a deletion still running 135 s after it began hangs.
const clDeleteLimit = 135 * time.Second

type clDeletion struct {
	out  string
	err  error
	took time.Duration
	done chan struct{}
}

func (s *clStack) deleteTenant(tenant string) *clDeletion {
	d := &clDeletion{done: make(chan struct{})}
	o := s.addOutput("shukei tenants delete --tenant " + tenant)
	go func() {
		defer close(d.done)
		ctx, cancel := context.WithTimeout(context.Background(), clDeleteLimit)
		defer cancel()
		cmd := exec.CommandContext(ctx, s.bin, "tenants", "delete", "--tenant", tenant, "--reason", "attack promise 19")
		// Its debug lines say what it waits for when it hangs.
		cmd.Dir, cmd.Env = s.dir, append(append([]string(nil), s.env...), "SHUKEI_LOG_LEVEL=debug")
		cmd.Stdout, cmd.Stderr = o, o
		began := time.Now()
		d.err = cmd.Run()
		d.took = time.Since(began)
		d.out = o.String()
	}()
	return d
}

// clScenario is what happens to a replica of the victim's shard around its deletion.
type clScenario struct {
	name   string
	shard  int
	node   string // the replica of that shard the scenario stops or kills
	before string // "stop-node" / "kill-node" before the deletion starts, or ""
	during string // "stop-node" / "kill-node" this long into the deletion (with at)
	at     time.Duration
	away   time.Duration // how long the node stays away before start-node
	after  string        // "kill-node" the moment the deletion returned, then start-node
}

// TestClusterDeletionOnEveryReplica: a bystander and one victim per scenario on each shard,
// their events flowing into the raw topic all along (a deleted tenant's senders do not know),
// one processor running; each victim is deleted with 'shukei tenants delete' while a replica
// of its shard is stopped before the deletion, SIGKILLed during it, stopped during it, or
// SIGKILLed the moment it returned, and started again. The moment each deletion returns (the
// node it stopped back), and again at the end after the pipeline settled, every table of every
// Shukei database on each of the four nodes — local tables, Distributed tables, marts — is
// counted for the victim.
func TestClusterDeletionOnEveryReplica(t *testing.T) {
	s := newClStack(t)
	sfx := drLetters(5)
	scenarios := []clScenario{
		{name: "first replica of shard 1 stopped before, started during", shard: 1, node: "ch-s1r1", before: "stop-node", away: 8 * time.Second},
		{name: "second replica of shard 2 SIGKILLed during", shard: 2, node: "ch-s2r2", during: "kill-node", at: 1500 * time.Millisecond, away: 8 * time.Second},
		{name: "second replica of shard 1 stopped during the wait", shard: 1, node: "ch-s1r2", during: "stop-node", at: 5 * time.Second, away: 6 * time.Second},
		{name: "first replica of shard 1 SIGKILLed the moment the deletion returned", shard: 1, node: "ch-s1r1", after: "kill-node"},
	}
	// Tenant ids (letters only) placed by the cluster's own hash: a bystander on each shard, a
	// victim per scenario on its shard.
	pick := func(prefix string, shard int) string {
		for {
			id := prefix + "-" + sfx + "-" + drLetters(4)
			if s.shardOf(id) == shard {
				return id
			}
		}
	}
	bystanders := []string{pick("clb", 1), pick("clb", 2)}
	var victims []string
	for i, sc := range scenarios {
		victims = append(victims, pick(fmt.Sprintf("clv%c", 'a'+i), sc.shard))
	}
	all := append(append([]string(nil), bystanders...), victims...)
	for _, ten := range all {
		s.cli("tenants", "add", "--tenant", ten, "--status", "contracted", "--edition", "standard", "--size-band", "s")
		s.cli("tenants", "consent", "--tenant", ten, "--purpose", "external_consented", "--version", "1")
		s.cli("tenants", "ticket", "open", "--tenant", ten, "--ticket", "CL-"+strings.ToUpper(randHex(3)), "--ttl", "2h", "--by", "attack")
	}
	prod := newDRProducer(clBrokers, s.raw)
	t.Cleanup(prod.close)
	var hist []drMsg
	for _, ten := range all {
		for k := 0; k < 48; k++ {
			hist = append(hist, prod.event(ten, k, time.Now().Add(-4*time.Minute+time.Duration(k)*5*time.Second)))
		}
	}
	if err := prod.write(hist); err != nil {
		t.Fatalf("harness: write the history to the raw topic: %v", err)
	}
	prod.run(all, 200*time.Millisecond, 2)
	proc := s.start("processor", s.envValue("SHUKEI_PROCESSOR_LISTEN"))
	s.logf("bystanders %v, victims %v", bystanders, victims)

	// Every tenant's events are on its shard's replicas before the attack begins.
	for _, ten := range all {
		shard := s.shardOf(ten)
		ok := false
		var got map[string]uint64
		for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
			got = s.localEvents(ten)
			ok = true
			for _, n := range clShardNodes[shard] {
				ok = ok && got[n] >= 40
			}
			if ok {
				break
			}
		}
		if !ok {
			t.Fatalf("harness: tenant %s's events did not reach both replicas of shard %d within 90 s: %v; processor:\n%s", ten, shard, got, tail(proc.out, 20))
		}
	}
	for i, v := range victims {
		f, _ := s.tenantEverywhere(v)
		s.logf("victim %s (shard %d) before its deletion: %s", v, scenarios[i].shard, clFmt(f))
		if len(f) == 0 {
			t.Fatalf("harness: victim %s has no rows anywhere before its deletion", v)
		}
	}

	var bad []string
	for i, sc := range scenarios {
		v := victims[i]
		s.logf("scenario %q: victim %s, node %s", sc.name, v, sc.node)
		if sc.before != "" {
			s.node(sc.before, sc.node)
			if sc.before == "kill-node" {
				// Events of the victim written while the replica is away: its peer takes them,
				// the killed replica fetches them when it is back.
				if err := prod.burst(v, 60); err != nil {
					t.Fatalf("harness: burst: %v", err)
				}
				time.Sleep(3 * time.Second)
			}
		}
		d := s.deleteTenant(v)
		if sc.before != "" {
			time.Sleep(sc.away)
			s.node("start-node", sc.node)
		}
		if sc.during != "" {
			select {
			case <-d.done:
				s.logf("information: the deletion returned (%v) before the %s at %s", d.err, sc.during, sc.at)
			case <-time.After(sc.at):
				s.node(sc.during, sc.node)
				time.Sleep(sc.away)
				s.node("start-node", sc.node)
			}
		}
		<-d.done
		s.logf("the deletion of %s returned after %s (%v): %s", v, d.took.Round(100*time.Millisecond), d.err, drLast(d.out))
		if d.err != nil {
			hang := ""
			if d.took >= clDeleteLimit-time.Second {
				hang = fmt.Sprintf(" — it had not returned after %s and was killed (docs/CLUSTER.md: a replica that does not answer is waited for up to 2 minutes, then the deletion fails)", clDeleteLimit)
			}
			bad = append(bad, fmt.Sprintf("%s: 'shukei tenants delete --tenant %s' did not succeed: %v after %s, though %s was answering again %s after the deletion began%s; its last lines:\n%s",
				sc.name, v, d.err, d.took.Round(100*time.Millisecond), sc.node, (sc.away+sc.at).Round(100*time.Millisecond), hang, tailText(d.out, 12)))
		}
		if sc.after != "" {
			s.node(sc.after, sc.node)
			time.Sleep(2 * time.Second)
			s.node("start-node", sc.node)
		}
		f, errs := s.tenantEverywhere(v)
		for _, e := range errs {
			bad = append(bad, fmt.Sprintf("%s: victim %s: a table could not be counted right after the deletion returned: %s", sc.name, v, e))
		}
		if len(f) > 0 {
			bad = append(bad, fmt.Sprintf("%s: right after 'tenants delete' returned, victim %s still has rows: %s", sc.name, v, clFmt(f)))
		}
		s.logf("victim %s right after its deletion: %s", v, clFmt(f))
	}

	// The pipeline kept working (the bystanders' events still arrive), then settles.
	for _, b := range bystanders {
		before := s.localEvents(b)
		ok := false
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && !ok; time.Sleep(time.Second) {
			now := s.localEvents(b)
			for _, n := range clShardNodes[s.shardOf(b)] {
				ok = ok || now[n] > before[n]
			}
		}
		if !ok {
			t.Errorf("harness: bystander %s's events no longer arrive after the deletions (the attack would pass because the pipeline stopped); processor:\n%s", b, tail(proc.out, 20))
		}
	}
	time.Sleep(15 * time.Second)
	prod.halt()
	time.Sleep(10 * time.Second)
	for i, v := range victims {
		f, errs := s.tenantEverywhere(v)
		for _, e := range errs {
			bad = append(bad, fmt.Sprintf("%s: victim %s: a table could not be counted at the end: %s", scenarios[i].name, v, e))
		}
		if len(f) > 0 {
			bad = append(bad, fmt.Sprintf("%s: at the end (its events kept coming, the processor ran on), victim %s has rows: %s", scenarios[i].name, v, clFmt(f)))
		}
	}
	// The bystanders are intact on both replicas of their shard.
	for _, b := range bystanders {
		ev := s.localEvents(b)
		for _, n := range clShardNodes[s.shardOf(b)] {
			if ev[n] == 0 {
				bad = append(bad, fmt.Sprintf("bystander %s has no events on %s (a deletion took more than its tenant?)", b, n))
			}
		}
	}
	if !proc.running() {
		t.Errorf("the processor exited (%v):\n%s", proc.err, tail(proc.out, 20))
	}
	reportList(t, "promise 19: once 'shukei tenants delete' has returned, no replica of any shard holds a row of the tenant (the audit log excepted)", bad)
}

// ---- least privilege on every node ----

type clUser struct {
	role, reader string
	u            chUser
}

func (s *clStack) roleUsers(purposes []string) []clUser {
	s.t.Helper()
	var out []clUser
	for _, role := range trustRoles {
		o, err := s.tryCLI(time.Minute, "users", "credentials", role)
		if err != nil {
			s.t.Fatalf("shukei users credentials %s: %v\n%s", role, err, tailText(o, 5))
		}
		for _, l := range strings.Split(o, "\n") {
			f := strings.Fields(l)
			if len(f) != 2 {
				continue
			}
			cu := clUser{role: role, u: chUser{f[0], f[1]}}
			if role == "query" {
				cu.reader = readerOf(f[0], purposes)
			}
			out = append(out, cu)
		}
	}
	return out
}

func (u clUser) label() string {
	switch {
	case u.role == "query" && u.reader != "":
		return "query reader of " + u.reader + " (" + u.u.name + ")"
	default:
		return u.role + " (" + u.u.name + ")"
	}
}

// clSignIn signs in as u on one node, trying each of the user's databases as the connection's
// default database; it waits up to wait for the node to load users.d.
func clSignIn(addr string, u chUser, dbs []string, wait time.Duration) (driver.Conn, error) {
	deadline := time.Now().Add(wait)
	for {
		var last error
		for _, db := range append(append([]string(nil), dbs...), "") {
			c, err := clOpen(addr, u.name, u.password, db)
			if err == nil {
				return c, nil
			}
			last = err
		}
		if time.Now().After(deadline) {
			return nil, last
		}
		time.Sleep(time.Second)
	}
}

// TestClusterRoleMatrixOnEveryNode: every user 'shukei users credentials <role>' prints signs
// in to each of the four nodes directly and tries, on every database of the test, SELECT on
// every table (the Distributed <table>_all included), INSERT on every table, and CREATE,
// ALTER (ADD COLUMN, UPDATE, DELETE, DROP PARTITION), OPTIMIZE, SYSTEM STOP MERGES, TRUNCATE,
// RENAME, DETACH and DROP on a scratch table; then, from each node, the cluster's own ways
// round a database's door: the remote() and cluster() table functions, merge(), a Distributed
// table, and DDL ON CLUSTER (run on every node by the distributed DDL queue) — with
// allow_ddl lifted in the query's settings, the limit promise 16 states — including a CREATE
// … AS SELECT ON CLUSTER reading another database. Everything the role's row of promise 16
// refuses must be refused, on every node.
func TestClusterRoleMatrixOnEveryNode(t *testing.T) {
	s := newClStack(t)
	purposes := policyPurposes(t)
	users := s.roleUsers(purposes)
	if len(users) == 0 {
		t.Fatalf("MISSING FEATURE: no role has ClickHouse users ('shukei users credentials')")
	}
	// Some rows to read: a tenant registered (registry, keys), a principal.
	s.cli("tenants", "add", "--tenant", "clm-"+drLetters(6), "--status", "contracted", "--edition", "standard", "--size-band", "s")

	// A replica down while 'shukei migrate' runs again (it rewrites the roles' users in every
	// node's users.d): the node comes back with whatever it then finds, and is probed below like
	// the others.
	s.node("stop-node", "ch-s2r2")
	mBegan := time.Now()
	out, err := s.tryCLI(20*time.Second, "migrate")
	s.logf("information: 'shukei migrate' with ch-s2r2 stopped returned after %s (%v): %s", time.Since(mBegan).Round(100*time.Millisecond), err, drLast(out))
	s.node("start-node", "ch-s2r2")

	// Every node holds the same databases and tables (migrate runs its DDL on every node).
	tables := map[string][]drTable{}
	var dbs []string
	for _, n := range clNodes {
		tbs, err := s.clTables(n.name)
		if err != nil {
			t.Fatalf("harness: tables of %s: %v", n.name, err)
		}
		tables[n.name] = tbs
		set := map[string]bool{}
		for _, tb := range tbs {
			set[tb.db] = true
		}
		if n.name == "ch-s1r1" {
			dbs = sortedKeys(set)
		}
	}
	if len(tables["ch-s1r1"]) != len(tables["ch-s2r2"]) {
		t.Logf("information: ch-s1r1 has %d tables, ch-s2r2 %d", len(tables["ch-s1r1"]), len(tables["ch-s2r2"]))
	}
	var distributed []drTable
	for _, tb := range tables["ch-s1r1"] {
		if tb.engine == "Distributed" {
			distributed = append(distributed, tb)
		}
	}
	if len(distributed) == 0 {
		t.Errorf("harness/CLUSTER.md: no Distributed table (<table>_all) in the test's databases on ch-s1r1")
	}
	s.logf("%d databases, %d tables on ch-s1r1 (%d Distributed), %d role users", len(dbs), len(tables["ch-s1r1"]), len(distributed), len(users))

	// The administrator's scratch table in every database, on every node (created node by
	// node: the servers have no distributed DDL queue): what the DDL statements are tried on.
	const scratch = "atk_scratch"
	mkScratch := func() {
		for _, n := range clNodes {
			for _, db := range dbs {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				t := quoteIdent(db) + "." + quoteIdent(scratch)
				_ = s.admin[n.name].Exec(ctx, "RENAME TABLE "+quoteIdent(db)+"."+quoteIdent(scratch+"_r")+" TO "+t)
				_ = s.admin[n.name].Exec(ctx, "ATTACH TABLE "+t)
				_ = s.admin[n.name].Exec(ctx, "CREATE TABLE IF NOT EXISTS "+t+" (x UInt8) ENGINE = MergeTree ORDER BY tuple()")
				_ = s.admin[n.name].Exec(ctx, "SYSTEM START MERGES "+t)
				var c uint64
				if err := s.admin[n.name].QueryRow(ctx, "SELECT count() FROM "+t).Scan(&c); err == nil && c == 0 {
					_ = s.admin[n.name].Exec(ctx, "INSERT INTO "+t+" SELECT 1")
				}
				cancel()
			}
		}
	}
	mkScratch()

	rowOf := func(u clUser) map[string]access { return matrixRow(s.db, u.role, u.reader, purposes) }
	deletes := func(row map[string]access) bool {
		for _, a := range row {
			if a == accDelete {
				return true
			}
		}
		return false
	}
	// inserts: the row says write somewhere. Promise 16 states that such a user can lift
	// allow_ddl in a query on ClickHouse 18.16 and then run SYSTEM statements, which are not
	// scoped by database (added to the promise after this attack found it: finding 4).
	inserts := func(row map[string]access) bool {
		for _, a := range row {
			if a == accWrite {
				return true
			}
		}
		return false
	}
	// A database outside every row (no role reads principals but the query service's main
	// user; the audit log is written by no delete user): the targets of the ways round.
	secret := func(row map[string]access) []string {
		var out []string
		for _, d := range []string{s.db + "_principals", s.db + "_audit", s.db + "_keys", s.db + "_registry", s.db} {
			if row[d] == accNone {
				out = append(out, d)
			}
		}
		return out
	}
	// An allowed database and its first table (for reading "in" through the way round).
	firstTable := func(db string) (drTable, bool) {
		for _, tb := range tables["ch-s1r1"] {
			if tb.db == db && tb.engine != "Distributed" && !strings.HasPrefix(tb.name, ".inner") && tb.name != scratch {
				return tb, true
			}
		}
		return drTable{}, false
	}

	var mu sync.Mutex
	var forbidden, needed, info []string
	add := func(list *[]string, line string) {
		mu.Lock()
		*list = append(*list, line)
		mu.Unlock()
	}
	// readBy[node][row label][table] says some user of the row read the table on the node.
	readBy := map[string]map[string]map[string]bool{}
	rowLabel := func(u clUser) string {
		if u.role == "query" && u.reader != "" {
			return "query reader of " + u.reader
		}
		return u.role
	}
	for _, n := range clNodes {
		readBy[n.name] = map[string]map[string]bool{}
		for _, u := range users {
			readBy[n.name][rowLabel(u)] = map[string]bool{}
		}
	}
	lifted := func(ctx context.Context) context.Context {
		return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"allow_ddl": 1}))
	}
	var wg sync.WaitGroup
	for ni, n := range clNodes {
		wg.Add(1)
		go func(ni int, n clNode) {
			defer wg.Done()
			for ui, u := range users {
				row := rowOf(u)
				var own []string
				for d, a := range row {
					if a != accNone {
						own = append(own, d)
					}
				}
				sort.Strings(own)
				conn, err := clSignIn(n.addr, u.u, own, 40*time.Second)
				if err != nil {
					add(&needed, fmt.Sprintf("%s: %s cannot sign in within 40 s: %s", n.name, u.label(), short(err)))
					continue
				}
				run := func(q string, lift bool) error {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					if lift {
						ctx = lifted(ctx)
					}
					return conn.Exec(ctx, q)
				}
				sel := func(q string) error {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					var c uint64
					return conn.QueryRow(ctx, q).Scan(&c)
				}
				who := n.name + ": " + u.label()
				for _, tb := range tables[n.name] {
					a := row[tb.db]
					err := sel("SELECT count() FROM (SELECT * FROM " + tb.ident() + " LIMIT 1)")
					if err == nil {
						mu.Lock()
						readBy[n.name][rowLabel(u)][tb.String()] = true
						mu.Unlock()
						if a == accNone {
							add(&forbidden, fmt.Sprintf("%s: SELECT %s worked — outside its row", who, tb))
						}
					}
					if a == accRead || a == accNone {
						if err := run("INSERT INTO "+tb.ident()+" SELECT * FROM "+tb.ident()+" LIMIT 1", false); err == nil {
							add(&forbidden, fmt.Sprintf("%s: INSERT INTO %s worked — its row says %s", who, tb, a))
						}
					}
				}
				// DDL on the scratch table of every database the row does not say delete; on a
				// database it only reads or may not use, also with allow_ddl lifted in the
				// query's settings (promise 16's stated limit covers its write databases only).
				sfx := fmt.Sprintf("%d_%d", ni, ui)
				for _, db := range dbs {
					if row[db] == accDelete {
						continue
					}
					for _, kind := range ddlKinds {
						if deletes(row) && kind == "system_stop_merges" {
							continue // promise 16's stated limit: SYSTEM is not scoped by database
						}
						q := ddlStatement(kind, db, scratch, sfx)
						for _, lift := range []bool{false, true} {
							if lift && row[db] == accWrite {
								continue
							}
							if lift && kind == "system_stop_merges" && inserts(row) {
								continue // promise 16's stated limit: SYSTEM with allow_ddl lifted
							}
							if err := run(q, lift); err == nil {
								how := ""
								if lift {
									how = " (allow_ddl = 1 in the query's settings)"
								}
								add(&forbidden, fmt.Sprintf("%s: %s on %s worked%s — its row says %s", who, strings.ToUpper(kind), db, how, row[db]))
								mu.Lock()
								mkScratchNode(s, n.name, db, scratch, sfx)
								mu.Unlock()
								break
							}
						}
					}
				}
				if !deletes(row) {
					if err := run(globalSystem, false); err == nil {
						add(&forbidden, fmt.Sprintf("%s: %q worked (SYSTEM on no database)", who, globalSystem))
					}
				}
				// The ways round, into each database outside the row.
				for _, target := range secret(row) {
					tb, ok := firstTable(target)
					if !ok {
						continue
					}
					peer := clNodes[(ni+1)%len(clNodes)].addr
					tries := map[string]string{
						"remote() to another node":        fmt.Sprintf("SELECT count() FROM remote('%s', %s, %s)", peer, quoteIdent(tb.db), quoteIdent(tb.name)),
						"remote() to this node":           fmt.Sprintf("SELECT count() FROM remote('%s', %s, %s)", n.addr, quoteIdent(tb.db), quoteIdent(tb.name)),
						"remote() as the role's own user": fmt.Sprintf("SELECT count() FROM remote('%s', %s, %s, '%s', '%s')", peer, quoteIdent(tb.db), quoteIdent(tb.name), u.u.name, u.u.password),
						"cluster() of the Shukei cluster": fmt.Sprintf("SELECT count() FROM cluster('%s', %s, %s)", clName, quoteIdent(tb.db), quoteIdent(tb.name)),
						"merge() over the database":       fmt.Sprintf("SELECT count() FROM merge(%s, '^%s$')", quoteIdent(tb.db), tb.name),
					}
					for _, how := range sortedKeys(tries) {
						if err := sel(tries[how]); err == nil {
							add(&forbidden, fmt.Sprintf("%s: read %s (outside its row) through %s: %s", who, tb, how, strings.Replace(tries[how], u.u.password, "<password>", 1)))
						}
					}
				}
				conn.Close()
			}
		}(ni, n)
	}
	wg.Wait()
	// What each row allows, some user of it can read on every node (else the refusals prove
	// nothing: a user missing on a node is refused everything).
	for _, n := range clNodes {
		seen := map[string]bool{}
		for _, u := range users {
			label := rowLabel(u)
			if seen[label] {
				continue
			}
			seen[label] = true
			row := rowOf(u)
			for _, tb := range tables[n.name] {
				if row[tb.db] != accNone && !readBy[n.name][label][tb.String()] {
					needed = append(needed, fmt.Sprintf("%s: no user of %s can SELECT %s (its row says %s)", n.name, label, tb, row[tb.db]))
				}
			}
		}
	}

	// From one node per user: DDL ON CLUSTER (the distributed DDL queue runs it on every node)
	// on databases outside the row or only read; a CREATE … AS SELECT ON CLUSTER into a
	// database the user writes, reading one outside its row; and a Distributed table made in
	// a database it writes, over a table outside its row. DDL in a write database is promise
	// 16's stated limit; reading another database through it is not.
	for ui, u := range users {
		row := rowOf(u)
		n := clNodes[ui%len(clNodes)]
		var own []string
		for d, a := range row {
			if a != accNone {
				own = append(own, d)
			}
		}
		sort.Strings(own)
		conn, err := clSignIn(n.addr, u.u, own, 20*time.Second)
		if err != nil {
			continue // reported above
		}
		who := n.name + ": " + u.label()
		run := func(q string, lift bool) error {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			if lift {
				ctx = lifted(ctx)
			}
			return conn.Exec(ctx, q)
		}
		sfx := fmt.Sprintf("oc_%d", ui)
		for _, db := range dbs {
			if row[db] == accDelete || row[db] == accWrite {
				continue
			}
			t := quoteIdent(db) + "." + quoteIdent(scratch)
			stmts := map[string]string{
				"ALTER DELETE ON CLUSTER":     "ALTER TABLE " + t + " ON CLUSTER " + clName + " DELETE WHERE x = 255",
				"ALTER ADD COLUMN ON CLUSTER": "ALTER TABLE " + t + " ON CLUSTER " + clName + " ADD COLUMN " + quoteIdent("y_"+sfx) + " UInt8",
				"CREATE TABLE ON CLUSTER":     "CREATE TABLE " + quoteIdent(db) + "." + quoteIdent("atk_c_"+sfx) + " ON CLUSTER " + clName + " (x UInt8) ENGINE = MergeTree ORDER BY tuple()",
				"DROP TABLE ON CLUSTER":       "DROP TABLE " + t + " ON CLUSTER " + clName,
				"TRUNCATE ON CLUSTER":         "TRUNCATE TABLE " + t + " ON CLUSTER " + clName,
				"OPTIMIZE ON CLUSTER":         "OPTIMIZE TABLE " + t + " ON CLUSTER " + clName,
				"RENAME ON CLUSTER":           "RENAME TABLE " + t + " TO " + quoteIdent(db) + "." + quoteIdent(scratch+"_r") + " ON CLUSTER " + clName,
			}
			for _, what := range sortedKeys(stmts) {
				for _, lift := range []bool{false, true} {
					if err := run(stmts[what], lift); err == nil {
						add(&forbidden, fmt.Sprintf("%s: %s on %s worked (allow_ddl lifted: %v) — its row says %s: %s", who, what, db, lift, row[db], stmts[what]))
						mkScratch()
						break
					}
				}
			}
		}
		var writable []string
		for _, d := range sortedKeys(row) {
			if row[d] == accWrite || row[d] == accDelete {
				writable = append(writable, d)
			}
		}
		if len(writable) == 0 {
			conn.Close()
			continue
		}
		for _, target := range secret(row) {
			tb, ok := firstTable(target)
			if !ok {
				continue
			}
			base := strings.TrimPrefix(strings.TrimPrefix(target, s.db), "_")
			if base == "" {
				base = "store"
			}
			steal := quoteIdent(writable[0]) + "." + quoteIdent("atk_steal_"+sfx+"_"+base)
			dist := quoteIdent(writable[0]) + "." + quoteIdent("atk_dist_"+sfx+"_"+base)
			tries := []struct{ what, q string }{
				{"CREATE … AS SELECT ON CLUSTER", "CREATE TABLE " + steal + " ON CLUSTER " + clName + " ENGINE = Log AS SELECT * FROM " + tb.ident()},
				{"a Distributed table of its own", fmt.Sprintf("CREATE TABLE %s (dummy UInt8) ENGINE = Distributed(%s, %s, %s)", dist, clName, quoteIdent(tb.db), quoteIdent(tb.name))},
			}
			for _, tr := range tries {
				var err error
				for _, lift := range []bool{false, true} {
					if err = run(tr.q, lift); err == nil {
						break
					}
				}
				if err != nil {
					add(&info, fmt.Sprintf("%s: %s over %s refused: %s", who, tr.what, tb, short(err)))
					continue
				}
				var c uint64
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				name := steal
				if strings.HasPrefix(tr.what, "a Distributed") {
					name = dist
				}
				rerr := conn.QueryRow(ctx, "SELECT count() FROM "+name).Scan(&c)
				cancel()
				if rerr == nil {
					add(&forbidden, fmt.Sprintf("%s: read %s (outside its row, %d rows) through %s in %s: %s", who, tb, c, tr.what, writable[0], tr.q))
				} else {
					add(&info, fmt.Sprintf("%s: %s over %s was created, reading it failed: %s", who, tr.what, tb, short(rerr)))
				}
			}
		}
		conn.Close()
	}
	for _, l := range info {
		t.Log("information: " + l)
	}
	sort.Strings(forbidden)
	sort.Strings(needed)
	// Reported by the way the door was passed, each list with a count by role user and kind.
	groups := map[string][]string{}
	for _, f := range forbidden {
		g := "directly, as promise 16's single-server attack tries it"
		switch {
		case strings.Contains(f, " ON CLUSTER ") && strings.Contains(f, "allow_ddl lifted"):
			g = "with DDL ON CLUSTER (run on every node by the distributed DDL queue)"
		case strings.Contains(f, " through "):
			g = "through another node, a table function or a table of its own (remote(), cluster(), merge(), Distributed, CREATE … AS SELECT ON CLUSTER)"
		case strings.Contains(f, "allow_ddl = 1"):
			g = "with allow_ddl = 1 in the query's settings, on a database its row does not say write or delete (promise 16's stated limit covers its write databases only)"
		}
		groups[g] = append(groups[g], f)
	}
	for _, g := range sortedKeys(groups) {
		counts := map[string]int{}
		for _, f := range groups[g] {
			who, rest, _ := strings.Cut(f, ": ")
			_ = who
			u, what, _ := strings.Cut(rest, ": ")
			kind := what
			if i := strings.Index(what, " worked"); i > 0 {
				kind = what[:i]
			}
			if i := strings.Index(kind, " on "); i > 0 {
				kind = kind[:i]
			}
			if i := strings.Index(what, " through "); i > 0 {
				kind = "read through " + strings.SplitN(what[i+len(" through "):], ":", 2)[0]
			}
			counts[u+": "+strings.ReplaceAll(kind, s.db, "<db>")]++
		}
		// One example of every user and kind first, then the rest.
		first := map[string]bool{}
		var lead, rest []string
		for _, f := range groups[g] {
			_, r, _ := strings.Cut(f, ": ")
			u, what, _ := strings.Cut(r, ": ")
			key := u + what[:min(len(what), 40)]
			if i := strings.Index(what, " through "); i > 0 {
				key = u + what[i:min(len(what), i+30)]
			}
			if !first[key] {
				first[key] = true
				lead = append(lead, f)
			} else {
				rest = append(rest, f)
			}
		}
		groups[g] = append(lead, rest...)
		var head []string
		for _, k := range sortedKeys(counts) {
			head = append(head, fmt.Sprintf("[%d×] %s", counts[k], k))
		}
		head = append(head, "— the first of them:")
		reportList(t, "promise 19: a role's user passed a door promise 16's matrix shuts, "+g, groups[g], head...)
	}
	reportList(t, "harness/CLUSTER.md: each role's users exist on every node and reach what their row allows (else the refusals above prove nothing)", needed)
}

// mkScratchNode puts one node's scratch table of db back after a statement that should have
// been refused changed it.
func mkScratchNode(s *clStack, node, db, scratch, sfx string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.admin[node]
	t := quoteIdent(db) + "." + quoteIdent(scratch)
	_ = c.Exec(ctx, "DROP TABLE IF EXISTS "+quoteIdent(db)+"."+quoteIdent("trust_c_"+sfx))
	_ = c.Exec(ctx, "RENAME TABLE "+quoteIdent(db)+"."+quoteIdent(scratch+"_r")+" TO "+t)
	_ = c.Exec(ctx, "ATTACH TABLE "+t)
	_ = c.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+t+" (x UInt8) ENGINE = MergeTree ORDER BY tuple()")
	_ = c.Exec(ctx, "SYSTEM START MERGES "+t)
}
