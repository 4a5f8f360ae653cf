package attack

// The harness of the isolation attacks (docs/promises.md 9-12, brief: ISOLATION.md): a stack
// with the purpose readers declared in the server's users.d, the query service run as a
// subprocess, principals, the audit log, sealing, and events planted in past ISO weeks.
//
// Written from the promises, the README, the command-line help, the OpenAPI document, the DDL
// and the dashboards alone: nothing under query/ or aggregator/ was read.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/shukei/shukei/internal/servicetest"
)

// isoMaxAge lets the processor take events of the past five ISO weeks (the attacks plant
// history; promise 9's interface says to raise events.max_age for that).
const isoMaxAge = "1200h"

// isoK is the policy's k (policy/v1.yaml says 5; query.k may only raise it).
const isoK = 5

// isoStack is a stack whose migrate declared the purpose readers in the server's users.d, and
// that runs the query service.
type isoStack struct {
	*stack
	usersDir string
	api      string // query.listen
	ops      string // query.ops_listen, "" when this build has no such setting
	query    *proc
	http     *http.Client

	auditMu       sync.Mutex
	auditHasTenat *bool
}

func newIsoStack(t *testing.T) *isoStack {
	t.Helper()
	usersDir := servicetest.UsersDir(t)
	s := &isoStack{usersDir: usersDir, http: &http.Client{Timeout: 30 * time.Second}}
	// No clickhouse.dashboards_password_file: promise 10 says Grafana holds no ClickHouse
	// credentials; the dashboards attacks try that old setting on a run of their own.
	s.stack = newStackEnv(t, 2*time.Second,
		"SHUKEI_CLICKHOUSE_USERS_DIR="+usersDir,
		"SHUKEI_EVENTS_MAX_AGE="+isoMaxAge,
	)
	db := s.db
	t.Cleanup(func() {
		_ = os.Remove(filepath.Join(usersDir, db+"-readers.xml"))
		_ = os.Remove(filepath.Join(usersDir, db+"-users.xml"))
	})
	return s
}

// missing reports an interface piece this build does not have: the attack that needs it fails
// (a missing feature, not a finding), and the test goes on with what exists.
func missing(t *testing.T, what string, detail string) {
	t.Helper()
	t.Errorf("MISSING FEATURE: %s — %s", what, strings.TrimSpace(detail))
}

// tryCLIEnv runs the binary with extra environment for this run only (settings other roles
// would refuse as unknown if this build lacks them).
func (s *isoStack) tryCLIEnv(extra []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := s.addOutput("shukei " + strings.Join(args, " ") + " (" + strings.Join(extra, " ") + ")")
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Dir, cmd.Env = s.dir, append(append([]string(nil), s.env...), extra...)
	cmd.Stdout, cmd.Stderr = o, o
	err := cmd.Run()
	return o.String(), err
}

// supportsEnv says whether this build knows a setting ('shukei config' refuses unknown
// SHUKEI_* variables).
func (s *isoStack) supportsEnv(kv string) (bool, string) {
	out, err := s.tryCLIEnv([]string{kv}, "config")
	return err == nil, out
}

// ---- principals ----

var principalToken = regexp.MustCompile(`\b(shq_[A-Za-z0-9_-]+)`)

var approverFlagOnce sync.Once
var approverFlag bool

// addPrincipal runs 'shukei principals add' and returns the token (or the error and output).
// approver asks for the break-glass approver grant (--approver); a build without the flag gets
// the principal without it, and the caller is told (approverOK=false).
func (s *isoStack) addPrincipal(id, kind string, purposes []string, expires string, approver bool) (token, out string, err error) {
	s.t.Helper()
	approverFlagOnce.Do(func() {
		help, _ := s.tryCLI("principals", "add", "--help")
		approverFlag = strings.Contains(help, "--approver")
	})
	args := []string{"principals", "add", "--id", id, "--kind", kind, "--purposes", strings.Join(purposes, ",")}
	if expires != "" {
		args = append(args, "--expires", expires)
	}
	if kind == "contractor" {
		args = append(args, "--contract-ref", "C-"+strings.ToUpper(randHex(2)))
		if expires == "" {
			args = append(args, "--expires", time.Now().UTC().AddDate(0, 3, 0).Format("2006-01-02"))
		}
	}
	if approver && approverFlag {
		args = append(args, "--approver")
	}
	out, err = s.tryCLI(args...)
	if err != nil {
		return "", out, err
	}
	m := principalToken.FindStringSubmatch(out)
	if m == nil {
		s.t.Fatalf("harness: 'shukei %s' printed no shq_ token:\n%s", strings.Join(args, " "), out)
	}
	return m[1], out, nil
}

// mustPrincipal is addPrincipal that ends the test on failure.
func (s *isoStack) mustPrincipal(id, kind string, purposes []string, expires string, approver bool) string {
	s.t.Helper()
	tok, out, err := s.addPrincipal(id, kind, purposes, expires, approver)
	if err != nil {
		s.t.Fatalf("shukei principals add --id %s --kind %s --purposes %s (approver %v): %v\n%s", id, kind, strings.Join(purposes, ","), approver, err, out)
	}
	return tok
}

// ---- the query service ----

// startQuery starts 'shukei query' on a free query.listen and, when this build has it, a free
// query.ops_listen (where /healthz, /readyz and /metrics move).
func (s *isoStack) startQuery() {
	s.t.Helper()
	s.api = freeAddr(s.t)
	env := []string{"SHUKEI_QUERY_LISTEN=" + s.api}
	probeOps := freeAddr(s.t)
	if ok, out := s.supportsEnv("SHUKEI_QUERY_OPS_LISTEN=" + probeOps); ok {
		s.ops = probeOps
		env = append(env, "SHUKEI_QUERY_OPS_LISTEN="+s.ops)
		s.addrs["query"] = s.ops
	} else {
		missing(s.t, "query.ops_listen (SHUKEI_QUERY_OPS_LISTEN)", "this build refuses the setting; /healthz is looked for on query.listen instead: "+lastLine(out))
		s.addrs["query"] = s.api
	}
	s.query = s.start("query", env...)
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

// reply is one HTTP answer.
type reply struct {
	method, path string
	code         int
	body         []byte
	js           map[string]any
	header       http.Header
	err          error
	start, done  time.Time
}

func (r reply) String() string {
	b := string(r.body)
	if len(b) > 300 {
		b = b[:300] + "…"
	}
	if r.err != nil {
		return fmt.Sprintf("%s %s: %v", r.method, r.path, r.err)
	}
	return fmt.Sprintf("%s %s → HTTP %d %s", r.method, r.path, r.code, strings.TrimSpace(b))
}

func (r reply) auditSeq() (uint64, bool) {
	if r.js == nil {
		return 0, false
	}
	switch v := r.js["audit_seq"].(type) {
	case float64:
		return uint64(v), true
	case json.Number:
		n, err := v.Int64()
		return uint64(n), err == nil
	}
	return 0, false
}

func (r reply) str(key string) string {
	if r.js == nil {
		return ""
	}
	v, _ := r.js[key].(string)
	return v
}

// do sends one request to base (http://host:port) with the token ("" for none).
func (s *isoStack) do(base, method, path, token string, body any) reply {
	r := reply{method: method, path: path, start: time.Now()}
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case []byte:
			rd = bytes.NewReader(b)
		case string:
			rd = strings.NewReader(b)
		default:
			j, _ := json.Marshal(b)
			rd = bytes.NewReader(j)
		}
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		r.err = err
		return r
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.http.Do(req)
	r.done = time.Now()
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.code = resp.StatusCode
	r.header = resp.Header
	r.body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	var js map[string]any
	if json.Unmarshal(r.body, &js) == nil {
		r.js = js
	}
	return r
}

func (s *isoStack) apiDo(method, path, token string, body any) reply {
	return s.do("http://"+s.api, method, path, token, body)
}

// ---- the audit log ----

type auditRec struct {
	seq                                                        uint64
	principal, kind, purpose, ticket, report, decision, reason string
	tenant                                                     string
}

func (s *isoStack) auditHasTenant() bool {
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	if s.auditHasTenat == nil {
		var n uint64
		_ = s.conn.QueryRow(context.Background(), "SELECT count() FROM system.columns WHERE database = ? AND table = 'audit_log' AND name = 'tenant_id'", s.db+"_audit").Scan(&n)
		b := n > 0
		s.auditHasTenat = &b
	}
	return *s.auditHasTenat
}

const auditCols = "seq, principal_id, principal_kind, purpose, ticket, report, decision, reason"

func (s *isoStack) auditQuery(where string, args ...any) []auditRec {
	s.t.Helper()
	cols := auditCols
	if s.auditHasTenant() {
		cols += ", tenant_id"
	} else {
		cols += ", ''"
	}
	rows, err := s.conn.Query(context.Background(), "SELECT "+cols+" FROM "+s.db+"_audit.audit_log WHERE "+where+" ORDER BY seq", args...)
	if err != nil {
		s.t.Fatalf("read the audit log: %v", err)
	}
	defer rows.Close()
	var out []auditRec
	for rows.Next() {
		var a auditRec
		if err := rows.Scan(&a.seq, &a.principal, &a.kind, &a.purpose, &a.ticket, &a.report, &a.decision, &a.reason, &a.tenant); err != nil {
			s.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func (s *isoStack) auditBySeq(seq uint64) (auditRec, bool) {
	rs := s.auditQuery("seq = ?", seq)
	if len(rs) == 0 {
		return auditRec{}, false
	}
	return rs[0], true
}

// allowedDecision says whether an audit decision records something done (not refused).
func allowedDecision(d string) bool {
	d = strings.ToLower(d)
	for _, bad := range []string{"den", "refus", "reject", "fail", "invalid", "error", "forbid", "unauth"} {
		if strings.Contains(d, bad) {
			return false
		}
	}
	return d != ""
}

// checkRefused checks that r is a refusal (a 4xx, not a 2xx, not a 5xx) and that its audit
// record (the answer's audit_seq) is in the audit log as a refusal, naming actor (when the
// record names a principal at all). It returns a list of violations (empty when fine).
func (s *isoStack) checkRefused(r reply, actor, what string) []string {
	var bad []string
	if r.err != nil || r.code < 400 || r.code >= 500 {
		return []string{fmt.Sprintf("%s: want a refusal (4xx), got %s", what, r)}
	}
	seq, ok := r.auditSeq()
	if !ok {
		return []string{fmt.Sprintf("%s: refused (HTTP %d) without an audit_seq: the refusal cannot be found in the audit log (%s)", what, r.code, r)}
	}
	a, found := s.auditBySeq(seq)
	switch {
	case !found:
		bad = append(bad, fmt.Sprintf("%s: refused (HTTP %d) with audit_seq %d, which is not in %s.audit_log", what, r.code, seq, s.db))
	case allowedDecision(a.decision) && !strings.Contains(strings.ToLower(a.decision), "refus"):
		bad = append(bad, fmt.Sprintf("%s: refused (HTTP %d) but its audit record %d says decision %q", what, r.code, seq, a.decision))
	case actor != "" && a.principal != "" && a.principal != actor:
		bad = append(bad, fmt.Sprintf("%s: the audit record %d of this refusal names principal %q, not %q", what, seq, a.principal, actor))
	}
	return bad
}

// ---- sealing ----

// seal runs one sealing pass ('shukei atoms seal' with aggregator.seal_after=0s). It reports a
// missing command or setting once per test and returns false then.
func (s *isoStack) seal() bool {
	s.t.Helper()
	out, err := s.tryCLIEnv([]string{"SHUKEI_AGGREGATOR_SEAL_AFTER=0s"}, "atoms", "seal")
	if err != nil {
		missing(s.t, "'shukei atoms seal' with aggregator.seal_after=0s", fmt.Sprintf("%v: %s", err, tailText(out, 6)))
		return false
	}
	s.t.Logf("shukei atoms seal: %s", tailText(out, 4))
	return true
}

func tailText(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " | ")
}

// ---- planting events in past weeks ----

// isoWeeks are the Mondays (00:00 UTC) of the last n complete ISO weeks, oldest first, and
// the Monday of the current week.
func isoWeeks(n int) ([]time.Time, time.Time) {
	now := time.Now().UTC()
	d := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	for d.Weekday() != time.Monday {
		d = d.AddDate(0, 0, -1)
	}
	var out []time.Time
	for i := n; i >= 1; i-- {
		out = append(out, d.AddDate(0, 0, -7*i))
	}
	return out, d
}

// pev is one planted event.
type pev struct {
	tenant string
	schema string // feature_use/v1, app_access/v1, tenant_profile/v1, operation/v1
	user   string // "" for none
	item   string // feature id, app id or operation id
	count  int
	at     time.Time
}

// body is the event as a collector sends it (the shapes of schemas/testdata/valid).
func (e pev) body() []byte {
	ev := map[string]any{
		"event_id":    uuid.NewString(),
		"tenant_id":   e.tenant,
		"occurred_at": e.at.UTC().Format(time.RFC3339),
		"schema":      e.schema,
		"source":      "web-sdk",
	}
	client := map[string]any{"os": "windows", "os_version": "10.0.22631", "device_kind": "desktop"}
	switch e.schema {
	case "feature_use/v1":
		ev["user"], ev["client"] = e.user, client
		ev["data"] = map[string]any{"feature_id": e.item, "count": e.count, "records_registered": e.count}
	case "app_access/v1":
		ev["user"], ev["client"] = e.user, client
		ev["data"] = map[string]any{"app_id": e.item, "action": "open"}
	case "operation/v1":
		ev["user"], ev["source"] = e.user, "api-gateway"
		ev["client"] = map[string]any{"os": "other", "device_kind": "other"}
		ev["data"] = map[string]any{"operation_id": e.item, "app_id": "1047", "result_code": "ok", "request_id": randHex(16)}
	case "tenant_profile/v1":
		ev["source"] = "batch-tenant-profile"
		ev["data"] = map[string]any{"user_count": 10 + e.count, "organization_count": 3}
	default:
		panic("harness: unknown schema " + e.schema)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	return b
}

// plant writes the events straight to the raw topic, runs the processor until the store
// accounts for every raw offset, and checks every planted event was stored (a refused one is a
// harness error: the attack needs its data in).
func (s *isoStack) plant(evs []pev) {
	s.t.Helper()
	var msgs []rawMsg
	want := map[string]int{}
	for _, e := range evs {
		msgs = append(msgs, rawMsg{key: []byte(e.tenant), value: e.body()})
		want[e.tenant]++
	}
	before := s.storedByTenant()
	s.produce(msgs)
	var total int64
	for _, o := range s.endOffsets(s.raw, s.rawParts) {
		total += o
	}
	if !s.runProcessor(int(total), 2*time.Minute) {
		s.t.Fatalf("harness: the processor did not account for the planted events")
	}
	after := s.storedByTenant()
	var bad []string
	for ten, n := range want {
		if got := after[ten] - before[ten]; got != n {
			bad = append(bad, fmt.Sprintf("%s: %d of %d stored", ten, got, n))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		var reasons []string
		rows, err := s.conn.Query(context.Background(), "SELECT reason, count() FROM "+s.db+".rejections WHERE class != 'checkpoint' GROUP BY reason")
		if err == nil {
			for rows.Next() {
				var r string
				var c uint64
				_ = rows.Scan(&r, &c)
				reasons = append(reasons, fmt.Sprintf("%s×%d", r, c))
			}
			rows.Close()
		}
		s.t.Fatalf("harness: planted events were not stored (%s); refusals: %s", strings.Join(bad, "; "), strings.Join(reasons, ", "))
	}
}

func (s *isoStack) storedByTenant() map[string]int {
	s.t.Helper()
	out := map[string]int{}
	rows, err := s.conn.Query(context.Background(), "SELECT tenant_id, count() FROM "+s.db+".events GROUP BY tenant_id")
	if err != nil {
		s.t.Fatalf("count stored events: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ten string
		var n uint64
		if err := rows.Scan(&ten, &n); err != nil {
			s.t.Fatal(err)
		}
		out[ten] = int(n)
	}
	return out
}

// ---- signing in to ClickHouse as some user ----

// chTry signs in to ClickHouse as user with password, into each of dbs in turn, and returns
// the first database it got in to ("" and the last error when none). It does not wait: the
// caller makes sure the server has loaded users.d (the query service waits for its readers).
func (s *isoStack) chTry(user, password string, dbs ...string) (string, error) {
	opts := servicetest.Config(s.t).ClickHouse.Options()
	var lastErr error
	for _, db := range dbs {
		o := *opts
		o.Auth = clickhouse.Auth{Database: db, Username: user, Password: password}
		conn, err := clickhouse.Open(&o)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = conn.Ping(ctx)
			cancel()
			conn.Close()
			if err == nil {
				return db, nil
			}
		}
		lastErr = err
	}
	return "", lastErr
}

// readAll runs a query and returns the column names and every row with each value printed
// (pointers followed, byte slices as text).
func readAll(ctx context.Context, conn driver.Conn, q string, args ...any) ([]string, [][]string, error) {
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	var names []string
	for _, ct := range types {
		names = append(names, ct.Name())
	}
	var out [][]string
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return names, out, err
		}
		row := make([]string, len(dest))
		for i, d := range dest {
			row[i] = printValue(reflect.ValueOf(d))
		}
		out = append(out, row)
	}
	return names, out, rows.Err()
}

func printValue(v reflect.Value) string {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return "NULL"
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, v.Len())
			for i := range b {
				b[i] = byte(v.Index(i).Uint())
			}
			return string(b)
		}
		var parts []string
		for i := range v.Len() {
			parts = append(parts, printValue(v.Index(i)))
		}
		sort.Strings(parts) // groupUniqArray and the like have no order
		return "[" + strings.Join(parts, ",") + "]"
	case reflect.Float32, reflect.Float64:
		return fmt.Sprintf("%.6g", v.Float())
	}
	if t, ok := v.Interface().(time.Time); ok {
		return t.UTC().Format(time.RFC3339)
	}
	return fmt.Sprint(v.Interface())
}

// ---- printable-only ----

// unprintable finds the first character of s that is not printable text: C0 controls (tab,
// newline and carriage return included), DEL, C1 controls, bidi embeddings, overrides and
// isolates, line and paragraph separators, zero-width characters and invalid UTF-8.
func unprintable(s string) (rune, int, bool) {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				return r, i, true // invalid UTF-8
			}
		}
		switch {
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
			return r, i, true
		case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
			return r, i, true
		case r == 0x2028, r == 0x2029, r >= 0x200b && r <= 0x200d, r == 0xfeff:
			return r, i, true
		}
	}
	return 0, 0, false
}
