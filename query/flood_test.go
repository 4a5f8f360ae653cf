package query_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/query"
	"github.com/shukei/shukei/query/breakglass"
	"github.com/shukei/shukei/query/principal"
	"github.com/shukei/shukei/registry"
)

// serveWith starts a second service over the fixture's database with options of its own.
func (f *fixture) serveWith(mod func(*config.Query, *query.Deps)) (*httptest.Server, *query.Server, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	cfg := testConfig()
	d := query.Deps{
		Principals: principal.New(f.conn, f.db), Audit: f.log, Tickets: f.reg, Readers: f.readers, Database: f.db,
		K: 5, Budget: ledger.Budget{Epsilon: 31, Delta: 1e-6},
		BreakGlass: breakglass.New(f.conn, f.db, principal.New(f.conn, f.db), f.log),
		Registry:   reg,
	}
	if mod != nil {
		mod(&cfg.Query, &d)
	}
	s, err := query.New(cfg, d)
	if err != nil {
		f.t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	f.t.Cleanup(func() { srv.Close(); s.Close() })
	return srv, s, reg
}

// metric reads one counter or gauge (without labels) of reg.
func metric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// auditRows counts the fixture's audit records.
func (f *fixture) auditRows() uint64 {
	f.t.Helper()
	var n uint64
	if err := f.conn.QueryRow(context.Background(), "SELECT count() FROM "+f.db+"_audit.audit_log").Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// floodClient sends requests without a valid token: none, a malformed header, a made-up token.
type floodClient struct {
	base   string
	client *http.Client
	sent   atomic.Int64
	codes  sync.Map // status → *atomic.Int64
	seqs   sync.Map // audit_seq → struct{}
	errs   atomic.Int64
}

func newFloodClient(base string, conns int) *floodClient {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &floodClient{base: base, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *floodClient) one(i int64) {
	req, _ := http.NewRequest("GET", c.base+"/v1/reports/feature_ranking?purpose=service_improvement", nil)
	switch i % 3 {
	case 1:
		req.Header.Set("Authorization", "Basic c2h1a2VpOnNodWtlaQ==")
	case 2:
		req.Header.Set("Authorization", fmt.Sprintf("Bearer shq_%048x", i))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.errs.Add(1)
		return
	}
	var body struct {
		Seq uint64 `json:"audit_seq"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	n, _ := c.codes.LoadOrStore(resp.StatusCode, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	c.seqs.Store(body.Seq, struct{}{})
}

// run sends n requests from conc goroutines and returns when all are answered.
func (c *floodClient) run(n int64, conc int) time.Duration {
	began := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := c.sent.Add(1)
				if i > n {
					return
				}
				c.one(i)
			}
		}()
	}
	wg.Wait()
	return time.Since(began)
}

func (c *floodClient) count(code int) int64 {
	if n, ok := c.codes.Load(code); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

func (c *floodClient) auditSeqs() []uint64 {
	var out []uint64
	c.seqs.Range(func(k, _ any) bool { out = append(out, k.(uint64)); return true })
	slices.Sort(out)
	return out
}

// Promise 18: a flood of requests without a valid token is refused (401) from memory — the
// principals table read at most once a second, no audit record each — counted, and audited
// as O(intervals) records: each refusal answers with its interval's opening record, and each
// interval ends with a summary record carrying the count.
func TestUnauthenticatedFloodIsSummarised(t *testing.T) {
	f := newFixture(t, nil)
	every := time.Second
	srv, _, reg := f.serveWith(func(q *config.Query, _ *query.Deps) {
		q.UnauthenticatedSummaryEvery, q.UnauthenticatedRate = every, 10000
	})
	// Signed in once, so the token index is loaded before the flood.
	pm := newFloodClient(srv.URL, 1)
	req, _ := http.NewRequest("GET", srv.URL+"/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+f.tokens["pm"])
	if resp, err := pm.client.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("whoami before the flood: %v %v", resp, err)
	}
	before, loads := f.auditRows(), metric(t, reg, "shukei_query_principal_loads_total")

	const n = 15000
	c := newFloodClient(srv.URL, 32)
	took := c.run(n, 32)
	if rate := n / took.Seconds(); rate > 10000*1.2+1000 {
		t.Errorf("%d requests without a valid token answered at %.0f a second, over query.unauthenticated_rate (10000)", n, rate)
	}
	time.Sleep(every + 500*time.Millisecond) // the last interval ends and is summarised
	intervals := int(took/every) + 2
	added := f.auditRows() - before
	reloads := metric(t, reg, "shukei_query_principal_loads_total") - loads
	t.Logf("%d requests without a valid token in %s (%.0f/s): %d audit records added, %d reads of the principals table, answered with %d distinct audit_seq",
		n, took.Round(time.Millisecond), n/took.Seconds(), added, int(reloads), len(c.auditSeqs()))
	if got := c.count(401); got != n || c.errs.Load() != 0 {
		t.Fatalf("%d of %d answered 401 (%d transport errors)", got, n, c.errs.Load())
	}
	if got := metric(t, reg, "shukei_query_unauthenticated_total"); got != n {
		t.Errorf("shukei_query_unauthenticated_total = %v, want %d", got, n)
	}
	if added > uint64(2*intervals) {
		t.Errorf("%d requests without a valid token over %s added %d audit records, want at most %d (two an interval of %s)", n, took, added, 2*intervals, every)
	}
	if reloads > float64(intervals) {
		t.Errorf("the principals table was read %v times during the flood, want at most one a second (%d)", reloads, intervals)
	}
	// Each refusal named a record of the interval it fell in: a denied record without a
	// principal, and each interval has its summary, whose counts add up to the flood.
	seqs := c.auditSeqs()
	if len(seqs) == 0 || seqs[0] == 0 || len(seqs) > intervals {
		t.Fatalf("the refusals answered with audit_seq %v", seqs)
	}
	var total uint64
	for _, seq := range seqs {
		var principalID, report, decision, reason string
		if err := f.conn.QueryRow(context.Background(), "SELECT principal_id, report, decision, reason FROM "+f.db+"_audit.audit_log WHERE seq = ?", seq).
			Scan(&principalID, &report, &decision, &reason); err != nil {
			t.Fatalf("audit record #%d: %v", seq, err)
		}
		if principalID != "anonymous" || report != "unauthenticated" || decision != "denied" {
			t.Errorf("audit record #%d: principal %q, report %q, decision %q", seq, principalID, report, decision)
		}
		var rows uint64
		if err := f.conn.QueryRow(context.Background(), "SELECT rows, reason FROM "+f.db+"_audit.audit_log WHERE report = 'unauthenticated_summary' AND position(reason, ?) > 0", fmt.Sprintf("record #%d ", seq)).
			Scan(&rows, &reason); err != nil {
			t.Errorf("no summary of the interval opened by #%d: %v", seq, err)
			continue
		}
		t.Logf("summary of #%d: %d (%s)", seq, rows, reason)
		total += rows
	}
	if total != n {
		t.Errorf("the summaries count %d requests, want %d", total, n)
	}
	if err := func() error { _, err := f.log.Verify(context.Background()); return err }(); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// blockingTickets holds every ticket lookup until released: a request in a support trace's
// authorisation keeps its slot meanwhile.
type blockingTickets struct {
	query.TicketSource
	waiting atomic.Int64
	release chan struct{}
}

func (b *blockingTickets) Ticket(ctx context.Context, tenant, id string) (registry.Ticket, error) {
	b.waiting.Add(1)
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return b.TicketSource.Ticket(ctx, tenant, id)
}

// Promise 18: beyond query.max_in_flight requests the service answers 503 with Retry-After
// (audited, naming the principal); a request without a valid token is refused (401) before it
// takes a slot, so it is answered even when every slot is taken.
func TestMaxInFlight(t *testing.T) {
	f := newFixture(t, nil)
	bt := &blockingTickets{TicketSource: f.reg, release: make(chan struct{})}
	srv, _, reg := f.serveWith(func(q *config.Query, d *query.Deps) { q.MaxInFlight = 2; d.Tickets = bt })
	get := func(token, path string) (int, http.Header, map[string]any) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, resp.Header, m
	}
	// Refusals of principals (expired, disabled) give their slot back.
	for _, who := range []string{"old-agency", "gone", "old-agency", "gone"} {
		if code, _, m := get(f.tokens[who], "/v1/whoami"); code != 403 {
			t.Fatalf("whoami as %s: %d %v", who, code, m)
		}
	}
	if got := metric(t, reg, "shukei_query_in_flight"); got != 0 {
		t.Fatalf("shukei_query_in_flight = %v after four refusals", got)
	}
	var wg sync.WaitGroup
	trace := "/v1/reports/support_trace?" + url.Values{"purpose": {"support"}, "tenant": {"acme"}, "ticket": {"T-1"}}.Encode()
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); get(f.tokens["helpdesk"], trace) }()
	}
	for deadline := time.Now().Add(10 * time.Second); bt.waiting.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two support traces never reached their ticket lookup")
		}
	}
	if got := metric(t, reg, "shukei_query_in_flight"); got != 2 {
		t.Errorf("shukei_query_in_flight = %v with two requests held", got)
	}
	code, h, m := get(f.tokens["pm"], "/v1/whoami")
	if code != 503 || h.Get("Retry-After") == "" || m["audit_seq"] == nil {
		t.Errorf("a third request with two slots: %d Retry-After=%q %v", code, h.Get("Retry-After"), m)
	} else if a := f.lastAudit(); a.Principal != "pm" || a.Decision != "denied" || !strings.Contains(a.Reason, "max_in_flight") {
		t.Errorf("the 503's audit record: %+v", a)
	}
	if code, _, m := get("shq_made-up", "/v1/whoami"); code != 401 || m["audit_seq"] == nil {
		t.Errorf("an unknown token with every slot taken: %d %v (want 401, refused before a slot)", code, m)
	}
	if got := metric(t, reg, "shukei_query_over_max_in_flight_total"); got != 1 {
		t.Errorf("shukei_query_over_max_in_flight_total = %v", got)
	}
	close(bt.release)
	wg.Wait()
	if code, _, m := get(f.tokens["pm"], "/v1/whoami"); code != 200 {
		t.Errorf("whoami once the slots are free: %d %v", code, m)
	}
	if got := metric(t, reg, "shukei_query_in_flight"); got != 0 {
		t.Errorf("shukei_query_in_flight = %v with no request held", got)
	}
}

// BenchmarkReportUnderUnauthenticatedFlood measures an authenticated report (feature_ranking,
// over the real ClickHouse, with its token lookup, purpose reader and audit append) one request
// at a time, idle and while 10⁵ requests without a valid token flood the same service from 64
// connections (promise 18: within 2× its idle latency), and the audit records the flood added.
func BenchmarkReportUnderUnauthenticatedFlood(b *testing.B) {
	const flood, conns = 100000, 64
	f := newFixture(b, data(time.Now().UTC()))
	srv, s, _ := f.serveWith(nil) // the defaults: 64 slots, one summary a minute
	path := srv.URL + "/v1/reports/feature_ranking?" + url.Values{"purpose": {"service_improvement"}, "week": {"2026-11-20"}}.Encode()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	one := func() time.Duration {
		req, _ := http.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+f.tokens["pm"])
		began := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("feature_ranking: HTTP %d", resp.StatusCode)
		}
		return time.Since(began)
	}
	pct := func(ds []time.Duration, p float64) float64 {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000
	}
	for b.Loop() {
		for range 10 {
			one()
		}
		var idle []time.Duration
		for range 100 {
			idle = append(idle, one())
		}
		before := f.unauthRows()
		// The flood comes from another process, as it would: the test binary run again.
		cmd := exec.Command(os.Args[0], "-test.run=^TestFloodProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "SHUKEI_TEST_FLOOD="+fmt.Sprintf("%s %d %d", srv.URL, flood, conns))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var under []time.Duration
	measure:
		for {
			select {
			case err := <-done:
				if err != nil {
					b.Fatalf("the flood: %v: %s", err, out.String())
				}
				break measure
			default:
				under = append(under, one())
			}
		}
		s.Close() // the interval's summary record
		added := f.unauthRows() - before
		var res floodResult
		if i := strings.Index(out.String(), "FLOOD "); i < 0 {
			b.Fatalf("the flood reported nothing: %s", out.String())
		} else if err := json.NewDecoder(strings.NewReader(out.String()[i+6:])).Decode(&res); err != nil {
			b.Fatal(err)
		}
		took := time.Duration(res.Nanos)
		if res.Unauthorized != flood {
			b.Fatalf("%d of %d requests without a valid token answered 401 (%d errors)", res.Unauthorized, flood, res.Errors)
		}
		if len(under) < 10 {
			b.Fatalf("only %d reports measured during the flood", len(under))
		}
		idle50, idle95, under50, under95 := pct(idle, .5), pct(idle, .95), pct(under, .5), pct(under, .95)
		b.ReportMetric(idle50, "idle_p50_ms")
		b.ReportMetric(idle95, "idle_p95_ms")
		b.ReportMetric(under50, "flood_p50_ms")
		b.ReportMetric(under95, "flood_p95_ms")
		b.ReportMetric(under50/idle50, "flood/idle_p50")
		b.ReportMetric(under95/idle95, "flood/idle_p95")
		b.ReportMetric(flood/took.Seconds(), "unauth_req/s")
		b.ReportMetric(float64(added), "audit_records/1e5_unauth")
		b.Logf("feature_ranking p50/p95: idle %.1f/%.1f ms (%d), during %d requests without a valid token %.1f/%.1f ms (%d reports; %s, %.0f/s); ratio p50 %.2f, p95 %.2f; audit records added by the flood: %d",
			idle50, idle95, len(idle), flood, under50, under95, len(under), took.Round(time.Millisecond), flood/took.Seconds(), under50/idle50, under95/idle95, added)
	}
}

// unauthRows counts the audit records of requests without a valid token.
func (f *fixture) unauthRows() uint64 {
	f.t.Helper()
	var n uint64
	if err := f.conn.QueryRow(context.Background(), "SELECT count() FROM "+f.db+"_audit.audit_log WHERE report IN ('unauthenticated', 'unauthenticated_summary')").Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

type floodResult struct {
	Unauthorized, Errors int64
	Nanos                int64
	Seqs                 []uint64
}

// TestFloodProcess is the flood of BenchmarkReportUnderUnauthenticatedFlood, in a process of
// its own: it runs only when SHUKEI_TEST_FLOOD says where ("URL requests connections").
func TestFloodProcess(t *testing.T) {
	spec := os.Getenv("SHUKEI_TEST_FLOOD")
	if spec == "" {
		t.Skip("the flood of BenchmarkReportUnderUnauthenticatedFlood")
	}
	var base string
	var n int64
	var conns int
	if _, err := fmt.Sscanf(spec, "%s %d %d", &base, &n, &conns); err != nil {
		t.Fatal(err)
	}
	c := newFloodClient(base, conns)
	took := c.run(n, conns)
	b, _ := json.Marshal(floodResult{Unauthorized: c.count(401), Errors: c.errs.Load(), Nanos: int64(took), Seqs: c.auditSeqs()})
	fmt.Printf("FLOOD %s\n", b)
}

// Promise 18: no answer carries ClickHouse's error text — not when a report's query fails, nor
// when the audit log or the principals cannot be read, nor on the refusals of requests without
// a valid token.
func TestNoClickHouseErrorText(t *testing.T) {
	f := newFixture(t, data(time.Now().UTC()))
	wrong := map[string]driver.Conn{}
	for p, c := range f.readers {
		wrong[p] = c
	}
	wrong["service_improvement"] = f.readers["marketing"] // refused by the server: access denied
	report, _, _ := f.serveWith(func(_ *config.Query, d *query.Deps) { d.Readers = wrong })
	noAudit, _, _ := f.serveWith(func(_ *config.Query, d *query.Deps) { d.Audit = audit.New(f.conn, f.db+"_missing") })
	noPrincipals, _, _ := f.serveWith(func(_ *config.Query, d *query.Deps) { d.Principals = principal.New(f.conn, f.db+"_missing") })
	fr := "/v1/reports/feature_ranking?" + url.Values{"purpose": {"service_improvement"}, "week": {"2026-11-20"}}.Encode()
	for _, c := range []struct {
		name, base, token, path string
	}{
		{"a report whose query the server refuses", report.URL, f.tokens["pm"], fr},
		{"an audit log that cannot be written", noAudit.URL, f.tokens["pm"], "/v1/whoami"},
		{"an audit log that cannot be written, no token", noAudit.URL, "", fr},
		{"principals that cannot be read", noPrincipals.URL, f.tokens["pm"], fr},
		{"an unknown token", report.URL, "shq_unknown", fr},
	} {
		req, _ := http.NewRequest("GET", c.base+c.path, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("%s: %d %s", c.name, resp.StatusCode, strings.TrimSpace(string(b)))
		if resp.StatusCode == 200 {
			t.Errorf("%s: answered 200", c.name)
		}
		for _, leak := range []string{"DB::Exception", "Code:", "code:", f.db, "Exception", "reader"} {
			if strings.Contains(string(b), leak) {
				t.Errorf("%s: the answer carries %q: %s", c.name, leak, b)
			}
		}
	}
}

// The token index answers who a token claims to be; the principal's current row decides: one
// disabled while the service runs is refused at its next request, one enabled again works
// again, and a principal added while the service runs works within about a second.
func TestPrincipalChangesTakeEffect(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	srv, _, _ := f.serveWith(nil)
	whoami := func(token string) int {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	store := principal.New(f.conn, f.db)
	for i, disabled := range []bool{true, false, true} {
		if code := whoami(f.tokens["agency"]); (code == 200) != (i%2 == 0) {
			t.Fatalf("step %d: whoami as agency: %d", i, code)
		}
		if _, err := store.Update(ctx, "agency", func(p *principal.Principal) error { p.Disabled = disabled; return nil }); err != nil {
			t.Fatal(err)
		}
		want := 200
		if disabled {
			want = 403
		}
		if code := whoami(f.tokens["agency"]); code != want {
			t.Errorf("step %d: right after disabled=%v, whoami answered %d, want %d", i, disabled, code, want)
		}
	}
	tok, err := store.Add(ctx, principal.Principal{ID: "newcomer", Kind: principal.Employee, Purposes: []string{"marketing"}})
	if err != nil {
		t.Fatal(err)
	}
	added := time.Now()
	for whoami(tok) != 200 {
		if time.Since(added) > 2500*time.Millisecond {
			t.Fatalf("a principal added %s ago is still refused", time.Since(added).Round(time.Millisecond))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("a principal added while the service runs signed in after %s", time.Since(added).Round(time.Millisecond))
}
