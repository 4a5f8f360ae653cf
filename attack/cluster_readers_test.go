//go:build cluster

package attack

// Promise 16 and 19 for the *read* users on a cluster (brief: CLUSTER-READERS.md): "On a
// ClickHouse cluster, a ClickHouse user whose row of promise 16 says *read* — the collector's
// user, every purpose reader of the query service, and every `_read` user (processor_read,
// aggregator_read, query_read, retention_read) — obtains nothing from outside its row's
// databases (no row, no value, no count) by any query it can send to any node, over the native
// protocol (port 1910x) or the HTTP interface (port 1820x), whatever settings, table functions,
// subqueries, JOINs, IN/GLOBAL IN or Distributed (`<table>_all`) tables it uses, and writes
// nothing anywhere."
//
// Written from the promises, the README, docs/, scripts/*.sh and the attack harness alone:
// nothing under pipeline/, retention/, migrations/, registry/, aggregator/, query/, ops/,
// databases/, gate/, faults/, anonymizer/, event/, policy/ or cmd/ was read. What the test knows
// of the tables comes from each node's system tables, read as the administrator.
//
// Markers: every String column of every stored table of every database of the stack holds a
// marker of its database ("atkrd…"); a tenant added and deleted with 'shukei tenants add/delete'
// is named "atkrdt…" (a value of the registry and keys). The statements a reader sends name
// only the common prefix "atkrd", never a whole marker, so a whole marker of a database outside
// the reader's row in anything that comes back (rows, an error's text, an HTTP body) came from
// that database (or from another user's statement about it).
//
// Run: scripts/services.sh up --cluster, then
//
//	SHUKEI_TEST_REQUIRE_SERVICES=1 go test -count=1 -tags cluster -run TestClusterReadUsersStayInTheirRow -v ./attack/

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

const (
	crPrefix  = "atkrd" // every read marker starts so; statements name only this
	crWPrefix = "atkwr" // what a reader tries to write
	crTimeout = 8 * time.Second
)

var crMarkerRe = regexp.MustCompile(`atkrd[a-z0-9]+`)

// crReport gathers violations by group, information lines, and refusals by route.
type crReport struct {
	mu       sync.Mutex
	bad      map[string][]string
	info     []string
	infoSeen map[string]bool
	refused  map[string]int
	answered map[string]int
	example  map[string]string
	timeouts map[string]int
}

func newCRReport() *crReport {
	return &crReport{bad: map[string][]string{}, infoSeen: map[string]bool{}, refused: map[string]int{}, answered: map[string]int{}, example: map[string]string{}, timeouts: map[string]int{}}
}

func (r *crReport) violation(group, line string) {
	r.mu.Lock()
	r.bad[group] = append(r.bad[group], line)
	r.mu.Unlock()
}

// note keeps an information line once per key.
func (r *crReport) note(key, line string) {
	r.mu.Lock()
	if !r.infoSeen[key] {
		r.infoSeen[key] = true
		r.info = append(r.info, line)
	}
	r.mu.Unlock()
}

func (r *crReport) outcome(route string, err error, line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.answered[route]++
		return
	}
	e := err.Error()
	if strings.Contains(e, "deadline exceeded") || strings.Contains(strings.ToLower(e), "timeout") {
		r.timeouts[route]++
	}
	r.refused[route]++
	if _, ok := r.example[route]; !ok {
		r.example[route] = line
	}
}

func (r *crReport) slow(route string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.timeouts[route] >= 3
}

// Violation groups.
const (
	crGrpDirect   = "read a table outside its row by naming it (SELECT, scalar/FROM subqueries, UNION, merge(), a foreign <table>_all)"
	crGrpSettings = "read outside its row after sending settings (native protocol settings, HTTP URL parameters, SETTINGS clause, SET / SET profile in an HTTP session, profile=)"
	crGrpTableFn  = "read outside its row through a table function (remote(), cluster(), url(), file(), merge(), numbers())"
	crGrpDist     = "read outside its row through a Distributed <table>_all of its own (IN / GLOBAL IN / JOIN / GLOBAL JOIN subqueries run on the other shard)"
	crGrpSystem   = "a value or count of a database outside its row through system.* (parts, columns, mutations, processes, replicas, replication_queue, zookeeper, merges …)"
	crGrpStmt     = "another user's statement on a database outside its row, with its values, in system.processes (the administrator's SELECT … WHERE col != '<marker>' in flight)"
	crGrpZK       = "a mutation's text on a table outside its row, with its values, in system.zookeeper (<zookeeper_path>/mutations: the administrator's ALTER … DELETE WHERE col = '<marker>…', and 'shukei tenants delete' naming the tenant)"
	crGrpOther    = "read outside its row by another route (HTTP external data, default database, dictionaries)"
	crGrpWrite    = "wrote (a statement accepted, or its rows or objects found on a node)"
	crGrpHarness  = "harness: every read user signs in on every node (else its refusals prove nothing)"
)

// crResult is what came back from one statement: its text (rows, tab-separated) or its error.
type crResult struct {
	text string
	err  error
}

func (r crResult) all() string {
	if r.err != nil {
		return r.text + "\n" + r.err.Error()
	}
	return r.text
}

func crDeref(v any) any {
	rv := reflect.ValueOf(v)
	for rv.IsValid() && rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return "NULL"
		}
		rv = rv.Elem()
	}
	if !rv.IsValid() {
		return "NULL"
	}
	return rv.Interface()
}

// crNative runs q over the native protocol (settings, if any, sent with it) and returns every
// row as text.
func crNative(conn driver.Conn, q string, settings clickhouse.Settings) crResult {
	defer ciSend(conn, q)()
	ctx, cancel := context.WithTimeout(context.Background(), crTimeout)
	defer cancel()
	if settings != nil {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(settings))
	}
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return crResult{err: err}
	}
	defer rows.Close()
	cts := rows.ColumnTypes()
	var b strings.Builder
	for n := 0; rows.Next() && n < 5000; n++ {
		vals := make([]any, len(cts))
		for i, ct := range cts {
			vals[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(vals...); err != nil {
			return crResult{text: b.String(), err: err}
		}
		for i, v := range vals {
			if i > 0 {
				b.WriteByte('\t')
			}
			fmt.Fprint(&b, crDeref(v))
		}
		b.WriteByte('\n')
	}
	return crResult{text: b.String(), err: rows.Err()}
}

// crNativeExec runs a statement that returns no rows (INSERT, DDL).
func crNativeExec(conn driver.Conn, q string, settings clickhouse.Settings) crResult {
	defer ciSend(conn, q)()
	ctx, cancel := context.WithTimeout(context.Background(), crTimeout)
	defer cancel()
	if settings != nil {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(settings))
	}
	return crResult{err: conn.Exec(ctx, q)}
}

var crHTTPClient = &http.Client{Timeout: crTimeout}

// crHTTP sends q to a node's HTTP interface as u: GET puts it in the URL, POST in the body;
// params are added to the URL (settings, session_id, database, profile …).
func crHTTP(node string, u chUser, method, q string, params url.Values) crResult {
	v := url.Values{}
	for k, vs := range params {
		v[k] = vs
	}
	var body io.Reader
	if method == http.MethodGet {
		v.Set("query", q)
	} else {
		body = strings.NewReader(q)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d/?%s", ciHTTPPort[node], v.Encode()), body)
	if err != nil {
		return crResult{err: err}
	}
	req.SetBasicAuth(u.name, u.password)
	return crDo(req)
}

func crDo(req *http.Request) crResult {
	resp, err := crHTTPClient.Do(req)
	if err != nil {
		return crResult{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		return crResult{err: fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))}
	}
	return crResult{text: string(b)}
}

// crTarget is a table outside some reader's row: its database, the table, a String column
// holding the marker ("" when it has none).
type crTarget struct {
	tb   drTable
	scol string
	all  string // its Distributed <table>_all, if any
}

func (tg crTarget) ident() string { return tg.tb.ident() }

// val is an expression of one of its rows, as a String.
func (tg crTarget) val() string {
	if tg.scol != "" {
		return "toString(" + quoteIdent(tg.scol) + ")"
	}
	for _, c := range sortedKeys(tg.tb.cols) {
		if ciSimpleType(tg.tb.cols[c]) {
			return "toString(" + quoteIdent(c) + ")"
		}
	}
	return "'x'"
}

func (tg crTarget) marked() string {
	if tg.scol == "" {
		return "1"
	}
	return fmt.Sprintf("position(toString(%s), '%s') > 0", quoteIdent(tg.scol), crPrefix)
}

// TestClusterReadUsersStayInTheirRow: every read user, on every node, over both protocols, tries
// every route out of its row; a whole marker of a database outside its row in anything that
// comes back, a count of a table outside its row, an accepted write or a write found on a node
// afterwards is a violation.
func TestClusterReadUsersStayInTheirRow(t *testing.T) {
	began := time.Now()
	s := newClStack(t)
	purposes := policyPurposes(t)
	all := s.roleUsers(purposes)
	rep := newCRReport()
	for _, n := range clNodes {
		ciLabel(s.admin[n.name], n.name+": the administrator")
	}

	// A node that dies while the attack runs is reported and started again.
	var chDir string
	if b, err := os.ReadFile(filepath.Join(s.root, ".services", "cluster", "clickhouse.dir")); err == nil {
		chDir = strings.TrimSpace(string(b))
	}
	stopWatch := s.ciWatch(chDir, func(node, report string) {
		rep.violation("a node died while the read users' statements ran (denial of service, not a read)", report)
		s.logf("NODE DIED: %s", report)
	})
	t.Cleanup(stopWatch)

	// ---- the read users: the collector's, every purpose reader, every _read user ----
	type reader struct {
		cu   clUser
		own  map[string]bool // databases of its row: what it reads
		role map[string]bool // databases its role's row names (write or delete too): a read of one is noted, not counted
		conn map[string]driver.Conn
	}
	var readers []*reader
	for _, u := range all {
		isRead := u.role == "collector" || (u.role == "query" && u.reader != "") || strings.HasSuffix(u.u.name, "_read")
		if !isRead {
			continue
		}
		r := &reader{cu: u, own: map[string]bool{}, role: map[string]bool{}, conn: map[string]driver.Conn{}}
		for d, a := range matrixRow(s.db, u.role, u.reader, purposes) {
			if a == accRead {
				r.own[d] = true
			}
			if a != accNone {
				r.role[d] = true
			}
		}
		readers = append(readers, r)
	}
	var names []string
	for _, r := range readers {
		names = append(names, r.cu.label())
	}
	s.logf("%d read users of %d role users: %s", len(readers), len(all), strings.Join(names, "; "))
	if len(readers) == 0 {
		t.Fatalf("MISSING FEATURE: no read user ('shukei users credentials')")
	}
	for _, want := range []string{"collector", "processor_read", "aggregator_read", "query_read", "retention_read"} {
		found := false
		for _, r := range readers {
			if r.cu.role == want || strings.HasSuffix(r.cu.u.name, want) {
				found = true
			}
		}
		if !found {
			rep.note("missing "+want, "information: no read user found for "+want+" (named in the promise)")
		}
	}

	// ---- a tenant added and deleted by the product (its id: a value of the registry and keys) ----
	tenant := crPrefix + "t" + drLetters(8)
	var del *clDeletion
	if out, err := s.tryCLI(time.Minute, "tenants", "add", "--tenant", tenant, "--status", "contracted", "--edition", "standard", "--size-band", "s"); err != nil {
		rep.note("tenant", fmt.Sprintf("information: 'shukei tenants add --tenant %s' failed (%v): %s", tenant, err, drLast(out)))
		tenant = ""
	}

	// ---- what every node holds ----
	tables, err := s.clTables("ch-s1r1")
	if err != nil {
		t.Fatalf("harness: tables: %v", err)
	}
	dbSet := map[string]bool{}
	sharded := map[string]bool{}
	distOf := map[string]string{} // db.table → its _all
	for _, tb := range tables {
		dbSet[tb.db] = true
		if tb.engine == "Distributed" {
			sharded[tb.db] = true
			distOf[tb.db+"."+strings.TrimSuffix(tb.name, "_all")] = tb.name
		}
	}
	dbs := sortedKeys(dbSet)
	stored := func(tb drTable) bool {
		return tb.engine != "Distributed" && !strings.HasPrefix(tb.name, ".inner") &&
			(strings.Contains(tb.engine, "MergeTree") || tb.engine == "Log" || tb.engine == "TinyLog" || tb.engine == "StripeLog" || tb.engine == "Memory")
	}
	s.logf("%d databases (sharded: %v), %d tables", len(dbs), sortedKeys(sharded), len(tables))

	// ---- markers: one per database, in every String column of every stored table ----
	markerDB := map[string]string{} // marker → database it was planted in
	dbMarker := map[string]string{}
	for _, db := range dbs {
		m := crPrefix + drLetters(4) + randHex(4)
		markerDB[m], dbMarker[db] = db, m
	}
	if tenant != "" {
		markerDB[tenant] = s.db + "_registry"
	}
	var targets []crTarget
	planted := map[string]bool{}
	for _, tb := range tables {
		if !stored(tb) {
			continue
		}
		tg := crTarget{tb: tb, all: distOf[tb.String()]}
		var cols, vals []string
		for _, c := range sortedKeys(tb.cols) {
			if ciStringType(tb.cols[c]) {
				if tg.scol == "" {
					tg.scol = c
				}
				cols = append(cols, quoteIdent(c))
				vals = append(vals, sqlStr(dbMarker[tb.db]))
			}
		}
		var ins string
		if len(cols) > 0 {
			ins = "INSERT INTO " + tb.ident() + " (" + strings.Join(cols, ", ") + ") SELECT " + strings.Join(vals, ", ")
		} else {
			// No String column: its rows are the product's (an answer at all is a count).
			targets = append(targets, tg)
			continue
		}
		nodes := []string{"ch-s1r1"}
		if sharded[tb.db] && tg.all != "" {
			nodes = []string{"ch-s1r1", "ch-s2r1"}
		}
		if tb.engine == "Memory" || tb.engine == "Log" || tb.engine == "TinyLog" || tb.engine == "StripeLog" {
			nodes = []string{"ch-s1r1", "ch-s1r2", "ch-s2r1", "ch-s2r2"}
		}
		ok := true
		for _, node := range nodes {
			if err := ciExec(s.admin[node], ins, false, 30*time.Second); err != nil {
				ok = false
				rep.note("plant "+tb.String(), fmt.Sprintf("information (harness): planting in %s on %s failed: %s", tb, node, short(err)))
			}
		}
		planted[tb.String()] = ok
		targets = append(targets, tg)
	}
	// The marker reaches every replica.
	time.Sleep(3 * time.Second)
	// Every target's rows on every node, as the administrator (what a count leak is compared with).
	var trueCount map[string]map[string]uint64 // node → table → rows, before the readers' statements
	countAll := func() map[string]map[string]uint64 {
		out := map[string]map[string]uint64{}
		for _, n := range clNodes {
			out[n.name] = map[string]uint64{}
			for _, tg := range targets {
				rows, _, err := ciQuery(s.admin[n.name], "SELECT count(), toUInt64(0) FROM "+tg.ident(), 20*time.Second)
				if err == nil {
					out[n.name][tg.tb.String()] = rows
				}
			}
		}
		return out
	}
	// One target per database for the routes that are tried per database: the marked one (a
	// sharded one for a sharded database).
	byDB := map[string]crTarget{}
	for _, tg := range targets {
		cur, ok := byDB[tg.tb.db]
		better := !ok || (cur.scol == "" && tg.scol != "") || (sharded[tg.tb.db] && cur.all == "" && tg.all != "" && tg.scol != "")
		if better && (tg.scol != "" || !ok) {
			byDB[tg.tb.db] = tg
		}
	}
	for _, db := range sortedKeys(byDB) {
		tg := byDB[db]
		s.logf("target of %s: %s (%s), String column %q, _all %q", db, tg.tb.name, tg.tb.engine, tg.scol, tg.all)
	}

	// The product deletes the tenant (its mutations name it), and the administrator runs one
	// mutation naming each database's marker on its target, which deletes nothing (what a
	// deletion by retention or 'shukei tenants delete' leaves in system.mutations and ZooKeeper).
	// The tenant has an event in the event store (so its deletion has rows to delete there);
	// every database found holding its id afterwards counts as holding that value.
	tenantDBs := map[string]bool{s.db + "_registry": true, s.db + "_keys": true}
	if tenant != "" {
		for _, tb := range tables {
			if tb.db != s.db || !stored(tb) || !ciStringType(tb.cols["tenant_id"]) {
				continue
			}
			q := fmt.Sprintf("INSERT INTO %s (tenant_id) SELECT %s", tb.ident(), sqlStr(tenant))
			if err := ciExec(s.admin["ch-s1r1"], q, false, 30*time.Second); err != nil {
				rep.note("tenant row "+tb.String(), fmt.Sprintf("information (harness): %s: %s", q, short(err)))
			}
		}
		time.Sleep(2 * time.Second)
		for _, tg := range targets {
			var cs []string
			for _, c := range sortedKeys(tg.tb.cols) {
				if ciStringType(tg.tb.cols[c]) {
					cs = append(cs, fmt.Sprintf("position(toString(%s), %s) > 0", quoteIdent(c), sqlStr(tenant)))
				}
			}
			if len(cs) == 0 {
				continue
			}
			if _, m, err := ciQuery(s.admin["ch-s1r1"], fmt.Sprintf("SELECT count(), countIf(%s) FROM %s", strings.Join(cs, " OR "), tg.ident()), 20*time.Second); err == nil && m > 0 {
				tenantDBs[tg.tb.db] = true
			}
		}
		s.logf("the tenant %s is held in %v before its deletion", tenant, sortedKeys(tenantDBs))
		del = s.deleteTenant(tenant)
	}
	for _, db := range sortedKeys(byDB) {
		tg := byDB[db]
		if tg.scol == "" || !strings.Contains(tg.tb.engine, "MergeTree") {
			continue
		}
		q := fmt.Sprintf("ALTER TABLE %s DELETE WHERE %s = %s", tg.ident(), quoteIdent(tg.scol), sqlStr(dbMarker[db]+"gone"))
		nodes := []string{"ch-s1r1"}
		if tg.all != "" || !strings.Contains(tg.tb.engine, "Replicated") {
			nodes = []string{"ch-s1r1", "ch-s2r1"}
		}
		for _, node := range nodes {
			if err := ciExec(s.admin[node], q, false, 30*time.Second); err != nil {
				rep.note("mutate "+db, fmt.Sprintf("information (harness): %s on %s: %s", q, node, short(err)))
			}
		}
	}

	if del != nil {
		select {
		case <-del.done:
			s.logf("information: 'shukei tenants delete --tenant %s' returned after %s (%v): %s", tenant, del.took.Round(100*time.Millisecond), del.err, drLast(del.out))
		case <-time.After(clDeleteLimit):
			s.logf("information: 'shukei tenants delete --tenant %s' had not returned after %s", tenant, clDeleteLimit)
		}
	}
	time.Sleep(2 * time.Second)
	trueCount = countAll()
	for _, db := range sortedKeys(byDB) {
		s.logf("rows of %s on every node: %d %d %d %d", byDB[db].tb, trueCount["ch-s1r1"][byDB[db].tb.String()], trueCount["ch-s1r2"][byDB[db].tb.String()], trueCount["ch-s2r1"][byDB[db].tb.String()], trueCount["ch-s2r2"][byDB[db].tb.String()])
	}

	// The replicas' ZooKeeper paths (the administrator's view).
	zkPaths := map[string][]string{} // db → paths to list
	zkMut := map[string][]string{}   // db → every replicated table's <zookeeper_path>/mutations
	for _, tb := range tables {
		if !strings.Contains(tb.engine, "Replicated") {
			continue
		}
		if ls, err := ciLines(s.admin["ch-s1r1"], fmt.Sprintf("SELECT zookeeper_path FROM system.replicas WHERE database = %s AND table = %s", sqlStr(tb.db), sqlStr(tb.name)), 20*time.Second); err == nil && len(ls) > 0 {
			zkMut[tb.db] = append(zkMut[tb.db], ls[0]+"/mutations")
		}
	}
	for _, db := range sortedKeys(byDB) {
		tg := byDB[db]
		if !strings.Contains(tg.tb.engine, "Replicated") {
			continue
		}
		ls, err := ciLines(s.admin["ch-s1r1"], fmt.Sprintf("SELECT concat(zookeeper_path, '\\t', replica_path) FROM system.replicas WHERE database = %s AND table = %s", sqlStr(tg.tb.db), sqlStr(tg.tb.name)), 20*time.Second)
		if err != nil || len(ls) == 0 {
			continue
		}
		zp, rp, _ := strings.Cut(ls[0], "\t")
		zkPaths[db] = []string{zp, zp + "/mutations", zp + "/log", zp + "/blocks", zp + "/quorum", zp + "/replicas", rp, rp + "/queue", rp + "/parts"}
	}

	// The cluster's hosts, as remote() names them.
	hosts, _ := ciLines(s.admin["ch-s1r1"], "SELECT concat(host_name, ':', toString(port)) FROM system.clusters WHERE cluster = '"+clName+"'", 20*time.Second)
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1:19100"}
	}

	// The administrator keeps a statement naming the keys' marker running on every node while
	// the readers look at system.processes.
	keysDB := s.db + "_keys"
	stopHold := make(chan struct{})
	var holdWG sync.WaitGroup
	if tg, ok := byDB[keysDB]; ok && tg.scol != "" {
		for _, n := range clNodes {
			holdWG.Add(1)
			go func(node string) {
				defer holdWG.Done()
				q := fmt.Sprintf("SELECT sleep(3), count() FROM %s WHERE %s != %s", tg.ident(), quoteIdent(tg.scol), sqlStr(dbMarker[keysDB]+"held"))
				for {
					select {
					case <-stopHold:
						return
					default:
					}
					_, _ = ciLines(s.admin[node], "SELECT toString(count()) FROM ("+q+")", 10*time.Second)
				}
			}(n.name)
		}
	}

	// judge scans what came back for a whole marker of a database outside the reader's row.
	leakOf := func(r *reader, text string) (out, roleOnly []string) {
		seen := map[string]bool{}
		for _, m := range crMarkerRe.FindAllString(text, -1) {
			for mk, db := range markerDB {
				if !strings.HasPrefix(m, mk) || seen[mk] {
					continue
				}
				if mk == tenant && tenant != "" {
					seen[mk] = true
					inOwn, inRole := false, false
					for d := range tenantDBs {
						inOwn = inOwn || r.own[d]
						inRole = inRole || r.role[d]
					}
					what := fmt.Sprintf("%s (of %s: the tenant 'shukei tenants delete' deleted, held in %v)", mk, db, sortedKeys(tenantDBs))
					switch {
					case inOwn:
					case inRole:
						roleOnly = append(roleOnly, what)
					default:
						out = append(out, what)
					}
					continue
				}
				if !r.own[db] {
					seen[mk] = true
					what := fmt.Sprintf("%s (of %s)", mk, db)
					if r.role[db] {
						roleOnly = append(roleOnly, what)
					} else {
						out = append(out, what)
					}
				}
			}
		}
		return out, roleOnly
	}
	cut := func(s string, n int) string {
		s = strings.Join(strings.Fields(s), " ")
		if len(s) > n {
			return s[:n] + "…"
		}
		return s
	}
	// foreignDBOf is the database of the stack a statement names last (its target's).
	foreignDBOf := func(q string) string {
		best, at := "", -1
		for _, db := range dbs {
			if i := strings.LastIndex(q, quoteIdent(db)+"."); i > at {
				best, at = db, i
			}
			if i := strings.LastIndex(q, sqlStr(db)); i > at {
				best, at = db, i
			}
		}
		return best
	}
	// check records one statement's outcome: a leaked marker is a violation in group; so is an
	// answer at all when answered says a table outside the row was read (count).
	check := func(r *reader, node, proto, group, route, q string, res crResult, readsForeign bool) {
		who := node + ": " + r.cu.label() + " [" + proto + "]"
		q = strings.ReplaceAll(q, r.cu.u.password, "<its password>")
		res.text = strings.ReplaceAll(res.text, r.cu.u.password, "<its password>")
		if res.err != nil {
			res.err = fmt.Errorf("%s", strings.ReplaceAll(res.err.Error(), r.cu.u.password, "<its password>"))
		}
		rep.outcome(route, res.err, who+": "+cut(res.all(), 200)+" — "+cut(q, 300))
		l, roleOnly := leakOf(r, res.all())
		if len(roleOnly) > 0 {
			rep.note("role "+route+r.cu.u.name, fmt.Sprintf("information: %s: route %s: markers %v of a database its role writes or deletes in (not a read of its row) came back: %s", who, route, roleOnly, cut(q, 300)))
		}
		if len(l) > 0 {
			if strings.Contains(route, "system.zookeeper") && strings.Contains(res.all(), "DELETE WHERE") {
				group = crGrpZK
			}
			rep.violation(group, fmt.Sprintf("%s: route %s: markers %v came back: %s — answer: %s", who, route, l, cut(q, 400), cut(res.all(), 300)))
			return
		}
		if readsForeign && res.err == nil {
			if foreignDBOf != nil && r.role[foreignDBOf(q)] {
				rep.note("roleans "+route+r.cu.u.name, fmt.Sprintf("information: %s: route %s answered on a database its role writes or deletes in: %s", who, route, cut(q, 300)))
				return
			}
			rep.violation(group, fmt.Sprintf("%s: route %s: answered (a count or rows of a table outside its row): %s — answer: %s", who, route, cut(q, 400), cut(res.text, 200)))
		}
	}

	// ---- the attack: every read user on every node ----
	var wg sync.WaitGroup
	for ni, n := range clNodes {
		wg.Add(1)
		go func(ni int, n clNode) {
			defer wg.Done()
			for _, r := range readers {
				own := sortedKeys(r.own)
				conn, err := clSignIn(n.addr, r.cu.u, own, 40*time.Second)
				if err != nil {
					rep.violation(crGrpHarness, fmt.Sprintf("%s: %s cannot sign in: %s", n.name, r.cu.label(), short(err)))
					continue
				}
				ciLabel(conn, n.name+": "+r.cu.label())
				r.conn[n.name] = conn
				u := r.cu.u
				var foreign []crTarget // every stored table outside its row
				for _, tg := range targets {
					if !r.own[tg.tb.db] {
						foreign = append(foreign, tg)
					}
				}
				var foreignDB []crTarget // one per database outside its row
				for _, db := range sortedKeys(byDB) {
					if !r.own[db] {
						foreignDB = append(foreignDB, byDB[db])
					}
				}
				var ownAll, ownPlain *crTarget // a sharded table of its own (with a String column), a table of its own
				for i, tg := range targets {
					if !r.own[tg.tb.db] {
						continue
					}
					if ownPlain == nil || (ownPlain.scol == "" && tg.scol != "") {
						ownPlain = &targets[i]
					}
					if tg.all != "" && tg.scol != "" && ownAll == nil {
						if res := crNative(conn, fmt.Sprintf("SELECT count() FROM %s.%s", quoteIdent(tg.tb.db), quoteIdent(tg.all)), nil); res.err == nil {
							ownAll = &targets[i]
						}
					}
				}
				// both runs q over both protocols.
				both := func(group, route, q string, readsForeign bool, httpParams url.Values, nativeSettings clickhouse.Settings) {
					if rep.slow(route) {
						return
					}
					check(r, n.name, "native", group, route, q, crNative(conn, q, nativeSettings), readsForeign)
					check(r, n.name, "HTTP POST", group, route, q, crHTTP(n.name, u, http.MethodPost, q, httpParams), readsForeign)
				}

				// 1. Naming a table outside its row.
				for _, tg := range foreign {
					both(crGrpDirect, "SELECT from the table", fmt.Sprintf("SELECT count(), countIf(%s), any(%s) FROM %s", tg.marked(), tg.val(), tg.ident()), true, nil, nil)
					if tg.all != "" {
						both(crGrpDirect, "SELECT from its <table>_all", fmt.Sprintf("SELECT count(), any(%s) FROM %s.%s", tg.val(), quoteIdent(tg.tb.db), quoteIdent(tg.all)), true, nil, nil)
					}
				}
				for _, tg := range foreignDB {
					qs := map[string]string{
						"scalar subquery":           fmt.Sprintf("SELECT (SELECT any(%s) FROM %s WHERE %s)", tg.val(), tg.ident(), tg.marked()),
						"FROM subquery":             fmt.Sprintf("SELECT * FROM (SELECT %s AS v FROM %s) LIMIT 5", tg.val(), tg.ident()),
						"WITH":                      fmt.Sprintf("WITH (SELECT count() FROM %s) AS c SELECT c", tg.ident()),
						"IN subquery on system.one": fmt.Sprintf("SELECT count() FROM system.one WHERE 'x' NOT IN (SELECT %s FROM %s)", tg.val(), tg.ident()),
						"EXISTS / SHOW CREATE":      fmt.Sprintf("SHOW CREATE TABLE %s", tg.ident()),
						"merge() table function":    fmt.Sprintf("SELECT count() FROM merge(%s, '.*')", sqlStr(tg.tb.db)),
						"error text of a cast":      fmt.Sprintf("SELECT count() FROM system.one WHERE 1 IN (SELECT toUInt8(%s) FROM %s WHERE %s)", tg.val(), tg.ident(), tg.marked()),
					}
					for _, k := range sortedKeys(qs) {
						reads := k != "EXISTS / SHOW CREATE"
						grp := crGrpDirect
						if strings.Contains(k, "merge()") {
							grp = crGrpTableFn
						}
						both(grp, k, qs[k], reads, nil, nil)
					}
					if ownPlain != nil {
						both(crGrpDirect, "UNION ALL with a table of its own", fmt.Sprintf("SELECT %s FROM %s UNION ALL SELECT %s FROM %s", ownPlain.val(), ownPlain.ident(), tg.val(), tg.ident()), true, nil, nil)
						if ownPlain.scol != "" {
							both(crGrpDirect, "JOIN on a table of its own", fmt.Sprintf("SELECT count() FROM %s ANY LEFT JOIN (SELECT %s AS %s, 1 AS atkj FROM %s) USING %s", ownPlain.ident(), tg.val(), quoteIdent(ownPlain.scol), tg.ident(), quoteIdent(ownPlain.scol)), true, nil, nil)
						}
					}
				}

				// 2. Table functions.
				for _, tg := range foreignDB {
					tn := quoteIdent(tg.tb.name)
					db := quoteIdent(tg.tb.db)
					fns := map[string]string{
						"cluster()":          fmt.Sprintf("SELECT count(), any(%s) FROM cluster('%s', %s, %s)", tg.val(), clName, db, tn),
						"remote() as itself": fmt.Sprintf("SELECT count(), any(%s) FROM remote('%s', %s, %s, %s, %s)", tg.val(), hosts[(ni+1)%len(hosts)], db, tn, sqlStr(u.name), sqlStr(u.password)),
						"remote() as the internal user, no password": fmt.Sprintf("SELECT count(), any(%s) FROM remote('%s', %s, %s, '%s', '')", tg.val(), hosts[(ni+1)%len(hosts)], db, tn, ciInternalUser),
						"remote() with no user (default)":            fmt.Sprintf("SELECT count(), any(%s) FROM remote('%s', %s, %s)", tg.val(), hosts[(ni+1)%len(hosts)], db, tn),
						"url() to a node's HTTP port":                fmt.Sprintf("SELECT * FROM url('http://127.0.0.1:%d/?user=%s&password=%s&query=SELECT%%20*%%20FROM%%20%s.%s', TSV, 'l String')", ciHTTPPort[clNodes[(ni+1)%4].name], url.QueryEscape(u.name), url.QueryEscape(u.password), url.QueryEscape(tg.tb.db), url.QueryEscape(tg.tb.name)),
						"file() of the table's data":                 fmt.Sprintf("SELECT * FROM file('../data/%s/%s/*/*.bin', TSV, 'l String') LIMIT 5", url.PathEscape(tg.tb.db), url.PathEscape(tg.tb.name)),
					}
					for _, k := range sortedKeys(fns) {
						both(crGrpTableFn, k, fns[k], true, nil, nil)
					}
				}
				both(crGrpTableFn, "numbers() (a table function naming nothing)", "SELECT count() FROM numbers(10)", false, nil, nil)

				// 3. Settings: sent over the native protocol, as HTTP URL parameters, as a SETTINGS
				// clause, with SET in an HTTP session, profile=.
				variants := []clickhouse.Settings{
					{"readonly": 0}, {"readonly": 2}, {"profile": "default"}, {"prefer_localhost_replica": 0},
					{"readonly": 0, "prefer_localhost_replica": 0, "distributed_product_mode": "allow"}, {"prefer_localhost_replica": 0, "skip_unavailable_shards": 1}, {"allow_ddl": 1}, {"max_threads": 1},
				}
				for _, vset := range variants {
					params := url.Values{}
					var clause []string
					for k, v := range vset {
						params.Set(k, fmt.Sprint(v))
						val := fmt.Sprint(v)
						if _, err := strconv.Atoi(val); err != nil {
							val = sqlStr(val)
						}
						clause = append(clause, k+" = "+val)
					}
					sort.Strings(clause)
					label := strings.Join(clause, ", ")
					for i, tg := range foreignDB {
						if i > 2 && len(vset) == 1 && vset["max_threads"] != nil {
							break
						}
						qs := []string{
							fmt.Sprintf("SELECT count(), any(%s) FROM %s", tg.val(), tg.ident()),
							fmt.Sprintf("SELECT count(), any(%s) FROM cluster('%s', %s, %s)", tg.val(), clName, quoteIdent(tg.tb.db), quoteIdent(tg.tb.name)),
						}
						if ownAll != nil {
							qs = append(qs, fmt.Sprintf("SELECT count() FROM %s.%s WHERE %s NOT IN (SELECT %s FROM %s)", quoteIdent(ownAll.tb.db), quoteIdent(ownAll.all), ownAll.val(), tg.val(), tg.ident()))
						}
						for _, q := range qs {
							if rep.slow("settings " + label) {
								continue
							}
							nv := clickhouse.Settings{}
							for k, v := range vset {
								if _, ok := v.(int); ok {
									nv[k] = v
								}
							}
							if len(nv) > 0 {
								check(r, n.name, "native, settings sent", crGrpSettings, "native settings "+label, q, crNative(conn, q, nv), true)
							} else {
								rep.note("native string settings", "information: clickhouse-go cannot send a String setting (profile, distributed_product_mode) to ClickHouse 18.16 over the native protocol (settings are sent as integers before revision 54429): tried over HTTP and as a SETTINGS clause only")
							}
							check(r, n.name, "HTTP GET, URL parameters", crGrpSettings, "HTTP URL "+label, q, crHTTP(n.name, u, http.MethodGet, q, params), true)
							check(r, n.name, "HTTP POST, URL parameters", crGrpSettings, "HTTP URL "+label, q, crHTTP(n.name, u, http.MethodPost, q, params), true)
							both(crGrpSettings, "SETTINGS clause "+label, q+" SETTINGS "+strings.Join(clause, ", "), true, nil, nil)
						}
					}
				}
				// SET and SET profile in an HTTP session, then the reads.
				for _, set := range []string{"SET profile = 'default'", "SET readonly = 0", "SET readonly = 2", "SET prefer_localhost_replica = 0"} {
					sid := "atkrs" + randHex(6)
					p := url.Values{"session_id": {sid}}
					res := crHTTP(n.name, u, http.MethodPost, set, p)
					check(r, n.name, "HTTP session", crGrpSettings, "SET in an HTTP session", set, res, false)
					for _, tg := range foreignDB {
						for _, q := range []string{
							fmt.Sprintf("SELECT count(), any(%s) FROM %s", tg.val(), tg.ident()),
							fmt.Sprintf("SELECT count(), any(%s) FROM cluster('%s', %s, %s)", tg.val(), clName, quoteIdent(tg.tb.db), quoteIdent(tg.tb.name)),
						} {
							check(r, n.name, "HTTP session after "+set, crGrpSettings, "after "+set, q, crHTTP(n.name, u, http.MethodPost, q, p), true)
						}
					}
				}
				// The HTTP interface's other parameters: database=, user/password in the URL, a
				// quota key, an output format.
				for _, tg := range foreignDB {
					q := fmt.Sprintf("SELECT count(), any(%s) FROM %s", tg.val(), quoteIdent(tg.tb.name))
					check(r, n.name, "HTTP database=", crGrpOther, "HTTP database= outside its row", q, crHTTP(n.name, u, http.MethodPost, q, url.Values{"database": {tg.tb.db}}), true)
					v := url.Values{"user": {u.name}, "password": {u.password}, "query": {fmt.Sprintf("SELECT count(), any(%s) FROM %s", tg.val(), tg.ident())}, "default_format": {"JSONCompact"}}
					req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/?%s", ciHTTPPort[n.name], v.Encode()), nil)
					check(r, n.name, "HTTP", crGrpOther, "HTTP user/password in the URL", v.Get("query"), crDo(req), true)
				}
				// The native protocol's default database outside its row.
				if len(foreignDB) > 0 {
					tg := foreignDB[0]
					if c, err := clOpen(n.addr, u.name, u.password, tg.tb.db); err == nil {
						q := fmt.Sprintf("SELECT count(), any(%s) FROM %s", tg.val(), quoteIdent(tg.tb.name))
						check(r, n.name, "native, default database outside its row", crGrpOther, "native default database", q, crNative(c, q, nil), true)
						rep.note("defaultdb "+r.cu.u.name, fmt.Sprintf("information: %s signs in on %s with %s as its default database", r.cu.label(), n.name, tg.tb.db))
						c.Close()
					}
				}

				// 4. Distributed tables of its own, with subqueries on databases outside its row
				// (a non-GLOBAL subquery runs on the other shard as the internal user).
				if ownAll != nil {
					oa := quoteIdent(ownAll.tb.db) + "." + quoteIdent(ownAll.all)
					oc := quoteIdent(ownAll.scol)
					for _, tg := range foreignDB {
						qs := map[string]string{
							"IN":                         fmt.Sprintf("SELECT count() FROM %s WHERE %s NOT IN (SELECT %s FROM %s)", oa, oc, tg.val(), tg.ident()),
							"GLOBAL IN":                  fmt.Sprintf("SELECT count() FROM %s WHERE %s GLOBAL NOT IN (SELECT %s FROM %s)", oa, oc, tg.val(), tg.ident()),
							"IN, error text of a cast":   fmt.Sprintf("SELECT count() FROM %s WHERE 1 IN (SELECT toUInt8(%s) FROM %s WHERE %s)", oa, tg.val(), tg.ident(), tg.marked()),
							"IN on a foreign _all":       fmt.Sprintf("SELECT count() FROM %s WHERE %s NOT IN (SELECT %s FROM %s.%s)", oa, oc, tg.val(), quoteIdent(tg.tb.db), quoteIdent(tg.all)),
							"JOIN":                       fmt.Sprintf("SELECT count(), any(atkj) FROM %s ANY LEFT JOIN (SELECT %s AS %s, %s AS atkj FROM %s) USING %s", oa, tg.val(), oc, tg.val(), tg.ident(), oc),
							"GLOBAL JOIN":                fmt.Sprintf("SELECT count(), any(atkj) FROM %s GLOBAL ANY LEFT JOIN (SELECT %s AS %s, %s AS atkj FROM %s) USING %s", oa, tg.val(), oc, tg.val(), tg.ident(), oc),
							"scalar subquery in WHERE":   fmt.Sprintf("SELECT count() FROM %s WHERE %s != (SELECT any(%s) FROM %s)", oa, oc, tg.val(), tg.ident()),
							"IN, a local column only":    fmt.Sprintf("SELECT count() FROM %s WHERE hostName() != '' AND %s IN (SELECT %s FROM %s WHERE %s)", oa, oc, tg.val(), tg.ident(), tg.marked()),
							"prefer_localhost_replica=0": fmt.Sprintf("SELECT count() FROM %s WHERE %s NOT IN (SELECT %s FROM %s)", oa, oc, tg.val(), tg.ident()),
						}
						for _, k := range sortedKeys(qs) {
							if strings.Contains(k, "foreign _all") && tg.all == "" {
								continue
							}
							var st clickhouse.Settings
							var p url.Values
							if k == "prefer_localhost_replica=0" {
								st = clickhouse.Settings{"prefer_localhost_replica": 0, "skip_unavailable_shards": 1, "readonly": 0}
								p = url.Values{"prefer_localhost_replica": {"0"}, "distributed_product_mode": {"allow"}}
							}
							both(crGrpDist, "own _all, "+k, qs[k], true, p, st)
						}
					}
				} else {
					rep.note("noall "+r.cu.u.name, fmt.Sprintf("information: %s has no Distributed table with a String column in its row (the Distributed subquery routes are tried by the readers that have one)", r.cu.label()))
				}

				// 5. system.*: values and counts of databases outside its row.
				var fdbList []string
				for _, tg := range foreignDB {
					fdbList = append(fdbList, sqlStr(tg.tb.db))
				}
				inF := "(" + strings.Join(fdbList, ", ") + ")"
				if len(fdbList) > 0 {
					// Row counts of tables outside its row.
					q := "SELECT database, table, toString(sum(rows)) FROM system.parts WHERE active AND database IN " + inF + " GROUP BY database, table"
					for _, proto := range []string{"native", "HTTP"} {
						var res crResult
						if proto == "native" {
							res = crNative(conn, q, nil)
						} else {
							res = crHTTP(n.name, u, http.MethodPost, q, nil)
						}
						check(r, n.name, proto, crGrpSystem, "system.parts", q, res, false)
						var counted []string
						for _, l := range strings.Split(res.text, "\n") {
							f := strings.Split(l, "\t")
							if len(f) == 3 && f[2] != "0" && f[2] != "" {
								counted = append(counted, f[0]+"."+f[1]+"="+f[2])
							}
						}
						if len(counted) > 0 {
							sort.Strings(counted)
							rep.violation(crGrpSystem, fmt.Sprintf("%s: %s [%s]: route system.parts (rows): row counts of %d tables outside its row came back (%s): %s", n.name, r.cu.label(), proto, len(counted), cut(strings.Join(counted, ", "), 300), q))
						} else if res.err == nil {
							rep.note("parts empty "+r.cu.u.name, fmt.Sprintf("information: system.parts shows %s no part of a database outside its row", r.cu.label()))
						}
					}
					for _, st := range []string{"parts", "parts_columns", "columns", "tables", "mutations", "replicas", "replication_queue", "merges"} {
						q := fmt.Sprintf("SELECT * FROM system.%s WHERE database IN %s LIMIT 3000", st, inF)
						both(crGrpSystem, "system."+st, q, false, nil, nil)
						if res := crNative(conn, q, nil); res.err == nil && strings.TrimSpace(res.text) != "" {
							rep.note("names "+st+r.cu.u.name, fmt.Sprintf("information: system.%s shows %s %d lines about databases outside its row (names/metadata, no marker): e.g. %s", st, r.cu.label(), strings.Count(res.text, "\n"), cut(res.text, 160)))
						} else if res.err == nil {
							rep.note("nonames "+st, fmt.Sprintf("information: system.%s shows a read user no line about a database outside its row (first seen: %s on %s)", st, r.cu.label(), n.name))
						}
						if st == "mutations" || st == "replication_queue" {
							res := crNative(conn, fmt.Sprintf("SELECT count() FROM system.%s WHERE database IN %s", st, inF), nil)
							if res.err == nil && strings.TrimSpace(res.text) != "0" {
								rep.note("sys "+st+" "+r.cu.u.name, fmt.Sprintf("information: %s sees %s rows of system.%s about databases outside its row", r.cu.label(), strings.TrimSpace(res.text), st))
							}
						}
					}
				}
				for _, st := range []string{"processes", "clusters", "macros", "dictionaries", "settings", "events", "metrics", "asynchronous_metrics", "graphite_retentions", "models", "query_log", "query_thread_log", "part_log", "trace_log", "users", "quotas"} {
					both(crGrpStmt, "system."+st, "SELECT * FROM system."+st+" LIMIT 3000", false, nil, nil)
				}
				// system.processes again, while the administrator's statement runs.
				for i := 0; i < 3; i++ {
					both(crGrpStmt, "system.processes", "SELECT query, user FROM system.processes", false, nil, nil)
					time.Sleep(300 * time.Millisecond)
				}
				for _, tg := range foreignDB {
					for _, p := range zkPaths[tg.tb.db] {
						q := fmt.Sprintf("SELECT path, name, value FROM system.zookeeper WHERE path = %s LIMIT 2000", sqlStr(p))
						both(crGrpStmt, "system.zookeeper", q, false, nil, nil)
					}
					// Every replicated table's mutations, one entry at a time (each entry's text).
					for _, mp := range zkMut[tg.tb.db] {
						res := crNative(conn, fmt.Sprintf("SELECT name FROM system.zookeeper WHERE path = %s", sqlStr(mp)), nil)
						for _, name := range strings.Fields(res.text) {
							q := fmt.Sprintf("SELECT value FROM system.zookeeper WHERE path = %s AND name = %s", sqlStr(mp), sqlStr(name))
							both(crGrpStmt, "system.zookeeper", q, false, nil, nil)
						}
					}
				}

				// 6. Dictionaries, external data.
				both(crGrpOther, "dictGet", "SELECT dictGetString('atk', 'x', toUInt64(1))", false, nil, nil)
				for _, tg := range foreignDB {
					q := fmt.Sprintf("SELECT count() FROM atkext WHERE l NOT IN (SELECT %s FROM %s)", tg.val(), tg.ident())
					var buf bytes.Buffer
					mw := multipart.NewWriter(&buf)
					fw, _ := mw.CreateFormFile("atkext", "atkext.tsv")
					_, _ = fw.Write([]byte("a\nb\n"))
					_ = mw.Close()
					v := url.Values{"query": {q}, "atkext_structure": {"l String"}, "atkext_format": {"TSV"}}
					req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/?%s", ciHTTPPort[n.name], v.Encode()), &buf)
					req.Header.Set("Content-Type", mw.FormDataContentType())
					req.SetBasicAuth(u.name, u.password)
					check(r, n.name, "HTTP external data", crGrpOther, "HTTP external data", q, crDo(req), true)
				}

				// 7. Writes: INSERT into its own and other databases, DDL, with and without
				// settings, over both protocols.
				var writeTo []crTarget
				if ownPlain != nil {
					writeTo = append(writeTo, *ownPlain)
				}
				if ownAll != nil {
					o := *ownAll
					writeTo = append(writeTo, o)
				}
				writeTo = append(writeTo, foreignDB...)
				wmark := crWPrefix + randHex(5)
				for _, tg := range writeTo {
					into := []string{tg.ident()}
					if tg.all != "" {
						into = append(into, quoteIdent(tg.tb.db)+"."+quoteIdent(tg.all))
					}
					for _, dst := range into {
						col := tg.scol
						var ins string
						if col != "" {
							ins = fmt.Sprintf("INSERT INTO %s (%s) SELECT '%s'", dst, quoteIdent(col), wmark)
						} else {
							ins = fmt.Sprintf("INSERT INTO %s SELECT * FROM %s LIMIT 0", dst, tg.ident())
						}
						for _, st := range []clickhouse.Settings{nil, {"readonly": 0}, {"profile": "default"}} {
							res := crNativeExec(conn, ins, st)
							rep.outcome("INSERT", res.err, n.name+": "+r.cu.label()+": "+cut(res.all(), 200))
							if res.err == nil {
								rep.violation(crGrpWrite, fmt.Sprintf("%s: %s [native, settings %v]: INSERT accepted: %s", n.name, r.cu.label(), st, ins))
							}
						}
						for _, p := range []url.Values{nil, {"readonly": {"0"}}, {"profile": {"default"}}, {"readonly": {"2"}}} {
							res := crHTTP(n.name, u, http.MethodPost, ins, p)
							rep.outcome("INSERT", res.err, n.name+": "+r.cu.label()+": "+cut(res.all(), 200))
							if res.err == nil {
								rep.violation(crGrpWrite, fmt.Sprintf("%s: %s [HTTP POST, %s]: INSERT accepted: %s", n.name, r.cu.label(), p.Encode(), ins))
							}
						}
					}
					tb := tg.ident()
					sc := crWPrefix + "s" + drLetters(5)
					ddl := []string{
						fmt.Sprintf("CREATE TABLE %s.%s (a String) ENGINE = Memory", quoteIdent(tg.tb.db), sc),
						fmt.Sprintf("CREATE TABLE %s.%s ENGINE = Memory AS SELECT * FROM %s", quoteIdent(tg.tb.db), sc+"x", tb),
						fmt.Sprintf("CREATE VIEW %s.%s AS SELECT * FROM %s", quoteIdent(tg.tb.db), sc+"v", tb),
						"CREATE TEMPORARY TABLE " + sc + "t (a String) ENGINE = Memory",
						fmt.Sprintf("ALTER TABLE %s DELETE WHERE 0", tb),
						fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s String", tb, sc),
						fmt.Sprintf("OPTIMIZE TABLE %s", tb),
						fmt.Sprintf("SYSTEM STOP MERGES %s", tb),
						fmt.Sprintf("RENAME TABLE %s TO %s.%s", tb, quoteIdent(tg.tb.db), sc+"r"),
						fmt.Sprintf("DETACH TABLE %s", tb),
						fmt.Sprintf("TRUNCATE TABLE %s", tb),
						fmt.Sprintf("DROP TABLE %s", tb),
					}
					for _, q := range ddl {
						for _, st := range []clickhouse.Settings{nil, {"allow_ddl": 1, "readonly": 0}} {
							res := crNativeExec(conn, q, st)
							rep.outcome("DDL", res.err, n.name+": "+r.cu.label()+": "+cut(res.all(), 200))
							if res.err == nil {
								grp := crGrpWrite
								if strings.HasPrefix(q, "CREATE TEMPORARY") {
									rep.note("tmp "+r.cu.u.name, fmt.Sprintf("information: %s may CREATE TEMPORARY TABLE (session memory, no database) on %s", r.cu.label(), n.name))
									continue
								}
								rep.violation(grp, fmt.Sprintf("%s: %s [native, settings %v]: accepted: %s", n.name, r.cu.label(), st, q))
							}
						}
						res := crHTTP(n.name, u, http.MethodPost, q, url.Values{"allow_ddl": {"1"}})
						rep.outcome("DDL", res.err, n.name+": "+r.cu.label()+": "+cut(res.all(), 200))
						if res.err == nil && !strings.HasPrefix(q, "CREATE TEMPORARY") {
							rep.violation(crGrpWrite, fmt.Sprintf("%s: %s [HTTP POST, allow_ddl=1]: accepted: %s", n.name, r.cu.label(), q))
						}
					}
				}
				// KILL QUERY of the administrator's statement (not a read, not a write: noted).
				res := crNative(conn, "KILL QUERY WHERE user = 'default' ASYNC", nil)
				if res.err == nil && strings.TrimSpace(res.text) != "" {
					rep.note("kill "+r.cu.u.name, fmt.Sprintf("information: %s on %s may KILL QUERY the administrator's statements: %s", r.cu.label(), n.name, cut(res.text, 200)))
				}
			}
		}(ni, n)
	}
	wg.Wait()
	close(stopHold)
	holdWG.Wait()

	// ---- afterwards, as the administrator on every node: what was written ----
	after := countAll()
	for _, n := range clNodes {
		for tbl, c := range trueCount[n.name] {
			if a, ok := after[n.name][tbl]; !ok {
				rep.violation(crGrpWrite, fmt.Sprintf("%s: %s is gone after the attack (had %d rows)", n.name, tbl, c))
			} else if a != c {
				rep.violation(crGrpWrite, fmt.Sprintf("%s: %s held %d rows before the readers' statements, %d after", n.name, tbl, c, a))
			}
		}
		for _, tg := range targets {
			if tg.scol == "" {
				continue
			}
			rows, marks, err := ciQuery(s.admin[n.name], fmt.Sprintf("SELECT count(), countIf(position(toString(%s), '%s') > 0) FROM %s", quoteIdent(tg.scol), crWPrefix, tg.ident()), 20*time.Second)
			if err == nil && marks > 0 {
				rep.violation(crGrpWrite, fmt.Sprintf("%s: %d rows written by a read user found in %s (of %d)", n.name, marks, tg.tb, rows))
			}
		}
		objs, _ := ciLines(s.admin[n.name], fmt.Sprintf("SELECT concat(database, '.', name) FROM system.tables WHERE name LIKE '%s%%' OR (database LIKE %s AND name LIKE '%%%s%%')", crWPrefix, sqlStr(s.db+"%"), crWPrefix), 20*time.Second)
		for _, o := range objs {
			rep.violation(crGrpWrite, fmt.Sprintf("%s: object %s created by a read user", n.name, o))
		}
		cols, _ := ciLines(s.admin[n.name], fmt.Sprintf("SELECT concat(database, '.', table, '.', name) FROM system.columns WHERE database LIKE %s AND name LIKE '%s%%'", sqlStr(s.db+"%"), crWPrefix), 20*time.Second)
		for _, o := range cols {
			rep.violation(crGrpWrite, fmt.Sprintf("%s: column %s added by a read user", n.name, o))
		}
	}
	stopWatch()
	for _, r := range readers {
		for _, c := range r.conn {
			c.Close()
		}
	}

	// ---- the report ----
	rep.mu.Lock()
	defer rep.mu.Unlock()
	for _, l := range rep.info {
		t.Log(l)
	}
	for _, route := range sortedKeys(rep.refused) {
		t.Logf("refused: %-70s %5d refused, %5d answered; e.g. %s", route, rep.refused[route], rep.answered[route], rep.example[route])
	}
	for _, route := range sortedKeys(rep.answered) {
		if rep.refused[route] == 0 {
			t.Logf("answered: %-70s %5d answered, none refused", route, rep.answered[route])
		}
	}
	total := 0
	var summary []string
	for _, g := range sortedKeys(rep.bad) {
		total += len(rep.bad[g])
		summary = append(summary, fmt.Sprintf("%d: %s", len(rep.bad[g]), g))
	}
	routeRe := regexp.MustCompile(`\[([^\]]*)\]: route ([^:]*):`)
	ofRe := regexp.MustCompile(`\(of ([a-z0-9_]+)\)`)
	userRe := regexp.MustCompile(`^ch-s\dr\d: (.*?) \[`)
	for _, g := range sortedKeys(rep.bad) {
		lines := rep.bad[g]
		t.Errorf("VIOLATION group (%d): %s", len(lines), g)
		byRoute := map[string]int{}
		for _, l := range lines {
			if m := routeRe.FindStringSubmatch(l); m != nil {
				byRoute[m[2]+" ["+m[1]+"]"]++
			} else {
				byRoute["(see lines)"]++
			}
		}
		for _, k := range sortedKeys(byRoute) {
			t.Errorf("  by route: %5d  %s", byRoute[k], k)
		}
		byDB := map[string]int{}
		byUser := map[string]int{}
		for _, l := range lines {
			for _, m := range ofRe.FindAllStringSubmatch(l, -1) {
				byDB[m[1]]++
			}
			if strings.Contains(l, "the tenant 'shukei tenants delete' deleted") {
				byDB["the id of the tenant 'shukei tenants delete' deleted (a value of "+strings.Join(sortedKeys(tenantDBs), ", ")+")"]++
			}
			if m := userRe.FindStringSubmatch(l); m != nil {
				byUser[m[1]]++
			}
		}
		for _, k := range sortedKeys(byDB) {
			t.Errorf("  by database whose value came back: %5d  %s", byDB[k], k)
		}
		for _, k := range sortedKeys(byUser) {
			t.Errorf("  by read user: %5d  %s", byUser[k], k)
		}
		for i, l := range lines {
			if i >= 40 {
				t.Errorf("  … %d more", len(lines)-40)
				break
			}
			t.Errorf("  %s", l)
		}
	}
	t.Logf("%d read users × %d nodes × 2 protocols; %d violations (%s); run time %s", len(readers), len(clNodes), total, strings.Join(summary, "; "), time.Since(began).Round(time.Second))
}
