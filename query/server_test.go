package query_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/query"
	"github.com/shukei/shukei/query/breakglass"
	"github.com/shukei/shukei/query/principal"
	"github.com/shukei/shukei/registry"
)

// Purpose bits of the event store (0003_purpose_marts.sql).
const (
	bitSupport   = 1
	bitSI        = 2
	bitMarketing = 4
	bitFollowUp  = 8
	bitInterview = 16
	internalAll  = bitSupport | bitSI | bitMarketing | bitFollowUp | bitInterview
)

// asOf is the last day the tests' reports read; the data sits in the two weeks before it.
var asOf = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)

type ev struct {
	tenant, category, item, user, status, edition, band string
	at                                                  time.Time
	uses                                                uint32
	purposes                                            uint16
	op, code                                            string
}

type fixture struct {
	t       testing.TB
	conn    driver.Conn
	db      string
	srv     *httptest.Server
	reg     *registry.Registry
	log     *audit.Log
	tokens  map[string]string
	now     time.Time
	readers map[string]driver.Conn
}

func insert(t testing.TB, conn driver.Conn, db string, evs []ev) {
	t.Helper()
	ctx := context.Background()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".events (event_id, tenant_id, occurred_at, ingested_at, category, schema_version, source, user_pseudonym, os, os_major, device_kind, contract_status, edition, size_band, purposes, policy_version, app_id, action, feature_id, use_count, operation_id, result_code, request_id)")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		var app, feature, action string
		switch e.category {
		case "app_access", "operation":
			app, action = e.item, "open"
		default:
			feature = e.item
		}
		purposes := e.purposes
		if purposes == 0 {
			purposes = internalAll
		}
		if err := b.Append(uuid.New(), e.tenant, e.at, time.Now().UTC(), e.category, uint8(1), "test", fmt.Sprintf("%-16.16s", e.tenant+"/"+e.user),
			"windows", uint16(11), "desktop", e.status, e.edition, e.band, purposes, uint16(1), app, action, feature, e.uses,
			e.op, e.code, "req-"+e.user); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatalf("insert events: %v", err)
	}
}

// newFixture migrates a database of the test's own, declares the purpose readers, registers
// principals and starts the service on loopback.
func newFixture(t testing.TB, evs []ev) *fixture {
	conn, cfg := servicetest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	master, _ := pseudonym.ParseMasterKey(pseudonym.NewMasterKeyText())
	readers := migrations.Readers(db, master.Derive("test-query"))
	path, err := migrations.WriteUsers(servicetest.UsersDir(t), db, migrations.ReaderUsers(readers), []string{"127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	f := &fixture{t: t, conn: conn, db: db, tokens: map[string]string{}, readers: map[string]driver.Conn{},
		now: time.Now().UTC().Truncate(time.Second)}
	for _, r := range readers {
		rc, err := migrations.OpenReader(ctx, cfg.ClickHouse.Options(), r, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		f.readers[r.Purpose] = rc
	}
	insert(t, conn, db, evs)
	servicetest.SealWeeks(t, conn, db, 5)

	store := principal.New(conn, db)
	for _, p := range []principal.Principal{
		{ID: "pm", Kind: principal.Employee, Purposes: []string{"service_improvement", "marketing", "follow_up", "interview_selection"}},
		{ID: "helpdesk", Kind: principal.Employee, Purposes: []string{"support"}},
		{ID: "agency", Kind: principal.Contractor, Purposes: []string{"marketing"}, ContractRef: "C-2026-7", Expires: f.now.Add(24 * time.Hour)},
		{ID: "old-agency", Kind: principal.Contractor, Purposes: []string{"marketing"}, ContractRef: "C-2025-1", Expires: f.now.Add(-time.Hour)},
		{ID: "partner", Kind: principal.Partner, Purposes: []string{"external_aggregate"}},
		{ID: "investigator", Kind: principal.Employee, Purposes: []string{"service_improvement", "support"}},
		{ID: "dpo", Kind: principal.Employee, Purposes: []string{"service_improvement"}, Roles: []string{principal.RoleBreakGlassApprover}},
		{ID: "group-dpo", Kind: principal.Affiliate, Purposes: []string{"support"}, Roles: []string{principal.RoleBreakGlassApprover}},
		{ID: "support-agency", Kind: principal.Contractor, Purposes: []string{"support"}, ContractRef: "C-2026-9", Expires: f.now.Add(24 * time.Hour)},
		{ID: "gone", Kind: principal.Employee, Purposes: []string{"support"}, Roles: []string{principal.RoleBreakGlassApprover}, Disabled: true},
	} {
		tok, err := store.Add(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[p.ID] = tok
	}
	f.reg = registry.New(conn, db, master)
	// Every tenant of the data is registered, with the status of its latest event (the
	// per-tenant reports show the current status, from the registry).
	latest := map[string]ev{}
	for _, e := range evs {
		if l, ok := latest[e.tenant]; !ok || e.at.After(l.at) {
			latest[e.tenant] = e
		}
	}
	for id, e := range latest {
		if _, err := f.reg.Add(ctx, registry.Tenant{ID: id, Status: e.status, Edition: e.edition, SizeBand: e.band}); err != nil {
			t.Fatal(err)
		}
	}
	f.log = audit.New(conn, db)
	f.srv = httptest.NewServer(f.server(f.log))
	t.Cleanup(f.srv.Close)
	return f
}

// testConfig is the service's configuration in these tests: max_rows, timeout and
// support_lookback set, the other query settings zero (New's defaults).
func testConfig() config.Config {
	var c config.Config
	c.Query = config.Query{MaxRows: 1000, Timeout: 10 * time.Second, SupportLookback: 7 * 24 * time.Hour}
	return c
}

func (f *fixture) server(log *audit.Log) *query.Server {
	s, err := query.New(testConfig(), query.Deps{
		Principals: principal.New(f.conn, f.db), Audit: log, Tickets: f.reg, Readers: f.readers, Database: f.db,
		K: 5, Budget: ledger.Budget{Epsilon: 31, Delta: 1e-6},
		BreakGlass: breakglass.New(f.conn, f.db, principal.New(f.conn, f.db), log),
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// get requests path as principal who ("" for no token) and returns the status and body.
func (f *fixture) get(who, path string, q url.Values) (int, []byte, http.Header) {
	f.t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path+"?"+q.Encode(), nil)
	if who != "" {
		tok := f.tokens[who]
		if tok == "" {
			tok = who // a raw token
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

type result struct {
	K        int              `json:"k"`
	Rows     []map[string]any `json:"rows"`
	AuditSeq uint64           `json:"audit_seq"`
	Error    string           `json:"error"`
}

// report runs a report and decodes its answer, failing unless the status is want.
func (f *fixture) report(who, name string, want int, kv ...string) result {
	f.t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Add(kv[i], kv[i+1])
	}
	status, body, _ := f.get(who, "/v1/reports/"+name, q)
	if status != want {
		f.t.Fatalf("%s %s %v: status %d, want %d: %s", who, name, q, status, want, body)
	}
	var r result
	if err := json.Unmarshal(body, &r); err != nil {
		f.t.Fatalf("%s: %v: %s", name, err, body)
	}
	return r
}

// lastAudit returns the newest audit record.
func (f *fixture) lastAudit() audit.Record {
	f.t.Helper()
	var r audit.Record
	if err := f.conn.QueryRow(context.Background(), "SELECT seq, principal_id, principal_kind, contract_ref, purpose, ticket, report, decision, reason, rows, tenant_id FROM "+f.db+"_audit.audit_log ORDER BY seq DESC LIMIT 1").
		Scan(&r.Seq, &r.Principal, &r.Kind, &r.ContractRef, &r.Purpose, &r.Ticket, &r.Report, &r.Decision, &r.Reason, &r.Rows, &r.Tenant); err != nil {
		f.t.Fatal(err)
	}
	return r
}

// tenants returns n tenant ids prefix1..prefixN.
func tenants(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	return out
}

func use(ts []string, feature, status, edition string, at time.Time, users int) []ev {
	var out []ev
	for _, t := range ts {
		for u := range users {
			out = append(out, ev{tenant: t, category: "feature_use", item: feature, user: fmt.Sprintf("u%d", u), status: status,
				edition: edition, band: "m", at: at, uses: 2})
		}
	}
	return out
}

func n(v any) float64 {
	f, _ := v.(float64)
	return f
}

func find(rows []map[string]any, kv ...string) map[string]any {
	for _, r := range rows {
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			if fmt.Sprint(r[kv[i]]) != kv[i+1] {
				ok = false
			}
		}
		if ok {
			return r
		}
	}
	return nil
}

func httptestServer(t *testing.T, h http.Handler) *httptest.Server {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// Every request checks that its principal is enabled, unexpired and of a known kind — whoami
// and break-glass too — and a refusal is audited.
func TestAuthenticateRefusesDisabledAndExpired(t *testing.T) {
	f := newFixture(t, nil)
	for _, c := range []struct{ who, method, path, want string }{
		{"old-agency", "GET", "/v1/whoami", "grant expired"},
		{"gone", "GET", "/v1/whoami", "principal disabled"},
		{"old-agency", "POST", "/v1/breakglass", "grant expired"},
		{"gone", "POST", "/v1/breakglass/bg-0/approve", "principal disabled"},
		{"gone", "POST", "/v1/breakglass/bg-0/revoke", "principal disabled"},
	} {
		var status int
		var body string
		if c.method == "GET" {
			st, b, _ := f.get(c.who, c.path, nil)
			status, body = st, string(b)
		} else {
			st, m := f.post(c.who, c.path, map[string]any{"tenant": "acme", "clause": "3(2)-7", "justification": "x", "ttl": "1h"})
			status, body = st, fmt.Sprint(m)
		}
		if status != 403 || !strings.Contains(body, c.want) {
			t.Errorf("%s %s as %s: %d %s", c.method, c.path, c.who, status, body)
		}
		if a := f.lastAudit(); a.Principal != c.who || a.Decision != audit.Denied || !strings.Contains(a.Reason, c.want) {
			t.Errorf("%s %s as %s: audit record %+v", c.method, c.path, c.who, a)
		}
	}
	if status, body, _ := f.get("agency", "/v1/whoami", nil); status != 200 {
		t.Errorf("whoami of a contractor in force: %d %s", status, body)
	}
}
