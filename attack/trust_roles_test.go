package attack

// Promise 16 ("ClickHouse refuses each role what its job does not need"): every user of every
// role, signed in to the real server, tries every kind of statement on every database of the
// test; the outcomes must match the matrix of docs/promises.md exactly. Then the roles run for
// real with only their role keys and still do their job.

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/internal/servicetest"
)

type access int

const (
	accNone access = iota
	accRead
	accWrite
	accDelete
)

func (a access) String() string {
	return [...]string{"none", "read", "write", "delete"}[a]
}

// matrixRow is promise 16's row of a role (for the query role: of its main user, or of the
// purpose reader of readerPurpose), by database name.
func matrixRow(db, role, readerPurpose string, purposes []string) map[string]access {
	var marts []string
	for _, p := range purposes {
		if p != "external_aggregate" {
			marts = append(marts, db+"_"+p)
		}
	}
	r := map[string]access{}
	set := func(a access, dbs ...string) {
		for _, d := range dbs {
			r[d] = a
		}
	}
	switch role {
	case "collector":
		set(accRead, db+"_registry")
	case "processor":
		set(accRead, db+"_registry", db+"_keys")
		set(accWrite, db)
		set(accWrite, marts...)
	case "aggregator":
		set(accRead, db+"_registry", db+"_keys", db+"_service_improvement", db+"_marketing")
		set(accWrite, db+"_aggregator", db+"_external_aggregate", db+"_service_improvement_gated", db+"_marketing_gated")
	case "query":
		if readerPurpose != "" {
			set(accRead, db+"_"+readerPurpose, db+"_"+readerPurpose+"_gated")
		} else {
			set(accRead, db+"_principals", db+"_registry")
			set(accWrite, db+"_audit", db+"_breakglass")
		}
	case "retention":
		set(accRead, db+"_external_aggregate")
		set(accWrite, db+"_audit")
		set(accDelete, db, db+"_registry", db+"_keys", db+"_aggregator", db+"_breakglass")
		set(accDelete, marts...)
	default:
		panic("harness: unknown role " + role)
	}
	return r
}

// readerOf is the purpose whose reader a query user is, by its name ("" for none).
func readerOf(user string, purposes []string) string {
	ps := append([]string(nil), purposes...)
	sort.Slice(ps, func(i, j int) bool { return len(ps[i]) > len(ps[j]) })
	for _, p := range ps {
		if strings.Contains(user, "_"+p+"_") || strings.HasSuffix(user, "_"+p) {
			return p
		}
	}
	return ""
}

// The statements tried on a database's scratch table (the administrator makes one per user).
var ddlKinds = []string{"create", "alter_add_column", "alter_update", "alter_delete", "drop_partition", "optimize", "system_stop_merges", "truncate", "rename", "detach", "drop"}

func ddlStatement(kind, db, scratch, sfx string) string {
	t := quoteIdent(db) + "." + quoteIdent(scratch)
	switch kind {
	case "create":
		return "CREATE TABLE " + quoteIdent(db) + "." + quoteIdent("trust_c_"+sfx) + " (x UInt8) ENGINE = MergeTree ORDER BY tuple()"
	case "alter_add_column":
		return "ALTER TABLE " + t + " ADD COLUMN " + quoteIdent("y_"+sfx) + " UInt8"
	case "alter_update":
		return "ALTER TABLE " + t + " UPDATE x = x WHERE x = 255"
	case "alter_delete":
		return "ALTER TABLE " + t + " DELETE WHERE x = 255"
	case "drop_partition":
		return "ALTER TABLE " + t + " DROP PARTITION tuple()"
	case "optimize":
		return "OPTIMIZE TABLE " + t
	case "system_stop_merges":
		return "SYSTEM STOP MERGES " + t
	case "truncate":
		return "TRUNCATE TABLE " + t
	case "rename":
		return "RENAME TABLE " + t + " TO " + quoteIdent(db) + "." + quoteIdent(scratch+"_r")
	case "detach":
		return "DETACH TABLE " + t
	case "drop":
		return "DROP TABLE " + t
	}
	panic("harness: unknown statement kind " + kind)
}

// globalSystem is a SYSTEM statement on no database (harmless if it runs).
const globalSystem = "SYSTEM DROP MARK CACHE"

type chTable struct{ db, name, engine string }

func (t chTable) insertable() bool {
	return t.engine != "View" && t.engine != "MaterializedView" && !strings.HasPrefix(t.name, ".inner")
}

// outcome key: db, object (table name for select/insert, "" for a statement on the scratch
// table), kind (select, insert, a ddlKind, system_global).
type probeKey struct{ db, object, kind string }

type probeResult map[probeKey]error

// shukeiDBs lists the test's databases (<db> and <db>_*) and their tables, as the
// administrator.
func (s *trustStack) shukeiDBs() ([]string, []chTable) {
	s.t.Helper()
	ctx := context.Background()
	rows, err := s.conn.Query(ctx, "SELECT name FROM system.databases WHERE name = ? OR startsWith(name, ?) ORDER BY name", s.db, s.db+"_")
	if err != nil {
		s.t.Fatal(err)
	}
	var dbs []string
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		dbs = append(dbs, n)
	}
	rows.Close()
	rows, err = s.conn.Query(ctx, "SELECT database, name, engine FROM system.tables WHERE (database = ? OR startsWith(database, ?)) AND NOT startsWith(name, 'trust_') ORDER BY database, name", s.db, s.db+"_")
	if err != nil {
		s.t.Fatal(err)
	}
	var tbs []chTable
	for rows.Next() {
		var t chTable
		_ = rows.Scan(&t.db, &t.name, &t.engine)
		if !strings.HasPrefix(t.name, ".inner") {
			tbs = append(tbs, t)
		}
	}
	rows.Close()
	return dbs, tbs
}

// ensureScratch makes the administrator's scratch table of a user in db whole again: put
// back after a rename, attached after a detach, made after a drop, merges on, one row.
func (s *trustStack) ensureScratch(db, scratch string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t := quoteIdent(db) + "." + quoteIdent(scratch)
	_ = s.conn.Exec(ctx, "RENAME TABLE "+quoteIdent(db)+"."+quoteIdent(scratch+"_r")+" TO "+t)
	_ = s.conn.Exec(ctx, "ATTACH TABLE "+t)
	if err := s.conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+t+" (x UInt8) ENGINE = MergeTree ORDER BY tuple()"); err != nil {
		s.t.Errorf("harness: make the scratch table %s: %v", t, err)
		return
	}
	_ = s.conn.Exec(ctx, "SYSTEM START MERGES "+t)
	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+t).Scan(&n); err == nil && n == 0 {
		_ = s.conn.Exec(ctx, "INSERT INTO "+t+" SELECT 1")
	}
}

// probe runs every statement as conn on every database and returns what worked (nil error)
// and what was refused. scratch is the user's own scratch table name in every database.
func (s *trustStack) probe(conn driver.Conn, dbs []string, tbs []chTable, scratch, sfx string) probeResult {
	res := probeResult{}
	ctx := context.Background()
	run := func(q string) error {
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return conn.Exec(c, q)
	}
	for _, t := range tbs {
		// Every column read on the server (aggregate states cannot be decoded by the client).
		q := "SELECT count() FROM (SELECT * FROM " + quoteIdent(t.db) + "." + quoteIdent(t.name) + " LIMIT 1)"
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		var n uint64
		err := conn.QueryRow(c, q).Scan(&n)
		cancel()
		res[probeKey{t.db, t.name, "select"}] = err
		if t.insertable() {
			tb := quoteIdent(t.db) + "." + quoteIdent(t.name)
			res[probeKey{t.db, t.name, "insert"}] = run("INSERT INTO " + tb + " SELECT * FROM " + tb + " LIMIT 1")
		}
	}
	for _, db := range dbs {
		s.ensureScratch(db, scratch)
		for _, kind := range ddlKinds {
			err := run(ddlStatement(kind, db, scratch, sfx))
			res[probeKey{db, "", kind}] = err
			if err == nil {
				// Put things back for the next statement.
				switch kind {
				case "create":
					_ = s.conn.Exec(ctx, "DROP TABLE IF EXISTS "+quoteIdent(db)+"."+quoteIdent("trust_c_"+sfx))
				case "system_stop_merges", "rename", "detach", "drop", "truncate", "drop_partition":
					s.ensureScratch(db, scratch)
				}
			}
		}
	}
	res[probeKey{"", "", "system_global"}] = run(globalSystem)
	return res
}

// judgeForbidden lists what a user did that its row forbids.
//
// Promise 16 states a limit of ClickHouse 18.16: SYSTEM statements are not scoped by database,
// so a role whose row says delete on some database (its user may run them) reaches every table
// with them; for such a row a SYSTEM statement is not judged.
func judgeForbidden(user string, row map[string]access, res probeResult) []string {
	var bad []string
	deletes := false
	for _, a := range row {
		deletes = deletes || a == accDelete
	}
	for k, err := range res {
		if err != nil {
			continue
		}
		if deletes && (k.kind == "system_global" || k.kind == "system_stop_merges") {
			continue
		}
		a := row[k.db]
		what := fmt.Sprintf("%s %s", strings.ToUpper(k.kind), k.db)
		if k.object != "" {
			what += "." + k.object
		}
		switch {
		case k.kind == "system_global":
			bad = append(bad, fmt.Sprintf("%s: %q ran (a SYSTEM statement on no database)", user, globalSystem))
		case a == accNone:
			bad = append(bad, fmt.Sprintf("%s: %s worked — outside its row", user, what))
		case k.kind == "insert" && a == accRead:
			bad = append(bad, fmt.Sprintf("%s: %s worked — its row says only read", user, what))
		case k.kind != "select" && k.kind != "insert" && a != accDelete:
			bad = append(bad, fmt.Sprintf("%s: %s worked — its row says %s, not delete", user, what, a))
		case k.kind == "insert" && strings.HasSuffix(k.db, "_principals"):
			bad = append(bad, fmt.Sprintf("%s: %s worked — no role's user may write principals", user, what))
		}
	}
	sort.Strings(bad)
	return bad
}

// judgeNeeded lists what a row allows that none of the users holding it could do (the role
// could not do its job): read every table of a read database, write every table of a write
// database, delete (ALTER … DELETE) in a delete database.
func judgeNeeded(label string, row map[string]access, tbs []chTable, results []probeResult) []string {
	var bad []string
	worked := func(k probeKey) (bool, error) {
		var errs []string
		for _, r := range results {
			err, ok := r[k]
			if ok && err == nil {
				return true, nil
			}
			if ok {
				errs = append(errs, short(err))
			}
		}
		if len(errs) == 0 {
			return false, nil
		}
		return false, fmt.Errorf("%s", strings.Join(errs, " / "))
	}
	for _, db := range sortedKeys(row) {
		a := row[db]
		for _, t := range tbs {
			if t.db != db {
				continue
			}
			if a == accRead {
				if ok, err := worked(probeKey{db, t.name, "select"}); !ok {
					bad = append(bad, fmt.Sprintf("%s: cannot SELECT from %s.%s (its row says read): %v", label, db, t.name, short(err)))
				}
			}
			if a == accWrite && t.insertable() {
				if ok, err := worked(probeKey{db, t.name, "insert"}); !ok {
					bad = append(bad, fmt.Sprintf("%s: cannot INSERT into %s.%s (its row says write): %v", label, db, t.name, short(err)))
				}
			}
		}
		if a == accDelete {
			// Deleting rows (ALTER … DELETE) or whole partitions (… DROP PARTITION).
			okDel, err := worked(probeKey{db, "", "alter_delete"})
			okDrop, _ := worked(probeKey{db, "", "drop_partition"})
			if !okDel && !okDrop {
				bad = append(bad, fmt.Sprintf("%s: can neither ALTER TABLE … DELETE nor DROP PARTITION in %s (its row says delete): %v", label, db, short(err)))
			}
		}
	}
	return bad
}

func short(err error) string {
	if err == nil {
		return "no such statement tried (table or database missing?)"
	}
	m := err.Error()
	if len(m) > 160 {
		m = m[:160] + "…"
	}
	return m
}

// tableCounts is every real table's row count, as the administrator.
func (s *trustStack) tableCounts(tbs []chTable) map[string]uint64 {
	out := map[string]uint64{}
	for _, t := range tbs {
		if t.engine == "View" {
			continue
		}
		var n uint64
		if err := s.conn.QueryRow(context.Background(), "SELECT count() FROM "+quoteIdent(t.db)+"."+quoteIdent(t.name)).Scan(&n); err == nil {
			out[t.db+"."+t.name] = n
		}
	}
	return out
}

// TestTrustRoleMatrix signs in as every user 'shukei users credentials <role>' prints for each
// role and tries, on every database of the test, SELECT and INSERT on every table and every
// DDL/SYSTEM statement on a scratch table; the outcomes must match promise 16's matrix
// exactly. A self-check judges the administrator as if it were the collector (it must be
// flagged) and a role whose user can do nothing (it must be flagged as unable to work).
func TestTrustRoleMatrix(t *testing.T) {
	t.Parallel()
	s := newTrustStack(t)
	purposes := policyPurposes(t)
	dbs, tbs := s.shukeiDBs()
	have := map[string]bool{}
	for _, d := range dbs {
		have[d] = true
	}
	// Every database the matrix names exists.
	named := map[string]bool{}
	for _, role := range trustRoles {
		for d := range matrixRow(s.db, role, "", purposes) {
			named[d] = true
		}
	}
	for _, p := range purposes {
		named[s.db+"_"+p] = true
	}
	named[s.db+"_principals"] = true
	var absent []string
	for _, d := range sortedKeys(named) {
		if !have[d] {
			absent = append(absent, d)
		}
	}
	if len(absent) > 0 {
		missing(t, "promise 16's databases", fmt.Sprintf("after 'shukei migrate' these databases of the matrix do not exist: %s (there are: %s)", strings.Join(absent, ", "), strings.Join(dbs, ", ")))
	}
	before := s.tableCounts(tbs)

	// Harness: every statement works for the administrator (so a refusal means a refusal).
	{
		res := s.probe(s.conn, dbs[:1], nil, "trust_scratch_admin", randHex(3))
		for k, err := range res {
			if err != nil {
				t.Fatalf("harness: the administrator cannot run %s on %s: %v", k.kind, k.db, err)
			}
		}
	}
	// Self-check: the administrator judged as the collector is flagged; a user that can do
	// nothing judged as the processor cannot do its job.
	{
		var selfDBs []string
		var selfTbs []chTable
		for _, d := range dbs {
			if d == s.db || d == s.db+"_registry" || d == s.db+"_principals" {
				selfDBs = append(selfDBs, d)
			}
		}
		for _, tb := range tbs {
			for _, d := range selfDBs {
				if tb.db == d {
					selfTbs = append(selfTbs, tb)
				}
			}
		}
		res := s.probe(s.conn, selfDBs, selfTbs, "trust_scratch_self", randHex(3))
		flagged := judgeForbidden("default (as collector)", matrixRow(s.db, "collector", "", purposes), res)
		var insertFlag bool
		for _, f := range flagged {
			insertFlag = insertFlag || strings.Contains(f, "INSERT")
		}
		if len(flagged) == 0 || !insertFlag {
			t.Errorf("self-check: the administrator judged as the collector is not flagged for its INSERTs (%d flags): the matrix checker cannot fail", len(flagged))
		}
		nothing := probeResult{}
		for k := range res {
			nothing[k] = fmt.Errorf("refused (self-check)")
		}
		if n := judgeNeeded("self-check", matrixRow(s.db, "processor", "", purposes), selfTbs, []probeResult{nothing}); len(n) == 0 {
			t.Errorf("self-check: a processor that can do nothing is not flagged as unable to do its job")
		}
	}

	// The roles' users.
	users := map[string][]chUser{}
	for _, role := range trustRoles {
		if us, ok := s.roleUsers(role); ok {
			users[role] = us
		}
	}
	if len(users) == 0 {
		t.Fatalf("MISSING FEATURE: no role has users ('shukei users credentials'): nothing more to attack")
	}
	// Nobody of any role is the administrator, and no two roles share a user.
	seen := map[string]string{}
	for _, role := range sortedKeys(users) {
		for _, u := range users[role] {
			if u.name == servicetest_admin() {
				t.Errorf("promise 16: role %s signs in as the administrator's user %q", role, u.name)
			}
			if r, ok := seen[u.name]; ok && r != role {
				t.Errorf("promise 16: user %q is a user of both %s and %s", u.name, r, role)
			}
			seen[u.name] = role
		}
	}

	type probed struct {
		role, reader string
		user         chUser
		res          probeResult
		err          error
	}
	var mu sync.Mutex
	var all []probed
	var wg sync.WaitGroup
	i := 0
	for _, role := range sortedKeys(users) {
		for _, u := range users[role] {
			i++
			wg.Add(1)
			go func(role string, u chUser, n int) {
				defer wg.Done()
				reader := ""
				if role == "query" {
					reader = readerOf(u.name, purposes)
				}
				p := probed{role: role, reader: reader, user: u}
				conn, err := chOpen(t, u, dbs, 40*time.Second)
				if err != nil {
					p.err = err
				} else {
					p.res = s.probe(conn, dbs, tbs, fmt.Sprintf("trust_scratch_%d", n), randHex(3))
					conn.Close()
				}
				mu.Lock()
				all = append(all, p)
				mu.Unlock()
			}(role, u, i)
		}
	}
	wg.Wait()
	sort.Slice(all, func(i, j int) bool { return all[i].role+all[i].user.name < all[j].role+all[j].user.name })

	var forbidden, needed []string
	byRow := map[string][]probeResult{}
	rows := map[string]map[string]access{}
	for _, p := range all {
		label := p.role
		if p.role == "query" {
			if p.reader != "" {
				label = "query reader of " + p.reader
			} else {
				label = "query (main)"
			}
		}
		row := matrixRow(s.db, p.role, p.reader, purposes)
		rows[label] = row
		if p.err != nil {
			needed = append(needed, fmt.Sprintf("%s: user %s cannot sign in to ClickHouse within 40 s: %v", label, p.user.name, short(p.err)))
			continue
		}
		forbidden = append(forbidden, judgeForbidden(label+" user "+p.user.name, row, p.res)...)
		byRow[label] = append(byRow[label], p.res)
	}
	for _, label := range sortedKeys(rows) {
		needed = append(needed, judgeNeeded(label, rows[label], tbs, byRow[label])...)
	}
	if _, ok := users["query"]; ok {
		readers := map[string]bool{}
		for _, p := range all {
			if p.role == "query" && p.reader != "" {
				readers[p.reader] = true
			}
		}
		for _, p := range purposes {
			if !readers[p] {
				t.Logf("no query user is named as the reader of %s (users: %v)", p, users["query"])
			}
		}
	}
	reportList(t, "promise 16: ClickHouse refuses each role's users what its row of the matrix does not allow", forbidden)
	reportList(t, "promise 16: each role's users can do what its row allows (else the role cannot do its job)", needed)

	// The real tables are intact (the destructive statements ran on scratch tables only).
	_, after := s.shukeiDBs()
	afterSet := map[string]bool{}
	for _, tb := range after {
		afterSet[tb.db+"."+tb.name] = true
	}
	counts := s.tableCounts(after)
	var lost []string
	for k, n := range before {
		switch {
		case !afterSet[k]:
			lost = append(lost, k+" is gone")
		case counts[k] < n:
			lost = append(lost, fmt.Sprintf("%s has %d rows, had %d", k, counts[k], n))
		}
	}
	sort.Strings(lost)
	reportList(t, "harness/promise 16: the real tables are intact after the attack", lost)
}

// servicetest_admin is the administrator's user the tests run with.
func servicetest_admin() string {
	return "default"
}

// TestTrustRolesDoTheirJob runs the collector, processor, aggregator, query service and
// retention each with only its own role key (clickhouse.role_key_file = 'shukei users key
// <role>' prints) and an administrator user that does not exist: an event posted to the
// collector is stored and shows in a support trace; an aggregator releases a window;
// retention deletes a tenant whose contract ended long ago.
func TestTrustRolesDoTheirJob(t *testing.T) {
	t.Parallel()
	s := newTrustStack(t)
	if !s.hasSetting("SHUKEI_CLICKHOUSE_ROLE_KEY_FILE="+s.writeKey("probe.rolekey"), "clickhouse.role_key_file (SHUKEI_CLICKHOUSE_ROLE_KEY_FILE)") {
		return
	}
	keys := map[string]string{}
	for _, role := range trustRoles {
		if f, ok := s.roleKeyFile(role); ok {
			keys[role] = f
		}
	}
	if len(keys) != len(trustRoles) {
		t.Fatalf("MISSING FEATURE: role keys for only %v", sortedKeys(keys))
	}
	// Tenants on every raw partition (the aggregator closes a window once every partition has).
	// (gone, the tenant retention deletes, sends nothing after its first events.)
	live := "trl-" + randHex(3)
	gone := "trg-" + randHex(3)
	tenants := []string{live}
	covered := map[int]bool{abPartition([]byte(live), s.rawParts): true}
	for len(covered) < s.rawParts {
		c := "trc-" + randHex(3)
		if p := abPartition([]byte(c), s.rawParts); !covered[p] {
			covered[p] = true
			tenants = append(tenants, c)
		}
	}
	tokens := map[string]string{}
	for _, ten := range append([]string{gone}, tenants...) {
		tokens[ten] = s.addTenant(ten, "contracted")
	}
	sup := s.mustPrincipal("trust-sup-"+randHex(2), "employee", []string{"support"}, "", false)
	ticket := "SUP-" + strings.ToUpper(randHex(3))
	s.cli("tenants", "ticket", "open", "--tenant", live, "--ticket", ticket, "--ttl", "2h", "--by", "attack")

	col := s.startAs("collector (role key)", s.addrs["collector"], roleEnv(keys["collector"]), "collector")
	prc := s.startAs("processor (role key)", s.addrs["processor"], roleEnv(keys["processor"]), "processor")
	releases := servicetest.Topic(t, s.brokers, 1)
	aggAddr := freeAddr(t)
	agg := s.startAs("aggregator (role key)", aggAddr, append(append(abAggregatorEnv(releases, aggAddr),
		"SHUKEI_AGGREGATOR_WINDOW=1m", "SHUKEI_AGGREGATOR_ALLOWED_LATENESS=1s"), roleEnv(keys["aggregator"])...), "aggregator")
	q := s.startQueryAs("query (role key)", roleEnv(keys["query"])...)

	// Events through the collector: an operation of the live tenant (its support trace) and
	// feature uses of every tenant (the aggregator's window).
	var bad []string
	now := time.Now()
	op := pev{tenant: live, schema: "operation/v1", user: "u-" + randHex(4), item: "record.bulk_update", at: now.Add(-30 * time.Second)}
	post := func(ten string, bodies [][]byte) {
		for i, r := range postEvents(t, "http://"+s.addrs["collector"], tokens[ten], bodies) {
			if r.status != "accepted" {
				bad = append(bad, fmt.Sprintf("collector (role key): event %d of %s not accepted: %+v", i, ten, r))
			}
		}
	}
	post(live, [][]byte{op.body()})
	for _, ten := range append([]string{gone}, tenants...) {
		var bodies [][]byte
		for range 3 {
			b, _, _ := abFeature(ten, "app.record.create", now.Add(-20*time.Second))
			bodies = append(bodies, b)
		}
		post(ten, bodies)
	}
	// Stored by the processor.
	want := uint64(1 + 3*(len(tenants)+1))
	deadline := time.Now().Add(90 * time.Second)
	var stored uint64
	for time.Now().Before(deadline) {
		stored = s.count("SELECT count() FROM " + s.db + ".events")
		if stored >= want || !prc.running() {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if stored < want {
		bad = append(bad, fmt.Sprintf("processor (role key): %d of %d posted events stored in %s.events after 90 s (running %v); its last lines:\n%s", stored, want, s.db, prc.running(), tail(prc.out, 15)))
	}
	// Shown in a report.
	qv := url.Values{"purpose": {"support"}, "tenant": {live}, "ticket": {ticket}, "around_minutes": {"120"}}
	var r reply
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		r = s.do("http://"+q.api, "GET", "/v1/reports/support_trace?"+qv.Encode(), sup, nil)
		if rs, _ := r.js["rows"].([]any); r.code == 200 && len(rs) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if msg := scanCHError("support_trace", r.body); msg != "" {
		bad = append(bad, msg)
	}
	if rs, _ := r.js["rows"].([]any); r.code != 200 || len(rs) == 0 {
		bad = append(bad, fmt.Sprintf("query (role key): the posted operation does not show in the support trace: %s; its last lines:\n%s", r, tail(q.p.out, 10)))
	}

	// The aggregator releases the window (tickers past its end close it on every partition).
	ledger := s.ledgerTable()
	deadline = time.Now().Add(150 * time.Second)
	released := false
	for !released && time.Now().Before(deadline) && agg.running() {
		time.Sleep(3 * time.Second)
		for _, ten := range tenants {
			b, _, _ := abFeature(ten, "app.record.create", time.Now())
			post(ten, [][]byte{b})
		}
		released = s.count("SELECT count() FROM "+ledger) > 0
	}
	if !released {
		bad = append(bad, fmt.Sprintf("aggregator (role key): no release (no ledger charge) within 150 s (running %v); its last lines:\n%s", agg.running(), tail(agg.out, 15)))
	}

	// Retention deletes a tenant whose contract ended long ago.
	old := time.Now().AddDate(-6, 0, 0).Format("2006-01-02")
	s.cli("tenants", "set", "--tenant", gone, "--contract-end", old)
	if out, err := s.tryCLIEnv(roleEnv(keys["retention"]), "retention", "run"); err != nil {
		bad = append(bad, fmt.Sprintf("retention (role key): 'shukei retention run' failed: %v\n%s", err, tailText(out, 8)))
	}
	left := s.tenantRowsLeft(gone)
	if len(left) > 0 {
		bad = append(bad, fmt.Sprintf("retention (role key): tenant %s (contract ended %s) still has rows: %s", gone, old, strings.Join(left, ", ")))
	}
	for _, p := range []*proc{col, prc, agg, q.p} {
		if !p.running() {
			bad = append(bad, fmt.Sprintf("%s exited (%v):\n%s", p.name, p.err, tail(p.out, 15)))
		}
		s.stop(p)
	}
	reportList(t, "promise 16: every role, with only its own role key, still does its job", bad)
}

// tenantRowsLeft lists the tables of the test's databases holding rows of a tenant.
func (s *trustStack) tenantRowsLeft(tenant string) []string {
	s.t.Helper()
	ctx := context.Background()
	rows, err := s.conn.Query(ctx, "SELECT c.database, c.table FROM system.columns AS c WHERE c.name = 'tenant_id' AND (c.database = ? OR startsWith(c.database, ?))", s.db, s.db+"_")
	if err != nil {
		s.t.Fatal(err)
	}
	var tbs [][2]string
	for rows.Next() {
		var d, tb string
		_ = rows.Scan(&d, &tb)
		tbs = append(tbs, [2]string{d, tb})
	}
	rows.Close()
	var left []string
	for _, tb := range tbs {
		var engine string
		if err := s.conn.QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = ?", tb[0], tb[1]).Scan(&engine); err != nil || engine == "View" || engine == "MaterializedView" || strings.HasPrefix(tb[1], ".inner") {
			continue
		}
		var n uint64
		if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+quoteIdent(tb[0])+"."+quoteIdent(tb[1])+" WHERE toString(tenant_id) = ?", tenant).Scan(&n); err == nil && n > 0 {
			left = append(left, fmt.Sprintf("%s.%s (%d)", tb[0], tb[1], n))
		}
	}
	return left
}
