package attack

// The harness of the trust attacks (docs/promises.md 16-18, brief: TRUST.md): a stack whose
// migrate declared its users in the server's users.d, the role users and role keys of
// 'shukei users', roles started as subprocesses under any name, the audit log and the budget
// ledger found wherever migrate put them, and the keyed-MAC key files.
//
// Written from the promises, the README, the command-line help and the earlier attack harness
// alone: nothing under query/, aggregator/, anonymizer/, registry/, retention/, pipeline/,
// gate/, migrations/, databases/, audit/chain/, config/ or cmd/shukei/ was
// read.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/internal/servicetest"
)

// trustRoles are the long-running roles of promise 16's matrix.
var trustRoles = []string{"collector", "processor", "aggregator", "query", "retention"}

// chError is what no answer of the query service may carry (promise 18): ClickHouse's error
// text.
var chError = regexp.MustCompile(`DB::Exception|Code: \d+|e\.what\(\) = |Received from [^ ]+:\d+`)

// trustStack is an isolation stack (purpose readers in the server's users.d) whose files in
// users.d, whatever their name, are removed when the test ends.
type trustStack struct {
	*isoStack
}

// trustMigrate serialises the trust tests' stacks: 'shukei migrate' of two databases at once
// was seen to fail (migration 0016 looked up one test's tables in the other's database); that
// is reported, not attacked, here.
var trustMigrate sync.Mutex

func newTrustStack(t *testing.T) *trustStack {
	t.Helper()
	iso := func() *isoStack {
		trustMigrate.Lock()
		defer trustMigrate.Unlock() // newIsoStack may skip (runtime.Goexit) without services
		return newIsoStack(t)
	}()
	s := &trustStack{isoStack: iso}
	// The audit log's sequencer (audit.topic) of this test alone.
	if ok, _ := s.supportsEnv("SHUKEI_AUDIT_TOPIC=x"); ok {
		s.env = append(s.env, "SHUKEI_AUDIT_TOPIC="+servicetest.Topic(t, s.brokers, 1))
	} else {
		missing(t, "audit.topic (SHUKEI_AUDIT_TOPIC)", "this build refuses the setting")
	}
	dir, db := s.usersDir, s.db
	t.Cleanup(func() {
		// Every file migrate wrote for this database (readers, role users), by its name.
		files, _ := filepath.Glob(filepath.Join(dir, db+"*"))
		for _, f := range files {
			base := filepath.Base(f)
			if strings.HasPrefix(base, db+"-") || strings.HasPrefix(base, db+".") || strings.HasPrefix(base, db+"_") {
				_ = os.Remove(f)
			}
		}
	})
	return s
}

// hasSetting says whether this build knows a setting, and reports it missing when not.
func (s *trustStack) hasSetting(kv, what string) bool {
	s.t.Helper()
	ok, out := s.supportsEnv(kv)
	if !ok {
		missing(s.t, what, "this build refuses the setting: "+lastLine(out))
	}
	return ok
}

// hasCommand says whether 'shukei <args> --help' names the command (cobra prints the parent's
// help for an unknown subcommand of a command without arguments).
func (s *trustStack) hasCommand(args ...string) bool {
	out, err := s.tryCLI(append(append([]string(nil), args...), "--help")...)
	return err == nil && strings.Contains(out, "shukei "+strings.Join(args, " "))
}

// writeKey writes a fresh 32-byte key (64 hex digits) to a 0600 file of the test's directory.
func (s *trustStack) writeKey(name string) string {
	s.t.Helper()
	f := filepath.Join(s.dir, name)
	if err := os.WriteFile(f, []byte(randHex(32)+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return f
}

// ---- role users and role keys ----

type chUser struct{ name, password string }

// roleUsers runs 'shukei users credentials <role>' (with the administrator's configuration)
// and parses its 'user password' lines.
func (s *trustStack) roleUsers(role string) ([]chUser, bool) {
	s.t.Helper()
	out, err := s.tryCLI("users", "credentials", role)
	if err != nil {
		missing(s.t, "'shukei users credentials "+role+"'", fmt.Sprintf("%v: %s", err, tailText(out, 3)))
		return nil, false
	}
	var us []chUser
	var bad []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 2 {
			bad = append(bad, fmt.Sprintf("a line of %d fields", len(f)))
			continue
		}
		us = append(us, chUser{f[0], f[1]})
	}
	if len(bad) > 0 {
		s.t.Errorf("promise 16: 'shukei users credentials %s' prints one 'user password' per line; it printed %s", role, strings.Join(bad, ", "))
	}
	if len(us) == 0 {
		s.t.Errorf("promise 16: 'shukei users credentials %s' printed no user", role)
		return nil, false
	}
	return us, true
}

// roleKeyFile writes the output of 'shukei users key <role>' to a 0600 file and returns its path.
func (s *trustStack) roleKeyFile(role string) (string, bool) {
	s.t.Helper()
	out, err := s.tryCLI("users", "key", role)
	if err != nil {
		missing(s.t, "'shukei users key "+role+"'", fmt.Sprintf("%v: %s", err, tailText(out, 3)))
		return "", false
	}
	f := filepath.Join(s.dir, role+".rolekey")
	if err := os.WriteFile(f, []byte(strings.TrimSpace(out)+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return f, true
}

// roleEnv is what a role runs with under promise 16: its own role key, and an administrator
// user that does not exist with a random password — so a role falling back on
// clickhouse.username/password cannot sign in at all.
func roleEnv(keyFile string) []string {
	return []string{
		"SHUKEI_CLICKHOUSE_ROLE_KEY_FILE=" + keyFile,
		"SHUKEI_CLICKHOUSE_USERNAME=trust_not_the_admin_" + randHex(3),
		"SHUKEI_CLICKHOUSE_PASSWORD=" + randHex(12),
	}
}

// chOpen signs in as user and pings, trying each database (the connection's default
// database must be one the user may use). It waits up to wait for the server to load users.d.
func chOpen(t *testing.T, u chUser, dbs []string, wait time.Duration) (driver.Conn, error) {
	opts := servicetest.Config(t).ClickHouse.Options()
	deadline := time.Now().Add(wait)
	for {
		var lastErr error
		for _, db := range append(append([]string(nil), dbs...), "") {
			o := *opts
			o.Auth = clickhouse.Auth{Database: db, Username: u.name, Password: u.password}
			o.MaxOpenConns, o.MaxIdleConns = 2, 1
			conn, err := clickhouse.Open(&o)
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err = conn.Ping(ctx)
				cancel()
				if err == nil {
					return conn, nil
				}
				conn.Close()
			}
			lastErr = err
		}
		if time.Now().After(deadline) {
			return nil, lastErr
		}
		time.Sleep(time.Second)
	}
}

// ---- starting roles under any name ----

// startAs starts 'shukei <args…>' as a role labelled label, waits for /healthz on health
// ("" to wait for nothing) and returns it.
func (s *trustStack) startAs(label, health string, env []string, args ...string) *proc {
	s.t.Helper()
	p := &proc{name: label, out: s.addOutput(label), done: make(chan struct{})}
	p.cmd = exec.Command(s.bin, args...)
	p.cmd.Dir, p.cmd.Env = s.dir, append(append([]string(nil), s.env...), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", label, err)
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	if health == "" {
		return p
	}
	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get("http://" + health + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if !p.running() {
			s.t.Fatalf("%s exited during start-up (%v):\n%s", label, p.err, tail(p.out, 40))
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: /healthz on %s does not answer 200 after 60s:\n%s", label, health, tail(p.out, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// queryService is one running 'shukei query'.
type queryService struct {
	p        *proc
	api, ops string
}

// startQueryAs starts one more query service with extra settings.
func (s *trustStack) startQueryAs(label string, env ...string) *queryService {
	s.t.Helper()
	q := &queryService{api: freeAddr(s.t), ops: freeAddr(s.t)}
	e := append([]string{"SHUKEI_QUERY_LISTEN=" + q.api, "SHUKEI_QUERY_OPS_LISTEN=" + q.ops}, env...)
	q.p = s.startAs(label, q.ops, e, "query")
	return q
}

// ---- the trails ----

// findTable is the database.table of the first database among candidates holding a table of
// that name.
func (s *trustStack) findTable(table string, candidates ...string) (string, bool) {
	s.t.Helper()
	for _, db := range candidates {
		var n uint64
		if err := s.conn.QueryRow(context.Background(), "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db, table).Scan(&n); err == nil && n > 0 {
			return db + "." + table, true
		}
	}
	return "", false
}

// auditTable is where the audit log is: <db>_audit (promise 16) or, in an older layout, <db>.
func (s *trustStack) auditTable() string {
	s.t.Helper()
	if tb, ok := s.findTable("audit_log", s.db+"_audit", s.db); ok {
		return tb
	}
	s.t.Fatalf("harness: no audit_log table in %s_audit or %s", s.db, s.db)
	return ""
}

// ledgerTable is where the budget ledger is: <db>_external_aggregate (promise 16).
func (s *trustStack) ledgerTable() string {
	s.t.Helper()
	if tb, ok := s.findTable("budget_ledger", s.db+"_external_aggregate", s.db); ok {
		return tb
	}
	s.t.Fatalf("harness: no budget_ledger table in %s_external_aggregate", s.db)
	return ""
}

// trustAudit is one audit record, as far as these attacks read it.
type trustAudit struct {
	seq                                                uint64
	principal, purpose, report, decision, reason, kind string
}

func (s *trustStack) auditRecords(where string, args ...any) map[uint64][]trustAudit {
	s.t.Helper()
	rows, err := s.conn.Query(context.Background(), "SELECT seq, principal_id, principal_kind, purpose, report, decision, reason FROM "+s.auditTable()+" WHERE "+where, args...)
	if err != nil {
		s.t.Fatalf("read the audit log: %v", err)
	}
	defer rows.Close()
	out := map[uint64][]trustAudit{}
	for rows.Next() {
		var a trustAudit
		if err := rows.Scan(&a.seq, &a.principal, &a.kind, &a.purpose, &a.report, &a.decision, &a.reason); err != nil {
			s.t.Fatal(err)
		}
		out[a.seq] = append(out[a.seq], a)
	}
	return out
}

func (s *trustStack) count(q string, args ...any) uint64 {
	s.t.Helper()
	var n uint64
	if err := s.conn.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// scanCHError reports answers carrying ClickHouse's error text.
func scanCHError(what string, body []byte) string {
	if m := chError.Find(body); m != nil {
		b := string(body)
		if len(b) > 200 {
			b = b[:200] + "…"
		}
		return fmt.Sprintf("%s: the answer carries ClickHouse's error text %q: %s", what, m, b)
	}
	return ""
}

// jsonSeq is the audit_seq of a JSON answer body.
func jsonSeq(body []byte) (uint64, bool) {
	var js struct {
		Seq *json.Number `json:"audit_seq"`
	}
	if json.Unmarshal(body, &js) != nil || js.Seq == nil {
		return 0, false
	}
	n, err := js.Seq.Int64()
	return uint64(n), err == nil && n >= 0
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
