//go:build cluster

package attack

// Promise 16's cluster sentence and docs/CLUSTER.md, "Nodes talk to each other as a user of their
// own" (brief: CLUSTER-INTERNAL.md): a Distributed table's query reaches the other shards as the
// internal user remote_servers names (shukei_cluster, read-only, allowed only the sharded
// tables' databases), the administrator has a generated password, and so no role's ClickHouse
// user, on any node, by any route through another node, reads anything of the registry, keys,
// principals, audit log, break-glass, aggregator state or releases its row of promise 16 does
// not allow — a write user's residue being the event store and the purpose marts — and nothing a
// role sends through another node can write anywhere.
//
// Written from the promises, the README, docs/, scripts/*.sh, internal/servicetest and the
// attack harness alone: nothing under pipeline/, retention/, migrations/, registry/,
// aggregator/, query/, ops/, databases/, gate/, faults/, anonymizer/, event/, policy/, config/
// or cmd/ was read. What the test knows of the tables comes from each node's system tables, read
// as the administrator.
//
// Run: scripts/services.sh up --cluster, then
//
//	CI=true SHUKEI_TEST_REQUIRE_SERVICES=1 go test -count=1 -timeout 20m -tags cluster -run TestClusterInternalUser -v ./attack/

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// The cluster of scripts/cluster.sh: its internal user, and each node's HTTP and interserver
// ports (18200+i, 19110+i) and shard.
const ciInternalUser = "shukei_cluster"

var (
	ciHTTPPort        = map[string]int{"ch-s1r1": 18200, "ch-s1r2": 18201, "ch-s2r1": 18202, "ch-s2r2": 18203}
	ciInterserverPort = map[string]int{"ch-s1r1": 19110, "ch-s1r2": 19111, "ch-s2r1": 19112, "ch-s2r2": 19113}
	ciShard           = map[string]int{"ch-s1r1": 1, "ch-s1r2": 1, "ch-s2r1": 2, "ch-s2r2": 2}
)

// sqlStr is a ClickHouse string literal.
func sqlStr(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// ciTarget is one table an attacker aims at: its string columns (where the administrator planted
// the marker), the columns an object of the attacker's own declares to read it, and whether its
// database is one of the sharded ones (the internal user's).
type ciTarget struct {
	tb      drTable
	scols   []string // String-typed columns, in a stable order
	cols    []string // the columns declared on the attacker's own objects
	defs    string   // "`a` String, `b` UInt8"
	marker  string   // planted by the administrator, "" when none could be
	sharded bool
	allDefs string // every ordinary column (not MATERIALIZED or ALIAS): a view TO it must give them all
}

// cond is true for a row holding the marker m.
func (tg ciTarget) cond(m string) string {
	if m == "" || len(tg.scols) == 0 {
		return "0"
	}
	// The marker is planted in every string column: the first tells.
	return fmt.Sprintf("position(toString(%s), %s) > 0", quoteIdent(tg.scols[0]), sqlStr(m))
}

// concat is one string of the target's string columns (what a route that returns lines reads).
func (tg ciTarget) concat() string {
	if len(tg.scols) == 0 {
		return "toString(count())"
	}
	var c []string
	for _, col := range tg.scols {
		c = append(c, "toString("+quoteIdent(col)+")")
	}
	if len(c) == 1 {
		return c[0]
	}
	return "concat(" + strings.Join(c, ", '|', ") + ")"
}

func ciSimpleType(typ string) bool {
	return !strings.Contains(typ, "AggregateFunction") && !strings.HasPrefix(typ, "Nested")
}

func ciStringType(typ string) bool {
	switch typ {
	case "String", "Nullable(String)", "LowCardinality(String)", "LowCardinality(Nullable(String))":
		return true
	}
	return false
}

func newCITarget(tb drTable, sharded bool) ciTarget {
	tg := ciTarget{tb: tb, sharded: sharded}
	for _, c := range sortedKeys(tb.cols) {
		if ciStringType(tb.cols[c]) {
			tg.scols = append(tg.scols, c)
		}
	}
	tg.cols = tg.scols
	if len(tg.cols) == 0 {
		for _, c := range sortedKeys(tb.cols) {
			if ciSimpleType(tb.cols[c]) {
				tg.cols = []string{c}
				break
			}
		}
	}
	var d []string
	for _, c := range tg.cols {
		d = append(d, quoteIdent(c)+" "+tb.cols[c])
	}
	tg.defs = strings.Join(d, ", ")
	return tg
}

// ciSent records every statement the test sends (who sent it, when, whether it has returned), so
// that a node that dies while the attack runs can be reported with what was in flight.
var ciSent = struct {
	sync.Mutex
	seq    int
	label  map[driver.Conn]string
	flight map[int]ciStmt
	recent []ciStmt
}{label: map[driver.Conn]string{}, flight: map[int]ciStmt{}}

type ciStmt struct {
	at     time.Time
	who, q string
}

func ciLabel(conn driver.Conn, who string) {
	ciSent.Lock()
	ciSent.label[conn] = who
	ciSent.Unlock()
}

func ciSend(conn driver.Conn, q string) func() {
	ciSent.Lock()
	ciSent.seq++
	id := ciSent.seq
	st := ciStmt{at: time.Now(), who: ciSent.label[conn], q: q}
	if st.who == "" {
		st.who = "the administrator"
	}
	ciSent.flight[id] = st
	ciSent.recent = append(ciSent.recent, st)
	if len(ciSent.recent) > 2000 {
		ciSent.recent = ciSent.recent[len(ciSent.recent)-1000:]
	}
	ciSent.Unlock()
	return func() {
		ciSent.Lock()
		delete(ciSent.flight, id)
		ciSent.Unlock()
	}
}

// ciWatch watches every ClickHouse node's process (its pid file) while the attack runs. A node
// that dies is reported with the statements in flight and those sent in the 3 s before, and is
// started again (scripts/services.sh start-node, as the harness does), so the shared cluster is
// whole when the test ends.
func (s *clStack) ciWatch(chDir string, onDeath func(node, report string)) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	alive := func(node string) bool {
		b, err := os.ReadFile(filepath.Join(chDir, node, "pid"))
		if err != nil {
			return true // not known: not judged
		}
		var pid int
		if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &pid); err != nil || pid <= 0 {
			return true
		}
		return syscall.Kill(pid, 0) == nil
	}
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(300 * time.Millisecond):
			}
			for _, n := range clNodes {
				if alive(n.name) {
					continue
				}
				died := time.Now()
				ciSent.Lock()
				var fl, rc []string
				for _, st := range ciSent.flight {
					fl = append(fl, fmt.Sprintf("[sent %s before] %s: %s", died.Sub(st.at).Round(time.Millisecond), st.who, st.q))
				}
				for _, st := range ciSent.recent {
					if died.Sub(st.at) < 3*time.Second {
						rc = append(rc, fmt.Sprintf("[sent %s before] %s: %s", died.Sub(st.at).Round(time.Millisecond), st.who, st.q))
					}
				}
				ciSent.Unlock()
				sort.Strings(fl)
				report := fmt.Sprintf("%s died (its process is gone) at %s; statements in flight (%d): %s; sent in the 3 s before (%d, last 40): %s",
					n.name, died.Format("15:04:05.000"), len(fl), strings.Join(fl, " || "), len(rc), strings.Join(rc[max(0, len(rc)-40):], " || "))
				cmd := exec.Command(filepath.Join(s.root, "scripts", "services.sh"), "start-node", n.name)
				cmd.Dir = s.root
				out, err := cmd.CombinedOutput()
				if err != nil {
					report += fmt.Sprintf("; start-node failed: %v: %s", err, out)
				} else {
					report += "; started again (scripts/services.sh start-node)"
				}
				onDeath(n.name, report)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
		})
	}
}

// ciQuery runs a query returning two counts (rows, rows holding the marker).
func ciQuery(conn driver.Conn, q string, timeout time.Duration) (uint64, uint64, error) {
	defer ciSend(conn, q)()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var a, b uint64
	err := conn.QueryRow(ctx, q).Scan(&a, &b)
	return a, b, err
}

// ciLines runs a query returning one String column.
func ciLines(conn driver.Conn, q string, timeout time.Duration) ([]string, error) {
	defer ciSend(conn, q)()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return out, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// ciExec runs a statement; lift sends allow_ddl = 1 in the query's settings (promise 16's stated
// limit), and the setting 18.16 wants for LowCardinality columns.
func ciExec(conn driver.Conn, q string, lift bool, timeout time.Duration) error {
	defer ciSend(conn, q)()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if lift {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"allow_ddl": 1, "allow_experimental_low_cardinality_type": 1}))
	}
	return conn.Exec(ctx, q)
}

// What counts as the part's bytes having come back (a route that returns lines of a binary
// stream): rows, or a parse error, which quotes what it could not parse.
func ciDataCameBack(err error) bool {
	if err == nil {
		return true
	}
	e := strings.ToLower(err.Error())
	if strings.Contains(e, "http status code") || strings.Contains(e, "connection refused") || strings.Contains(e, "timeout") || strings.Contains(e, "no such file") || strings.Contains(e, "doesn't exist") || strings.Contains(e, "not inside") || strings.Contains(e, "permission denied") || strings.Contains(e, "access denied") {
		return false
	}
	return strings.Contains(e, "cannot parse") || strings.Contains(e, "parsed text") || strings.Contains(e, "row 1:") || strings.Contains(e, "expected end of line")
}

// errTolerant lets a line format skip what it cannot parse (a binary body read as lines).
const errTolerant = " SETTINGS input_format_allow_errors_num = 1000000000, input_format_allow_errors_ratio = 1"

// ciReport gathers the outcome: violations by group (each with the route it took and who took
// it), and information (refusals counted by route, the first few kept with their error).
type ciReport struct {
	mu        sync.Mutex
	violation map[string][]ciFinding
	refused   map[string]int
	example   map[string][]string
	timeouts  map[string]int
	info      []string
}

type ciFinding struct{ route, who, line string }

func newCIReport() *ciReport {
	return &ciReport{violation: map[string][]ciFinding{}, refused: map[string]int{}, example: map[string][]string{}, timeouts: map[string]int{}}
}

func (r *ciReport) bad(group, route, who, line string) {
	r.mu.Lock()
	r.violation[group] = append(r.violation[group], ciFinding{route: route, who: who, line: line})
	r.mu.Unlock()
}

func (r *ciReport) note(line string) {
	r.mu.Lock()
	r.info = append(r.info, line)
	r.mu.Unlock()
}

// A route whose statements time out twice is not tried again (the run stays bounded); that it
// hung is recorded.
func (r *ciReport) slow(route string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.timeouts[route] >= 2
}

// refusal records a statement refused: who, the error, the statement (cut).
func (r *ciReport) refusal(route, line string) {
	r.mu.Lock()
	if strings.Contains(line, "deadline exceeded") || strings.Contains(strings.ToLower(line), "timeout") {
		r.timeouts[route]++
	}
	r.refused[route]++
	if len(r.example[route]) < 2 {
		r.example[route] = append(r.example[route], line)
	}
	r.mu.Unlock()
}

// ciRouteKind is a route without the nodes' names (for the summary).
func ciRouteKind(route string) string {
	route = regexp.MustCompile(`ch-s[12]r[12]'s`).ReplaceAllString(route, "a node's")
	route = regexp.MustCompile(`\(\d of 4 made\)`).ReplaceAllString(route, "")
	if i := strings.Index(route, " (the part's bytes came back"); i > 0 {
		route = route[:i]
	}
	return strings.Join(strings.Fields(route), " ")
}

// ciRefused is one refusal: who, ClickHouse's error, the statement (cut).
func ciRefused(who, q string, err error) string {
	if len(q) > 260 {
		q = q[:260] + "…"
	}
	return who + ": " + short(err) + " — " + q
}

// The groups a violation is reported in.
const (
	grpThrough = "read through another node (remote(), cluster(), url() to a node's HTTP or interserver port, a Distributed table or an object of its own that another node runs as the internal user)"
	grpLocal   = "read on the node itself through an object or table function of its own (Merge, materialized view TO, Buffer, view, CREATE … AS SELECT, merge(), file() of the table's data)"
	grpSecret  = "the internal user's or the administrator's password reached a role user"
	grpWrite   = "written where its row does not say write, or through another node at all"
	grpHarness = "harness: every role user signs in on every node (else its refusals prove nothing)"
)

// TestClusterInternalUser: every user 'shukei users credentials <role>' prints, on every node,
// tries every route through another node into every database its row of promise 16 does not
// name — remote() and remoteSecure() with no user, as default and as the internal user with
// guessed passwords, cluster() with prefer_localhost_replica = 0, url() to the nodes' HTTP and
// interserver ports, file() for the node's configuration and a forbidden table's data, merge();
// and, with allow_ddl lifted (promise 16's stated limit), Distributed, Merge, Buffer, view and
// materialized-view objects of its own, on one node and on every node, read with every setting a
// user may send, IN/GLOBAL IN/JOIN through Distributed tables, and writes through all of them.
// The real storage of every node is read afterwards for what was written.
func TestClusterInternalUser(t *testing.T) {
	began := time.Now()
	s := newClStack(t)
	purposes := policyPurposes(t)
	users := s.roleUsers(purposes)
	if len(users) == 0 {
		t.Fatalf("MISSING FEATURE: no role has ClickHouse users ('shukei users credentials')")
	}
	// Rows the product itself writes: a tenant (the registry, its key), a principal.
	s.cli("tenants", "add", "--tenant", "cli-"+drLetters(6), "--status", "contracted", "--edition", "standard", "--size-band", "s")
	if out, err := s.tryCLI(time.Minute, "principals", "add", "--id", "atk-"+drLetters(5), "--kind", "employee", "--purposes", "marketing"); err != nil {
		s.logf("information: 'shukei principals add' failed (%v): %s", err, drLast(out))
	}
	rep := newCIReport()
	for _, n := range clNodes {
		ciLabel(s.admin[n.name], n.name+": the administrator")
	}
	// A node that dies while the attack runs is reported and started again.
	var chDirW string
	if b, err := os.ReadFile(filepath.Join(s.root, ".services", "cluster", "clickhouse.dir")); err == nil {
		chDirW = strings.TrimSpace(string(b))
	}
	var deaths []string
	var deathMu sync.Mutex
	stopWatch := s.ciWatch(chDirW, func(node, report string) {
		deathMu.Lock()
		deaths = append(deaths, report)
		deathMu.Unlock()
		s.logf("NODE DIED: %s", report)
	})
	t.Cleanup(stopWatch)

	// ---- what every node holds, as the administrator finds it ----
	tables := map[string][]drTable{}
	for _, n := range clNodes {
		tbs, err := s.clTables(n.name)
		if err != nil {
			t.Fatalf("harness: tables of %s: %v", n.name, err)
		}
		tables[n.name] = tbs
	}
	dbSet := map[string]bool{}
	sharded := map[string]bool{} // databases holding a Distributed <table>_all
	distOf := map[string]string{}
	for _, tb := range tables["ch-s1r1"] {
		dbSet[tb.db] = true
		if tb.engine == "Distributed" {
			sharded[tb.db] = true
			distOf[tb.db+"."+strings.TrimSuffix(tb.name, "_all")] = tb.name
		}
	}
	dbs := sortedKeys(dbSet)
	if len(sharded) == 0 {
		t.Fatalf("harness/CLUSTER.md: no Distributed table (<table>_all) in the stack's databases")
	}
	s.logf("%d databases (%d sharded: %v), %d tables on ch-s1r1, %d role users", len(dbs), len(sharded), sortedKeys(sharded), len(tables["ch-s1r1"]), len(users))
	stored := func(tb drTable) bool {
		return tb.engine != "Distributed" && !strings.HasPrefix(tb.name, ".inner") && !strings.HasPrefix(tb.name, "atk_") &&
			(strings.Contains(tb.engine, "MergeTree") || tb.engine == "Log" || tb.engine == "TinyLog" || tb.engine == "StripeLog")
	}

	// ---- markers: one per database, in every String column of every stored table ----
	marker := map[string]string{} // db → marker
	for _, db := range dbs {
		marker[db] = "atkmk" + drLetters(3) + randHex(5)
	}
	planted := map[string]bool{} // db.table → the marker is in it
	admin1 := s.admin["ch-s1r1"]
	for _, tb := range tables["ch-s1r1"] {
		if !stored(tb) {
			continue
		}
		tg := newCITarget(tb, sharded[tb.db])
		if len(tg.scols) == 0 {
			continue
		}
		var vals []string
		var names []string
		for _, c := range tg.scols {
			names = append(names, quoteIdent(c))
			vals = append(vals, sqlStr(marker[tb.db]))
		}
		// INSERT … SELECT: clickhouse-go's Exec of an INSERT … VALUES waits on ClickHouse 18.16.
		ins := "INSERT INTO " + tb.ident() + " (" + strings.Join(names, ", ") + ") SELECT " + strings.Join(vals, ", ")
		if sharded[tb.db] && distOf[tb.String()] != "" {
			// A sharded table: the row on each shard's own table.
			ok := true
			for _, node := range []string{"ch-s1r1", "ch-s2r1"} {
				if err := ciExec(s.admin[node], ins, false, 30*time.Second); err != nil {
					ok = false
					rep.note(fmt.Sprintf("harness: planting a row in %s on %s failed: %s", tb, node, short(err)))
				}
			}
			planted[tb.String()] = ok
			continue
		}
		if err := ciExec(admin1, ins, false, 30*time.Second); err != nil {
			rep.note(fmt.Sprintf("harness: planting the marker in %s failed: %s", tb, short(err)))
			continue
		}
		planted[tb.String()] = true
	}

	// ---- one target per database: the first table holding the marker (the sharded table for a
	// sharded database), else the first stored table ----
	targets := map[string]ciTarget{} // db → target
	for _, db := range dbs {
		var first *drTable
		for i, tb := range tables["ch-s1r1"] {
			if tb.db != db || !stored(tb) {
				continue
			}
			if first == nil {
				first = &tables["ch-s1r1"][i]
			}
			if sharded[db] && distOf[tb.String()] == "" {
				continue
			}
			if planted[tb.String()] {
				first = &tables["ch-s1r1"][i]
				break
			}
		}
		if sharded[db] && (first == nil || distOf[first.String()] == "") {
			// A sharded database's target is a sharded table, marker or not.
			for i, tb := range tables["ch-s1r1"] {
				if tb.db == db && stored(tb) && distOf[tb.String()] != "" {
					first = &tables["ch-s1r1"][i]
					break
				}
			}
		}
		if first == nil {
			rep.note("harness: no stored table in " + db)
			continue
		}
		tg := newCITarget(*first, sharded[db])
		if planted[first.String()] {
			tg.marker = marker[db]
		}
		targets[db] = tg
	}
	// Every node holds every non-sharded target's marker (replicated to every node) before the
	// attack.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		var missing []string
		for _, db := range sortedKeys(targets) {
			tg := targets[db]
			if tg.marker == "" || tg.sharded {
				continue
			}
			for _, n := range clNodes {
				_, m, err := ciQuery(s.admin[n.name], "SELECT count(), countIf("+tg.cond(tg.marker)+") FROM "+tg.tb.ident(), 20*time.Second)
				if err != nil || m == 0 {
					missing = append(missing, n.name+":"+tg.tb.String())
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			rep.note(fmt.Sprintf("harness: the marker has not reached every node after 60 s: %v", missing))
			break
		}
	}
	for _, db := range sortedKeys(targets) {
		tg := targets[db]
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		rows, err := admin1.Query(ctx, "SELECT name, type FROM system.columns WHERE database = ? AND table = ? AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')", tg.tb.db, tg.tb.name)
		if err == nil {
			var d []string
			for rows.Next() {
				var name, typ string
				if rows.Scan(&name, &typ) == nil {
					d = append(d, quoteIdent(name)+" "+typ)
				}
			}
			rows.Close()
			tg.allDefs = strings.Join(d, ", ")
			targets[db] = tg
		}
		cancel()
	}
	for _, db := range sortedKeys(targets) {
		tg := targets[db]
		s.logf("target of %s: %s (%s), marker %q, sharded %v, columns %v", db, tg.tb.name, tg.tb.engine, tg.marker, tg.sharded, tg.cols)
	}

	// Each replicated target's replica path and the part holding its marker, on every node (the
	// administrator's view: what an interserver fetch names).
	type partRef struct{ replicaPath, part string }
	parts := map[string]map[string]partRef{} // node → db → ref
	for _, n := range clNodes {
		parts[n.name] = map[string]partRef{}
		for db, tg := range targets {
			if !strings.Contains(tg.tb.engine, "Replicated") {
				continue
			}
			ls, err := ciLines(s.admin[n.name], fmt.Sprintf("SELECT replica_path FROM system.replicas WHERE database = %s AND table = %s", sqlStr(tg.tb.db), sqlStr(tg.tb.name)), 20*time.Second)
			if err != nil || len(ls) == 0 {
				continue
			}
			ref := partRef{replicaPath: ls[0]}
			// The part holding the newest block (the marker's insert, or a merge of it). Not
			// "SELECT _part … WHERE …": on ClickHouse 18.16 that statement, on a table of two
			// parts, hangs 10 s and kills the server (found by this test's first runs; see
			// CLUSTER-INTERNAL.md).
			for _, order := range []string{"max_block_number", "modification_time"} {
				if p, err := ciLines(s.admin[n.name], fmt.Sprintf("SELECT name FROM system.parts WHERE database = %s AND table = %s AND active ORDER BY %s DESC LIMIT 1", sqlStr(tg.tb.db), sqlStr(tg.tb.name), order), 20*time.Second); err == nil && len(p) > 0 {
					ref.part = p[0]
					break
				}
			}
			if ref.part != "" {
				parts[n.name][db] = ref
			}
		}
	}

	// Information: the interserver port answers anyone who reaches the host, with no credential
	// (the root of the url() route below): one GET of the audit log's part, from the test itself.
	if tg, ok := targets[s.db+"_audit"]; ok {
		if ref, ok := parts["ch-s1r2"][s.db+"_audit"]; ok {
			link := fmt.Sprintf("http://127.0.0.1:%d/?endpoint=%s&part=%s&compress=false", ciInterserverPort["ch-s1r2"], url.QueryEscape("DataPartsExchange:"+ref.replicaPath), url.QueryEscape(ref.part))
			if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(link); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				rep.note(fmt.Sprintf("interserver port, no credential: GET %s answered %s, %d bytes, the audit log's marker in them: %v", link, resp.Status, len(body), tg.marker != "" && strings.Contains(string(body), tg.marker)))
			} else {
				rep.note(fmt.Sprintf("interserver port, no credential: GET %s: %v", link, err))
			}
		}
	}

	// The node directories (for file()'s paths, relative to each node's user_files).
	var chDir, clusterDir string
	if b, err := os.ReadFile(filepath.Join(s.root, ".services", "cluster", "clickhouse.dir")); err == nil {
		chDir = strings.TrimSpace(string(b))
	}
	if d, err := filepath.EvalSymlinks(filepath.Join(s.root, ".services")); err == nil {
		clusterDir = filepath.Join(d, "cluster")
	}

	rowOf := func(u clUser) map[string]access { return matrixRow(s.db, u.role, u.reader, purposes) }
	writes := func(row map[string]access) bool {
		for _, a := range row {
			if a == accWrite {
				return true
			}
		}
		return false
	}
	// judgeRead: a route that answered. Rows of a sharded database read by a row that writes
	// somewhere are promise 16's stated residue; an answer with no row of a table that holds
	// the marker on every node read nothing of it.
	judgeRead := func(group, who string, u clUser, tg ciTarget, route, stmt string, rows, marks uint64) {
		row := rowOf(u)
		stmt = strings.ReplaceAll(stmt, u.u.password, "<its password>")
		line := fmt.Sprintf("%s: read %s (its row says %s; %d rows, %d with the marker) through %s: %s", who, tg.tb, row[tg.tb.db], rows, marks, route, stmt)
		// Through the internal user: another node runs the read as shukei_cluster (cluster(), a
		// Distributed table, what is built over one) — not a node's HTTP or interserver port, not
		// default, not a password guessed or found.
		internal := group == grpThrough && !strings.Contains(route, "url()") && !strings.Contains(route, "default") && !strings.Contains(route, "password")
		switch {
		case tg.sharded && writes(row) && internal:
			rep.note("stated residue (a write user reads a sharded table through the internal user): " + line)
		case rows == 0 && tg.marker != "" && !tg.sharded:
			rep.note("answered with no row of a table that holds the marker on every node (nothing of it read): " + line)
		default:
			rep.bad(group, ciRouteKind(route), who, line)
		}
	}
	var leakMu sync.Mutex
	leaked := map[string]string{} // user name (shukei_cluster, default) → password, found by a role user
	leakedBy := map[string]string{}

	// ---- phase A: every user on every node, the routes that need no DDL ----
	var wg sync.WaitGroup
	for ni, n := range clNodes {
		wg.Add(1)
		go func(ni int, n clNode) {
			defer wg.Done()
			peer := clNodes[(ni+1)%len(clNodes)]
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
					rep.bad(grpHarness, "sign-in", n.name+": "+u.label(), fmt.Sprintf("%s: %s cannot sign in (the refusals below would prove nothing): %s", n.name, u.label(), short(err)))
					continue
				}
				who := n.name + ": " + u.label()
				ciLabel(conn, who)
				full := ui%len(clNodes) == ni // every variant on one node per user, the main ones on all
				try := func(group, route string, tg ciTarget, q string) {
					if rep.slow(route) {
						return
					}
					rows, marks, err := ciQuery(conn, q, 15*time.Second)
					if err != nil {
						rep.refusal(route, ciRefused(who, strings.ReplaceAll(q, u.u.password, "<its password>"), err))
						return
					}
					judgeRead(group, who, u, tg, route, q, rows, marks)
				}

				// file(): the node's own files outside user_files.
				if full || ni == 0 {
					nodeDir := filepath.Join(chDir, n.name)
					uf := filepath.Join(nodeDir, "user_files")
					paths := []string{"../config.xml", "../users.xml", "../users.d/shukei-cluster-user.xml", "../users.d/" + s.db + "-cluster.xml", "../users.d/" + s.db + "-users.xml", "/etc/hostname", "../../../../../../../../etc/hostname"}
					if clusterDir != "" {
						for _, f := range []string{"internal.password", "admin.password"} {
							if rel, err := filepath.Rel(uf, filepath.Join(clusterDir, f)); err == nil {
								paths = append(paths, rel)
							}
						}
					}
					for _, p := range paths {
						q := fmt.Sprintf("SELECT s FROM file(%s, 'TabSeparated', 's String')%s", sqlStr(p), errTolerant)
						ls, err := ciLines(conn, q, 20*time.Second)
						if err != nil && !ciDataCameBack(err) {
							rep.refusal("file() of the node's own files", ciRefused(who, q, err))
							continue
						}
						body := strings.Join(ls, "\n")
						if err != nil {
							body += "\n" + err.Error()
						}
						found := false
						for _, m := range regexp.MustCompile(`<user>([^<]+)</user>\s*<password>([^<]*)</password>`).FindAllStringSubmatch(body, -1) {
							found = true
							leakMu.Lock()
							if _, ok := leaked[m[1]]; !ok {
								leaked[m[1]] = m[2]
								leakedBy[m[1]] = who + " through " + q
							}
							leakMu.Unlock()
							rep.bad(grpSecret, "file() of a configuration file", who, fmt.Sprintf("%s: the password of %s (remote_servers) read with: %s", who, m[1], q))
						}
						if strings.HasSuffix(p, ".password") && len(ls) > 0 {
							found = true
							name := ciInternalUser
							if strings.HasSuffix(p, "admin.password") {
								name = "default"
							}
							leakMu.Lock()
							if _, ok := leaked[name]; !ok {
								leaked[name] = strings.TrimSpace(ls[0])
								leakedBy[name] = who + " through " + q
							}
							leakMu.Unlock()
							rep.bad(grpSecret, "file() of a password file", who, fmt.Sprintf("%s: the password of %s read with: %s", who, name, q))
						}
						if !found {
							rep.note(fmt.Sprintf("file() outside user_files answered (%d lines, no password in them): %s: %s", len(ls), who, q))
						}
					}
				}

				for _, db := range dbs {
					tg, ok := targets[db]
					if !ok || row[db] != accNone {
						continue
					}
					sel := func(from, suffix string) string {
						return fmt.Sprintf("SELECT count(), countIf(%s) FROM %s%s", tg.cond(tg.marker), from, suffix)
					}
					dbq, tbq := sqlStr(tg.tb.db), sqlStr(tg.tb.name)
					// remote() and cluster().
					try(grpThrough, "remote() naming no user (default)", tg, sel(fmt.Sprintf("remote('%s', %s, %s)", peer.addr, dbq, tbq), ""))
					try(grpThrough, "cluster()", tg, sel(fmt.Sprintf("cluster('%s', %s, %s)", clName, dbq, tbq), ""))
					try(grpThrough, "cluster() with prefer_localhost_replica = 0", tg, sel(fmt.Sprintf("cluster('%s', %s, %s)", clName, dbq, tbq), " SETTINGS prefer_localhost_replica = 0"))
					if full {
						for _, pw := range []string{"", "default", "clickhouse"} {
							try(grpThrough, "remote() as default, a guessed password", tg, sel(fmt.Sprintf("remote('%s', %s, %s, 'default', %s)", peer.addr, dbq, tbq, sqlStr(pw)), ""))
						}
						for _, pw := range []string{"", ciInternalUser, "shukei", u.u.password} {
							try(grpThrough, "remote() as the internal user, a guessed password", tg, sel(fmt.Sprintf("remote('%s', %s, %s, '%s', %s)", peer.addr, dbq, tbq, ciInternalUser, sqlStr(pw)), ""))
						}
						try(grpThrough, "remote() to the node itself naming no user", tg, sel(fmt.Sprintf("remote('%s', %s, %s)", n.addr, dbq, tbq), ""))
						try(grpThrough, "remoteSecure() naming no user", tg, sel(fmt.Sprintf("remoteSecure('%s', %s, %s)", peer.addr, dbq, tbq), ""))
						try(grpThrough, "clusterAllReplicas()", tg, sel(fmt.Sprintf("clusterAllReplicas('%s', %s, %s)", clName, dbq, tbq), " SETTINGS prefer_localhost_replica = 0"))
						try(grpLocal, "merge()", tg, sel(fmt.Sprintf("merge(%s, %s)", dbq, sqlStr("^"+regexp.QuoteMeta(tg.tb.name)+"$")), ""))
						try(grpThrough, "cluster() with prefer_localhost_replica = 0, load_balancing = in_order, skip_unavailable_shards = 1", tg, sel(fmt.Sprintf("cluster('%s', %s, %s)", clName, dbq, tbq), " SETTINGS prefer_localhost_replica = 0, load_balancing = 'in_order', skip_unavailable_shards = 1"))
					}
					// url() to the next node's HTTP port.
					inner := fmt.Sprintf("SELECT %s FROM %s FORMAT TabSeparated", tg.concat(), tg.tb.ident())
					httpTries := map[string]string{"no user": ""}
					if full {
						httpTries["as default, a guessed password"] = "&user=default&password=default"
						httpTries["as the internal user, no password"] = "&user=" + ciInternalUser
						httpTries["as the role user itself"] = "&user=" + url.QueryEscape(u.u.name) + "&password=" + url.QueryEscape(u.u.password)
					}
					for _, how := range sortedKeys(httpTries) {
						link := fmt.Sprintf("http://127.0.0.1:%d/?query=%s%s", ciHTTPPort[peer.name], url.QueryEscape(inner), httpTries[how])
						try(grpThrough, "url() to the next node's HTTP port, "+how, tg, fmt.Sprintf("SELECT count(), countIf(position(s, %s) > 0) FROM url(%s, 'TabSeparated', 's String')", sqlStr(markerOr(tg.marker)), sqlStr(link)))
					}
					// url() to the interserver ports: a part of the target, fetched as a replica
					// would fetch it.
					ports := []clNode{peer}
					if full {
						ports = append(ports, n)
					}
					for _, to := range ports {
						ref, ok := parts[to.name][db]
						if !ok {
							continue
						}
						link := fmt.Sprintf("http://127.0.0.1:%d/?endpoint=%s&part=%s&compress=false", ciInterserverPort[to.name], url.QueryEscape("DataPartsExchange:"+ref.replicaPath), url.QueryEscape(ref.part))
						q := fmt.Sprintf("SELECT count(), countIf(position(s, %s) > 0) FROM url(%s, 'TabSeparated', 's String')%s", sqlStr(markerOr(tg.marker)), sqlStr(link), errTolerant)
						route := "url() to " + to.name + "'s interserver port (DataPartsExchange)"
						if rep.slow(route) {
							continue
						}
						rows, marks, err := ciQuery(conn, q, 15*time.Second)
						if err == nil {
							judgeRead(grpThrough, who, u, tg, route, q, rows, marks)
						} else if ciDataCameBack(err) {
							m := uint64(0)
							if tg.marker != "" && strings.Contains(err.Error(), tg.marker) {
								m = 1
							}
							judgeRead(grpThrough, who, u, tg, route+" (the part's bytes came back in a parse error: "+short(err)+")", q, 1, m)
						} else {
							rep.refusal(route, ciRefused(who, q, err))
						}
					}
					// file() of the target's data on this node.
					if ref, ok := parts[n.name][db]; ok && full && len(tg.scols) > 0 && chDir != "" {
						p := fmt.Sprintf("../data/%s/%s/%s/%s.bin", tg.tb.db, tg.tb.name, ref.part, tg.scols[0])
						q := fmt.Sprintf("SELECT count(), countIf(position(s, %s) > 0) FROM file(%s, 'TabSeparated', 's String')%s", sqlStr(markerOr(tg.marker)), sqlStr(p), errTolerant)
						rows, marks, err := ciQuery(conn, q, 20*time.Second)
						if err == nil || ciDataCameBack(err) {
							if err != nil {
								rows = 1
							}
							judgeRead(grpLocal, who, u, tg, "file() of the table's data part", q, rows, marks)
						} else {
							rep.refusal("file() of a table's data part", ciRefused(who, q, err))
						}
					}
				}
				// What the user itself can learn of the forbidden tables' replicas (information).
				if full {
					for _, db := range dbs {
						tg, ok := targets[db]
						if !ok || row[db] != accNone || !strings.Contains(tg.tb.engine, "Replicated") {
							continue
						}
						var seen []string
						if ls, err := ciLines(conn, fmt.Sprintf("SELECT replica_path FROM system.replicas WHERE database = %s AND table = %s", sqlStr(tg.tb.db), sqlStr(tg.tb.name)), 10*time.Second); err == nil && len(ls) > 0 {
							seen = append(seen, "system.replicas")
						}
						if ls, err := ciLines(conn, fmt.Sprintf("SELECT name FROM system.parts WHERE database = %s AND table = %s", sqlStr(tg.tb.db), sqlStr(tg.tb.name)), 10*time.Second); err == nil && len(ls) > 0 {
							seen = append(seen, "system.parts")
						}
						if ref, ok := parts[n.name][db]; ok {
							zk := ref.replicaPath[:max(0, strings.LastIndex(ref.replicaPath, "/replicas/"))]
							if ls, err := ciLines(conn, fmt.Sprintf("SELECT name FROM system.zookeeper WHERE path = %s", sqlStr(zk+"/replicas")), 10*time.Second); err == nil && len(ls) > 0 {
								seen = append(seen, "system.zookeeper (the replicas: "+strings.Join(ls, ", ")+")")
							}
							if ls, err := ciLines(conn, fmt.Sprintf("SELECT name FROM system.zookeeper WHERE path = %s", sqlStr(ref.replicaPath+"/parts")), 10*time.Second); err == nil && len(ls) > 0 {
								seen = append(seen, "system.zookeeper (the parts: "+strings.Join(ls, ", ")+")")
							}
						}
						if len(seen) > 0 {
							rep.note(fmt.Sprintf("discovery: %s learns %s's replica path and parts (what an interserver fetch names) from %s", who, tg.tb, strings.Join(seen, "; ")))
						}
						break // one table per user is enough to know
					}
				}
				conn.Close()
				if full {
					s.logf("phase A: %s done on %s (every variant)", u.label(), n.name)
				}
			}
		}(ni, n)
	}
	wg.Wait()
	s.logf("phase A (no DDL) done")

	// ---- phase A2: a password found is used as an attacker would ----
	if len(leaked) > 0 {
		for name, pw := range leaked {
			s.logf("a role user found the password of %s (%s): used now", name, leakedBy[name])
			for ui, u := range users {
				n := clNodes[ui%len(clNodes)]
				peer := clNodes[(ui+1)%len(clNodes)]
				row := rowOf(u)
				conn, err := clSignIn(n.addr, u.u, nil, 20*time.Second)
				if err != nil {
					continue
				}
				who := n.name + ": " + u.label()
				ciLabel(conn, who)
				for _, db := range dbs {
					tg, ok := targets[db]
					if !ok || row[db] != accNone {
						continue
					}
					q := fmt.Sprintf("SELECT count(), countIf(%s) FROM remote('%s', %s, %s, %s, %s)", tg.cond(tg.marker), peer.addr, sqlStr(tg.tb.db), sqlStr(tg.tb.name), sqlStr(name), sqlStr(pw))
					rows, marks, err := ciQuery(conn, q, 20*time.Second)
					shown := strings.ReplaceAll(q, sqlStr(pw), "'<the password found>'")
					if err != nil {
						rep.refusal("remote() with a password found by file()", ciRefused(who, shown, err))
						continue
					}
					judgeRead(grpThrough, who, u, tg, "remote() as "+name+" with the password file() found", shown, rows, marks)
				}
				conn.Close()
			}
		}
	}

	// ---- phase B: with allow_ddl lifted, objects of the user's own ----
	type wDesc struct{ who, route, line string }
	writeDesc := map[string]wDesc{} // write marker → who wrote it, by which route, into what
	var wdMu sync.Mutex
	newWriteMarker := func(ui int, parity int, desc wDesc) string {
		wdMu.Lock()
		defer wdMu.Unlock()
		for {
			m := fmt.Sprintf("atkw%02d%s", ui, randHex(4))
			if len(m)%2 != parity {
				m += "x"
			}
			if _, ok := writeDesc[m]; !ok {
				writeDesc[m] = desc
				return m
			}
		}
	}
	distSettings := []string{
		"",
		" SETTINGS prefer_localhost_replica = 0",
		" SETTINGS prefer_localhost_replica = 0, load_balancing = 'in_order'",
		" SETTINGS prefer_localhost_replica = 0, load_balancing = 'nearest_hostname'",
		" SETTINGS prefer_localhost_replica = 0, load_balancing = 'first_or_random'",
		" SETTINGS prefer_localhost_replica = 0, skip_unavailable_shards = 1",
		" SETTINGS prefer_localhost_replica = 0, max_parallel_replicas = 2",
		" SETTINGS prefer_localhost_replica = 0, distributed_product_mode = 'allow'",
		" SETTINGS prefer_localhost_replica = 1, load_balancing = 'random'",
	}
	// ownTarget: a stored table of a database the row writes (for the writes through another node
	// into what the row may write).
	ownTarget := func(row map[string]access) (ciTarget, bool) {
		for _, db := range dbs {
			if row[db] != accWrite {
				continue
			}
			if tg, ok := targets[db]; ok && len(tg.scols) > 0 {
				return tg, true
			}
		}
		return ciTarget{}, false
	}
	var wgB sync.WaitGroup
	for ui, u := range users {
		row := rowOf(u)
		var mine []string // databases it writes or deletes in: where it may try to create
		for _, db := range dbs {
			if row[db] == accWrite || row[db] == accDelete {
				mine = append(mine, db)
			}
		}
		if len(mine) == 0 {
			continue
		}
		wgB.Add(1)
		go func(ui int, u clUser, row map[string]access, mine []string) {
			defer wgB.Done()
			n := clNodes[ui%len(clNodes)]
			conns := map[string]driver.Conn{}
			for _, nn := range clNodes {
				c, err := clSignIn(nn.addr, u.u, mine, 20*time.Second)
				if err != nil {
					rep.note(fmt.Sprintf("%s: %s cannot sign in: %s", nn.name, u.label(), short(err)))
					continue
				}
				conns[nn.name] = c
				ciLabel(c, nn.name+": "+u.label())
			}
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			conn := conns[n.name]
			if conn == nil {
				return
			}
			who := n.name + ": " + u.label()
			// The first database of its row it can create a table in (allow_ddl lifted).
			var w string
			for _, db := range mine {
				probe := quoteIdent(db) + "." + quoteIdent(fmt.Sprintf("atk_probe_%d", ui))
				if err := ciExec(conn, "CREATE TABLE "+probe+" (x UInt8) ENGINE = Memory", true, 20*time.Second); err == nil {
					_ = ciExec(conn, "DROP TABLE "+probe, true, 20*time.Second)
					w = db
					break
				} else {
					rep.refusal("CREATE TABLE in a database of its row (allow_ddl lifted)", ciRefused(who, "CREATE TABLE in "+db, err))
				}
			}
			if w == "" {
				return
			}
			rep.note(fmt.Sprintf("%s creates tables in %s (allow_ddl lifted: promise 16's stated limit)", who, w))
			obj := func(kind string, i int) string {
				return quoteIdent(w) + "." + quoteIdent(fmt.Sprintf("atk_%s_%d_%d", kind, ui, i))
			}
			// over: an object of its own → the objects of its own it reads or feeds (for the report).
			over := map[string][]string{}
			// made: each object of its own → the statement that made it (allow_ddl lifted), for the
			// report.
			madeBy := map[string]string{}
			createdName := regexp.MustCompile("^CREATE (?:MATERIALIZED VIEW|TABLE|VIEW)(?: IF NOT EXISTS)? (\\S+)")
			ddl := func(c driver.Conn, where, route, q string) bool {
				if err := ciExec(c, q, true, 30*time.Second); err != nil {
					rep.refusal(route+" (creating it)", ciRefused(where, q, err))
					return false
				}
				if m := createdName.FindStringSubmatch(q); m != nil {
					if _, ok := madeBy[m[1]]; !ok {
						madeBy[m[1]] = q
					}
				}
				return true
			}
			// madeWith is how the objects a statement reads or writes were made.
			madeWith := func(names ...string) string {
				var out []string
				for _, nm := range names {
					if q, ok := madeBy[nm]; ok {
						out = append(out, q)
					}
				}
				if len(out) == 0 {
					return ""
				}
				return " [made with (allow_ddl = 1): " + strings.Join(out, "; ") + "]"
			}
			read := func(c driver.Conn, where, group, route string, tg ciTarget, from, suffix string) {
				if rep.slow(route) {
					return
				}
				q := fmt.Sprintf("SELECT count(), countIf(%s) FROM %s%s", tg.cond(tg.marker), from, suffix)
				rows, marks, err := ciQuery(c, q, 15*time.Second)
				if err != nil {
					rep.refusal(route, ciRefused(where, q, err))
					return
				}
				judgeRead(group, where, u, tg, route, q+madeWith(append([]string{from}, over[from]...)...), rows, marks)
			}
			write := func(c driver.Conn, where, route string, tg ciTarget, into string, parity int, sync bool) {
				m := newWriteMarker(ui, parity, wDesc{})
				var vals []string
				var names []string
				for _, c := range tg.scols {
					names = append(names, quoteIdent(c))
					vals = append(vals, sqlStr(m))
				}
				q := "INSERT INTO " + into + " (" + strings.Join(names, ", ") + ") SELECT " + strings.Join(vals, ", ")
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				shown := q
				if sync {
					ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
					shown += " (insert_distributed_sync = 1 in the query's settings)"
				}
				sent := ciSend(c, q)
				err := c.Exec(ctx, q)
				sent()
				wdMu.Lock()
				writeDesc[m] = wDesc{where, route, fmt.Sprintf("%s: %s into %s (its row says %s): %s%s", where, route, tg.tb, row[tg.tb.db], shown, madeWith(append([]string{into}, over[into]...)...))}
				wdMu.Unlock()
				if err != nil {
					rep.refusal(route, ciRefused(where, shown, err))
					return
				}
				rep.note(fmt.Sprintf("accepted (storage checked below): %s: %s", where, shown))
			}
			// A table of the event store it may read through (for IN and JOIN): a Distributed
			// table of a database its row reads, else one of its own over the event store.
			var evFrom string
			var evCols map[string]string
			for _, tb := range tables[n.name] {
				if tb.engine == "Distributed" && row[tb.db] != accNone {
					evFrom, evCols = tb.ident(), tb.cols
					break
				}
			}

			for i, db := range dbs {
				tg, ok := targets[db]
				if !ok || len(tg.cols) == 0 {
					continue
				}
				src := fmt.Sprintf("%s, %s", sqlStr(tg.tb.db), sqlStr(tg.tb.name))
				if row[db] == accNone {
					// A Distributed table of its own over the target, read with every setting.
					d := obj("d", i)
					if ddl(conn, who, "a Distributed table of its own", fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Distributed(%s, %s)", d, tg.defs, clName, src)) {
						for _, set := range distSettings {
							read(conn, who, grpThrough, "a Distributed table of its own"+set, tg, d, set)
						}
						if tg.sharded && evFrom == "" {
							evFrom, evCols = d, tg.tb.cols
						}
						// A Merge table over it, and a view over it.
						m := obj("md", i)
						over[m] = []string{d}
						if ddl(conn, who, "a Merge table over its own Distributed table", fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Merge(%s, %s)", m, tg.defs, sqlStr(w), sqlStr(fmt.Sprintf("^atk_d_%d_%d$", ui, i)))) {
							read(conn, who, grpThrough, "a Merge table over its own Distributed table", tg, m, " SETTINGS prefer_localhost_replica = 0")
						}
						v := obj("vd", i)
						over[v] = []string{d}
						if ddl(conn, who, "a view over its own Distributed table", fmt.Sprintf("CREATE VIEW %s AS SELECT * FROM %s", v, d)) {
							read(conn, who, grpThrough, "a view over its own Distributed table", tg, v, " SETTINGS prefer_localhost_replica = 0")
						}
					}
					// Objects on the node itself that read the target.
					mg := obj("m", i)
					if ddl(conn, who, "a Merge table of its own over the target's database", fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Merge(%s, %s)", mg, tg.defs, sqlStr(tg.tb.db), sqlStr("^"+regexp.QuoteMeta(tg.tb.name)+"$"))) {
						read(conn, who, grpLocal, "a Merge table of its own over the target's database", tg, mg, "")
					}
					nul, mv := obj("src", i), obj("mv", i)
					if ddl(conn, who, "a Null table of its own (a view's source)", fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Null", nul, tg.defs)) &&
						ddl(conn, who, "a materialized view TO the target", fmt.Sprintf("CREATE MATERIALIZED VIEW %s TO %s AS SELECT * FROM %s", mv, tg.tb.ident(), nul)) {
						read(conn, who, grpLocal, "a materialized view of its own TO the target", tg, mv, "")
					}
					bf := obj("b", i)
					if ddl(conn, who, "a Buffer table over the target", fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Buffer(%s, %s, 1, 0, 1, 1, 1000000, 1, 100000000)", bf, tg.defs, sqlStr(tg.tb.db), sqlStr(tg.tb.name))) {
						read(conn, who, grpLocal, "a Buffer table of its own over the target", tg, bf, "")
					}
					vw := obj("v", i)
					if ddl(conn, who, "a view over the target", fmt.Sprintf("CREATE VIEW %s AS SELECT * FROM %s", vw, tg.tb.ident())) {
						read(conn, who, grpLocal, "a view of its own over the target", tg, vw, "")
					}
					vc := obj("vc", i)
					if ddl(conn, who, "a view over cluster()", fmt.Sprintf("CREATE VIEW %s AS SELECT * FROM cluster(%s, %s)", vc, sqlStr(clName), src)) {
						read(conn, who, grpThrough, "a view of its own over cluster()", tg, vc, " SETTINGS prefer_localhost_replica = 0")
					}
					cp := obj("cp", i)
					if ddl(conn, who, "CREATE TABLE … ENGINE = Memory AS SELECT from the target", fmt.Sprintf("CREATE TABLE %s ENGINE = Memory AS SELECT * FROM %s", cp, tg.tb.ident())) {
						read(conn, who, grpLocal, "CREATE TABLE … AS SELECT of its own", tg, cp, "")
					}
					cpr := obj("cpr", i)
					if ddl(conn, who, "CREATE TABLE … AS SELECT from cluster()", fmt.Sprintf("CREATE TABLE %s ENGINE = Memory AS SELECT * FROM cluster(%s, %s)", cpr, sqlStr(clName), src)) {
						read(conn, who, grpThrough, "CREATE TABLE … AS SELECT of its own from cluster()", tg, cpr, "")
					}
					// The same objects on every node in its database, and a Distributed table over
					// them: the other nodes run them as the internal user.
					for _, kind := range []string{"mv", "m", "b", "v"} {
						made := 0
						for _, nn := range clNodes {
							c := conns[nn.name]
							if c == nil {
								continue
							}
							where := nn.name + ": " + u.label()
							var q []string
							name := quoteIdent(w) + "." + quoteIdent(fmt.Sprintf("atk_e%s_%d_%d", kind, ui, i))
							switch kind {
							case "mv":
								srcN := quoteIdent(w) + "." + quoteIdent(fmt.Sprintf("atk_esrc_%d_%d", ui, i))
								q = []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s) ENGINE = Null", srcN, tg.defs), fmt.Sprintf("CREATE MATERIALIZED VIEW IF NOT EXISTS %s TO %s AS SELECT * FROM %s", name, tg.tb.ident(), srcN)}
							case "m":
								q = []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s) ENGINE = Merge(%s, %s)", name, tg.defs, sqlStr(tg.tb.db), sqlStr("^"+regexp.QuoteMeta(tg.tb.name)+"$"))}
							case "b":
								q = []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s) ENGINE = Buffer(%s, %s, 1, 0, 1, 1, 1000000, 1, 100000000)", name, tg.defs, sqlStr(tg.tb.db), sqlStr(tg.tb.name))}
							case "v":
								q = []string{fmt.Sprintf("CREATE VIEW IF NOT EXISTS %s AS SELECT * FROM %s", name, tg.tb.ident())}
							}
							ok := true
							for _, st := range q {
								ok = ok && ddl(c, where, "an object of its own on every node ("+kind+")", st)
							}
							if ok {
								made++
							}
						}
						if made == 0 {
							continue
						}
						dd := obj("dd"+kind, i)
						over[dd] = []string{quoteIdent(w) + "." + quoteIdent(fmt.Sprintf("atk_e%s_%d_%d", kind, ui, i))}
						if ddl(conn, who, "a Distributed table over its objects on every node", fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Distributed(%s, %s, %s)", dd, tg.defs, clName, sqlStr(w), sqlStr(fmt.Sprintf("atk_e%s_%d_%d", kind, ui, i)))) {
							for _, set := range []string{" SETTINGS prefer_localhost_replica = 0", ""} {
								read(conn, who, grpThrough, fmt.Sprintf("a Distributed table of its own over its %s on every node (%d of 4 made)%s", map[string]string{"mv": "materialized views TO the target", "m": "Merge tables over the target", "b": "Buffer tables over the target", "v": "views over the target"}[kind], made, set), tg, dd, set)
							}
						}
					}
				}

				// Writes: where its row says only read or nothing.
				if (row[db] == accNone || row[db] == accRead) && len(tg.scols) > 0 {
					key := fmt.Sprintf("length(toString(%s))", quoteIdent(tg.scols[0]))
					dk := obj("dk", i)
					if ddl(conn, who, "a Distributed table of its own with a sharding key", fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Distributed(%s, %s, %s)", dk, tg.defs, clName, src, key)) {
						local := ciShard[n.name] - 1 // the marker's length picks the shard: even → shard 1
						write(conn, who, "INSERT into its own Distributed table, the node's own shard, synchronously", tg, dk, local, true)
						write(conn, who, "INSERT into its own Distributed table, the node's own shard, queued", tg, dk, local, false)
						write(conn, who, "INSERT into its own Distributed table, the other shard (sent as the internal user), synchronously", tg, dk, 1-local, true)
						write(conn, who, "INSERT into its own Distributed table, the other shard (sent as the internal user), queued", tg, dk, 1-local, false)
					}
					nul, mv := obj("wsrc", i), obj("wmv", i)
					srcDefs := tg.allDefs
					if srcDefs == "" {
						srcDefs = tg.defs
					}
					if ddl(conn, who, "a Null table of its own (a view's source)", fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Null", nul, srcDefs)) &&
						ddl(conn, who, "a materialized view TO the target", fmt.Sprintf("CREATE MATERIALIZED VIEW %s TO %s AS SELECT * FROM %s", mv, tg.tb.ident(), nul)) {
						over[nul] = []string{mv}
						write(conn, who, "INSERT into its own table under a materialized view TO the target", tg, nul, 0, false)
					}
					bf := obj("wb", i)
					if ddl(conn, who, "a Buffer table over the target", fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Buffer(%s, %s, 1, 0, 1, 1, 1000000, 1, 100000000)", bf, tg.defs, sqlStr(tg.tb.db), sqlStr(tg.tb.name))) {
						write(conn, who, "INSERT into its own Buffer table over the target", tg, bf, 0, false)
					}
					// INSERT INTO FUNCTION remote(), and url() to an HTTP port as default.
					write(conn, who, "INSERT INTO FUNCTION remote() naming no user", tg, fmt.Sprintf("FUNCTION remote('%s', %s)", clNodes[(ui+1)%len(clNodes)].addr, src), 0, false)
					m := newWriteMarker(ui, 0, wDesc{who, "url() GET with an INSERT", fmt.Sprintf("%s: url() GET with an INSERT into %s (its row says %s)", who, tg.tb, row[db])})
					ins := fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", tg.tb.ident(), quoteIdent(tg.scols[0]), sqlStr(m))
					for _, cred := range []string{"", "&user=default&password=default"} {
						link := fmt.Sprintf("http://127.0.0.1:%d/?query=%s%s", ciHTTPPort[clNodes[(ui+1)%len(clNodes)].name], url.QueryEscape(ins), cred)
						q := fmt.Sprintf("SELECT count(), toUInt64(0) FROM url(%s, 'TabSeparated', 's String')", sqlStr(link))
						if _, _, err := ciQuery(conn, q, 20*time.Second); err != nil {
							rep.refusal("url() GET with an INSERT", ciRefused(who, q, err))
						} else {
							rep.note(fmt.Sprintf("accepted (storage checked below): %s: %s", who, q))
						}
					}
				}
			}

			// Subqueries and joins through Distributed tables, into each non-sharded target.
			if evFrom != "" {
				for _, db := range dbs {
					tg, ok := targets[db]
					if !ok || row[db] != accNone || tg.sharded || len(tg.scols) == 0 {
						continue
					}
					c0 := quoteIdent(tg.scols[0])
					sub := fmt.Sprintf("SELECT toString(%s) FROM %s", c0, tg.tb.ident())
					qs := map[string]string{
						"GLOBAL IN through a Distributed table":                               fmt.Sprintf("SELECT count(), toUInt64(0) FROM %s WHERE %s GLOBAL IN (%s)", evFrom, sqlStr(markerOr(tg.marker)), sub),
						"IN, distributed_product_mode = allow":                                fmt.Sprintf("SELECT count(), toUInt64(0) FROM %s WHERE %s IN (%s) SETTINGS distributed_product_mode = 'allow', prefer_localhost_replica = 0", evFrom, sqlStr(markerOr(tg.marker)), sub),
						"IN, distributed_product_mode = local":                                fmt.Sprintf("SELECT count(), toUInt64(0) FROM %s WHERE %s IN (%s) SETTINGS distributed_product_mode = 'local', prefer_localhost_replica = 0", evFrom, sqlStr(markerOr(tg.marker)), sub),
						"IN, distributed_product_mode = global":                               fmt.Sprintf("SELECT count(), toUInt64(0) FROM %s WHERE %s IN (%s) SETTINGS distributed_product_mode = 'global', prefer_localhost_replica = 0", evFrom, sqlStr(markerOr(tg.marker)), sub),
						"IN over its own Distributed table, distributed_product_mode = local": fmt.Sprintf("SELECT count(), toUInt64(0) FROM %s WHERE %s IN (SELECT toString(%s) FROM %s) SETTINGS distributed_product_mode = 'local', prefer_localhost_replica = 0", evFrom, sqlStr(markerOr(tg.marker)), c0, obj("d", indexOf(dbs, db))),
					}
					var common string
					for c := range tg.tb.cols {
						if _, ok := evCols[c]; ok && (common == "" || c == "tenant_id") {
							common = c
						}
					}
					if common != "" {
						qs["JOIN through a Distributed table"] = fmt.Sprintf("SELECT count(), toUInt64(0) FROM %s ALL LEFT JOIN %s USING %s SETTINGS prefer_localhost_replica = 0", evFrom, tg.tb.ident(), quoteIdent(common))
						qs["JOIN, distributed_product_mode = allow"] = fmt.Sprintf("SELECT count(), toUInt64(0) FROM %s ALL LEFT JOIN (SELECT %s FROM %s) USING %s SETTINGS prefer_localhost_replica = 0, distributed_product_mode = 'allow'", evFrom, quoteIdent(common), tg.tb.ident(), quoteIdent(common))
						qs["GLOBAL JOIN through a Distributed table"] = fmt.Sprintf("SELECT count(), toUInt64(0) FROM %s GLOBAL ALL LEFT JOIN (SELECT %s FROM %s) USING %s", evFrom, quoteIdent(common), tg.tb.ident(), quoteIdent(common))
					}
					for _, how := range sortedKeys(qs) {
						rows, marks, err := ciQuery(conn, qs[how], 20*time.Second)
						if err != nil {
							rep.refusal(how, ciRefused(who, qs[how], err))
							continue
						}
						judgeRead(grpThrough, who, u, tg, how+" (the answer depends on the target's rows)", qs[how], max(rows, 1), marks)
					}
				}
			}

			// Writes through another node into a table its row does write: sent by the node as the
			// internal user, which is read-only.
			if tg, ok := ownTarget(row); ok {
				i := 900
				key := fmt.Sprintf("length(toString(%s))", quoteIdent(tg.scols[0]))
				dk := obj("dkown", i)
				if ddl(conn, who, "a Distributed table of its own over a table it writes", fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = Distributed(%s, %s, %s, %s)", dk, tg.defs, clName, sqlStr(tg.tb.db), sqlStr(tg.tb.name), key)) {
					other := 1 - (ciShard[n.name] - 1)
					write(conn, who, "INSERT through its own Distributed table into a table it writes, the other shard (sent as the internal user), synchronously", tg, dk, other, true)
					write(conn, who, "INSERT through its own Distributed table into a table it writes, the other shard (sent as the internal user), queued", tg, dk, other, false)
				}
			}
		}(ui, u, row, mine)
	}
	wgB.Wait()
	s.logf("phase B (objects of its own) done")

	// ---- the real storage: every stored table of every database on every node, for any write
	// marker ----
	time.Sleep(8 * time.Second)     // Buffer flushes (1 s), queued Distributed sends
	landed := map[string][]string{} // marker \x00 table → the nodes holding it
	var landedOrder []string
	for _, n := range clNodes {
		tbs, err := s.clTables(n.name)
		if err != nil {
			t.Errorf("harness: tables of %s: %v", n.name, err)
			continue
		}
		for _, tb := range tbs {
			if !stored(tb) {
				continue
			}
			tg := newCITarget(tb, sharded[tb.db])
			if len(tg.scols) == 0 {
				continue
			}
			var cs []string
			for _, c := range tg.scols {
				cs = append(cs, fmt.Sprintf("extractAll(toString(%s), 'atkw[0-9]{2}[0-9a-f]{8}x?')", quoteIdent(c)))
			}
			ls, err := ciLines(s.admin[n.name], "SELECT DISTINCT arrayJoin(arrayConcat("+strings.Join(cs, ", ")+")) FROM "+tb.ident(), 30*time.Second)
			if err != nil {
				t.Errorf("harness: reading %s on %s for the write markers: %s", tb, n.name, short(err))
				continue
			}
			for _, m := range ls {
				k := m + "\x00" + tb.String()
				if landed[k] == nil {
					landedOrder = append(landedOrder, k)
				}
				landed[k] = append(landed[k], n.name)
			}
		}
	}
	for _, k := range landedOrder {
		m, tb, _ := strings.Cut(k, "\x00")
		d, ok := writeDesc[m]
		if !ok {
			d = wDesc{"?", "a marker no route of this test wrote", "(unknown)"}
		}
		rep.bad(grpWrite, d.route, d.who, fmt.Sprintf("%s — and it landed: %s holds it on %s (marker %s)", d.line, tb, strings.Join(landed[k], ", "), m))
	}

	// ---- report ----
	stopWatch()
	reportList(t, "a ClickHouse node died while the attack ran (the statements in flight name what killed it; the node was started again)", deaths)
	for _, r := range sortedKeys(rep.refused) {
		t.Logf("information: refused %d× — %s; e.g. %s", rep.refused[r], r, strings.Join(rep.example[r], " | "))
	}
	sort.Strings(rep.info)
	for _, l := range rep.info {
		t.Log("information: " + l)
	}
	// Each group: one line per route (how many, by which users, one exact statement), then every
	// violation in the log.
	for _, g := range sortedKeys(rep.violation) {
		fs := rep.violation[g]
		sort.Slice(fs, func(i, j int) bool { return fs[i].line < fs[j].line })
		byRoute := map[string][]ciFinding{}
		for _, f := range fs {
			byRoute[f.route] = append(byRoute[f.route], f)
		}
		var lines []string
		for _, r := range sortedKeys(byRoute) {
			users := map[string]bool{}
			for _, f := range byRoute[r] {
				_, u, _ := strings.Cut(f.who, ": ")
				users[u] = true
			}
			ex := byRoute[r][0].line
			if len(ex) > 1200 {
				ex = ex[:1200] + "…"
			}
			lines = append(lines, fmt.Sprintf("[%d×] %s — by %s — e.g. %s", len(byRoute[r]), r, strings.Join(sortedKeys(users), ", "), ex))
		}
		reportList(t, fmt.Sprintf("promise 16 on a cluster (the nodes' internal user): %s — %d in all, by route", g, len(fs)), lines)
		t.Logf("every violation of %q (%d):", g, len(fs))
		for _, f := range fs {
			l := f.line
			if len(l) > 700 {
				l = l[:700] + "…"
			}
			t.Log("  " + l)
		}
	}
	s.logf("TestClusterInternalUser ran %s", time.Since(began).Round(time.Second))
}

func markerOr(m string) string {
	if m == "" {
		return "atk-no-marker-planted"
	}
	return m
}

func indexOf(xs []string, x string) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -1
}
