package query_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/registry"
)

// The data every test below reads: as_of is Friday 2026-11-20, in the ISO week from Monday
// 11-16; the week before starts on 11-09.
func data(now time.Time) []ev {
	week, prev, old := asOf.AddDate(0, 0, -1), asOf.AddDate(0, 0, -8), asOf.AddDate(0, 0, -10)
	pro := tenants("p", 6)
	var evs []ev
	evs = append(evs, use(pro, "board", "contracted", "professional", week, 2)...)
	evs = append(evs, use(pro[:5], "board", "contracted", "professional", prev, 2)...)
	evs = append(evs, use(pro, "chat", "contracted", "professional", week, 2)...)
	// One standard contracted tenant: alone in its segment, it must never show, directly or
	// as the difference of two filters.
	evs = append(evs, use([]string{"s1"}, "board", "contracted", "standard", week, 3)...)
	evs = append(evs, use([]string{"s1"}, "chat", "contracted", "standard", week, 3)...)
	// Five trial tenants on the standard edition.
	evs = append(evs, use(tenants("t", 5), "export", "trial", "standard", week, 1)...)
	// A trial tenant last seen ten days before as_of.
	evs = append(evs, use([]string{"d1"}, "board", "trial", "standard", old, 1)...)
	// Support: operations of two tenants an hour ago.
	for i, code := range []string{"ok", "ok", "e500"} {
		for _, tenant := range []string{"acme", "beta-co"} {
			evs = append(evs, ev{tenant: tenant, category: "operation", item: "sheets", user: "u1", status: "contracted",
				edition: "standard", band: "m", at: now.Add(-time.Hour + time.Duration(i)*time.Minute), op: "save", code: code})
		}
	}
	// An event tagged for no internal purpose reaches no mart.
	evs = append(evs, ev{tenant: "p1", category: "feature_use", item: "secret", user: "u1", status: "contracted", edition: "professional",
		band: "m", at: week, uses: 1, purposes: 64})
	return evs
}

func TestSecurity(t *testing.T) {
	f := newFixture(t, data(time.Now().UTC()))
	requests := 0
	expect := func(who, name string, want int, kv ...string) result {
		t.Helper()
		requests++
		return f.report(who, name, want, kv...)
	}

	// No token, a malformed one, an unknown one: 401, answered from memory. The first opens an
	// interval of the audit log's summary of such requests (promise 18): one record, whose seq
	// each of them in the interval is answered with.
	status, body, h := f.get("", "/v1/reports/feature_ranking", url.Values{"purpose": {"service_improvement"}})
	requests++ // the interval's record
	if status != 401 || !strings.Contains(h.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no token: %d %v", status, h)
	}
	var first result
	if err := json.Unmarshal(body, &first); err != nil || first.AuditSeq == 0 {
		t.Fatalf("no token: %v %s", err, body)
	}
	if r := f.lastAudit(); r.Seq != first.AuditSeq || r.Principal != "anonymous" || r.Decision != audit.Denied || r.Report != "unauthenticated" || !strings.Contains(r.Reason, "no token") {
		t.Errorf("no-token audit record %+v (answered with #%d)", r, first.AuditSeq)
	}
	if r := f.report("shq_not-a-token", "feature_ranking", 401, "purpose", "service_improvement"); r.AuditSeq != first.AuditSeq {
		t.Errorf("an unknown token answered with audit record #%d, not its interval's #%d", r.AuditSeq, first.AuditSeq)
	}
	// The catalogue too: nothing but the page and /openapi.json without a token.
	status, body, _ = f.get("", "/v1/reports", nil)
	var cat result
	_ = json.Unmarshal(body, &cat)
	if status != 401 || cat.AuditSeq != first.AuditSeq {
		t.Errorf("catalogue without a token: %d %s", status, body)
	}
	if r := f.lastAudit(); r.Seq != first.AuditSeq {
		t.Errorf("a refusal without a token in an open interval appended record %+v", r)
	}
	if status, body, _ := f.get("pm", "/v1/reports", nil); status != 200 || !strings.Contains(string(body), "feature_ranking") {
		t.Errorf("catalogue: %d %s", status, body)
	}
	requests++

	// A purpose the grant does not name: 403, audited with the declared purpose.
	r := expect("pm", "dp_releases", 403, "purpose", "external_aggregate")
	if !strings.Contains(r.Error, "purpose not granted") || r.AuditSeq == 0 {
		t.Errorf("ungranted purpose: %+v", r)
	}
	if a := f.lastAudit(); a.Principal != "pm" || a.Kind != "employee" || a.Purpose != "external_aggregate" || a.Decision != audit.Denied || a.Seq != r.AuditSeq {
		t.Errorf("ungranted purpose audit record %+v", a)
	}
	// A granted purpose, but a report of another purpose.
	expect("pm", "feature_ranking", 403, "purpose", "marketing")
	expect("partner", "feature_ranking", 403, "purpose", "service_improvement")
	// No purpose, two purposes, an unknown one: 400.
	expect("pm", "feature_ranking", 400)
	expect("pm", "feature_ranking", 400, "purpose", "service_improvement", "purpose", "marketing")
	expect("pm", "feature_ranking", 400, "purpose", "everything")
	expect("pm", "no_such_report", 404, "purpose", "marketing")

	// Contractors: in force, audited with the contract; expired, refused.
	got := expect("agency", "contract_comparison", 200, "purpose", "marketing", "week", "2026-11-20")
	if a := f.lastAudit(); a.ContractRef != "C-2026-7" || a.Kind != "contractor" || a.Decision != audit.Allowed || a.Rows != uint64(len(got.Rows)) || a.Rows == 0 {
		t.Errorf("contractor audit record %+v (rows returned %d)", a, len(got.Rows))
	}
	r = expect("old-agency", "contract_comparison", 403, "purpose", "marketing")
	if !strings.Contains(r.Error, "grant expired") {
		t.Errorf("expired contractor: %s", r.Error)
	}
	if a := f.lastAudit(); a.ContractRef != "C-2025-1" || a.Decision != audit.Denied {
		t.Errorf("expired contractor audit record %+v", a)
	}

	// SQL-looking or malformed parameters: 400 naming the parameter, before any SQL is built.
	for _, c := range []struct{ report, purpose, param, value string }{
		{"feature_ranking", "service_improvement", "edition", "standard' OR 1=1 --"},
		{"feature_ranking", "service_improvement", "edition", "standard) UNION ALL SELECT * FROM shukei.events --"},
		{"feature_ranking", "service_improvement", "limit", "1; DROP TABLE x"},
		{"feature_ranking", "service_improvement", "week", "2026-11-20' --"},
		{"feature_ranking", "service_improvement", "category", "feature_use OR 1"},
		{"feature_ranking", "service_improvement", "by_edition", "1"},
		{"interview_candidates", "interview_selection", "feature", "board,chat\"); SELECT 1"},
		{"tenant_signals", "follow_up", "status", "trial,contracted' --"},
		{"support_trace", "support", "tenant", "acme' OR tenant_id != '"},
		{"contract_comparison", "marketing", "days", "100000"},
		{"feature_ranking", "service_improvement", "sql", "SELECT 1"},
	} {
		who := "pm"
		if c.purpose == "support" {
			who = "helpdesk"
		}
		r := expect(who, c.report, 400, "purpose", c.purpose, c.param, c.value)
		if !strings.Contains(r.Error, c.param) {
			t.Errorf("%s=%q: error %q does not name the parameter", c.param, c.value, r.Error)
		}
	}

	// Support: no ticket, an unknown ticket, another tenant's ticket: 403.
	ctx := context.Background()
	expect("helpdesk", "support_trace", 403, "purpose", "support", "tenant", "acme")
	expect("helpdesk", "support_trace", 403, "purpose", "support", "tenant", "acme", "ticket", "T-1")
	if _, err := f.reg.OpenTicket(ctx, "acme", "T-1", time.Hour, "helpdesk"); err != nil {
		t.Fatal(err)
	}
	expect("helpdesk", "support_trace", 403, "purpose", "support", "tenant", "beta-co", "ticket", "T-1")
	if a := f.lastAudit(); a.Ticket != "T-1" || a.Decision != audit.Denied {
		t.Errorf("support refusal audit record %+v", a)
	}
	// With the open ticket: acme's trace only, with the ticket in the audit record.
	r = expect("helpdesk", "support_trace", 200, "purpose", "support", "tenant", "acme", "ticket", "T-1", "around_minutes", "120")
	if len(r.Rows) != 3 {
		t.Fatalf("trace has %d events, want acme's 3: %v", len(r.Rows), r.Rows)
	}
	for _, row := range r.Rows {
		if row["operation_id"] != "save" || row["user"] == "" || strings.Contains(row["user"].(string), "u1") {
			t.Errorf("trace row %v", row)
		}
	}
	if r.Rows[2]["result_code"] != "e500" {
		t.Errorf("trace order: %v", r.Rows)
	}
	if a := f.lastAudit(); a.Ticket != "T-1" || a.Decision != audit.Allowed || a.Rows != 3 || a.Purpose != "support" {
		t.Errorf("support audit record %+v", a)
	}
	// Before the ticket's window (7 days before it was opened): 403.
	expect("helpdesk", "support_trace", 403, "purpose", "support", "tenant", "acme", "ticket", "T-1",
		"at", time.Now().UTC().Add(-9*24*time.Hour).Format(time.RFC3339))
	// Closed: access ends.
	if _, err := f.reg.CloseTicket(ctx, "acme", "T-1"); err != nil {
		t.Fatal(err)
	}
	r = expect("helpdesk", "support_trace", 403, "purpose", "support", "tenant", "acme", "ticket", "T-1")
	if !strings.Contains(r.Error, "closed or expired") {
		t.Errorf("closed ticket: %s", r.Error)
	}
	// A ticket that expires while the test runs.
	if _, err := f.reg.OpenTicket(ctx, "acme", "T-2", 2*time.Second, "helpdesk"); err != nil {
		t.Fatal(err)
	}
	expect("helpdesk", "support_trace", 200, "purpose", "support", "tenant", "acme", "ticket", "T-2")
	time.Sleep(2500 * time.Millisecond)
	expect("helpdesk", "support_trace", 403, "purpose", "support", "tenant", "acme", "ticket", "T-2")

	// whoami is audited too, and lists only the purposes in force.
	status, body, _ = f.get("agency", "/v1/whoami", nil)
	requests++
	if status != 200 || !strings.Contains(string(body), `"purposes":["marketing"]`) || !strings.Contains(string(body), "contract_comparison") {
		t.Errorf("whoami: %d %s", status, body)
	}

	// The chain holds every request, allowed or denied.
	n, err := f.log.Verify(ctx)
	if err != nil || n != requests {
		t.Errorf("audit chain: %d records, %v; want %d (one a request)", n, err, requests)
	}

	// When the audit log cannot be written, nothing is answered.
	broken := httptestServer(t, f.server(audit.New(f.conn, "no_such_database")))
	f.srv = broken
	status, body, _ = f.get("pm", "/v1/reports/feature_ranking", url.Values{"purpose": {"service_improvement"}, "week": {"2026-11-20"}})
	if status != 503 || strings.Contains(string(body), "board") || !strings.Contains(string(body), "audit log") {
		t.Errorf("audit failure: %d %s", status, body)
	}
}

func TestReportsOnRealData(t *testing.T) {
	f := newFixture(t, data(time.Now().UTC()))
	asOf := "2026-11-20"

	// Feature ranking, by edition: professional's board and chat (6 tenants); standard's
	// export (5 trial tenants). The lone standard board/chat tenant is suppressed.
	r := f.report("pm", "feature_ranking", 200, "purpose", "service_improvement", "week", asOf)
	if r.K != 5 {
		t.Errorf("k = %d", r.K)
	}
	board := find(r.Rows, "edition", "professional", "feature", "board")
	if board == nil || n(board["tenants"]) != 6 || n(board["users"]) != 12 || n(board["uses"]) != 24 || n(board["tenants_prev_week"]) != 5 || n(board["trend_pct"]) != 20 || n(board["rank"]) != 1 {
		t.Errorf("professional board: %v", board)
	}
	if row := find(r.Rows, "edition", "standard", "feature", "export"); row == nil || n(row["tenants"]) != 5 || row["tenants_prev_week"] != nil || row["trend_pct"] != nil {
		t.Errorf("standard export: %v", row)
	}
	if row := find(r.Rows, "edition", "standard", "feature", "board"); row != nil {
		t.Errorf("a cell of one tenant was returned: %v", row)
	}
	if row := find(r.Rows, "feature", "secret"); row != nil {
		t.Errorf("an event without the purpose reached the report: %v", row)
	}

	// Overlapping filters: professional alone, professional+standard, and every edition give
	// the same board count. Their difference, which would be the standard tenant, is zero.
	tenantsOf := func(kv ...string) float64 {
		r := f.report("pm", "feature_ranking", 200, append([]string{"purpose", "service_improvement", "week", asOf, "by_edition", "false"}, kv...)...)
		row := find(r.Rows, "feature", "board")
		if row == nil || row["edition"] != "all" {
			t.Fatalf("board over %v: %v", kv, r.Rows)
		}
		return n(row["tenants"])
	}
	a, b, c := tenantsOf("edition", "professional"), tenantsOf("edition", "professional,standard"), tenantsOf()
	if a != 6 || b != 6 || c != 6 {
		t.Errorf("board tenants: professional %v, professional+standard %v, all %v: want 6 each (no filter isolates the standard tenant)", a, b, c)
	}
	if r := f.report("pm", "feature_ranking", 200, "purpose", "service_improvement", "week", asOf, "edition", "standard", "by_edition", "false"); find(r.Rows, "feature", "board") != nil || find(r.Rows, "feature", "chat") != nil {
		t.Errorf("the standard edition alone shows the lone tenant's features: %v", r.Rows)
	}

	// Weekly activity: as_of's week has professional p1..p6 and standard s1, t1..t5 (12); the
	// week before, professional p1..p5 — d1, alone on standard, is in no atom.
	act := f.report("pm", "active_tenants", 200, "purpose", "service_improvement", "week", asOf, "weeks", "2")
	if len(act.Rows) != 2 || act.Rows[0]["week"] != "2026-11-09" || n(act.Rows[0]["tenants"]) != 5 || act.Rows[1]["week"] != "2026-11-16" || n(act.Rows[1]["tenants"]) != 12 {
		t.Errorf("active tenants by week: %v", act.Rows)
	}
	if by := f.report("pm", "active_tenants", 200, "purpose", "service_improvement", "week", asOf, "weeks", "2", "by_edition", "true", "edition", "standard"); len(by.Rows) != 1 || n(by.Rows[0]["tenants"]) != 6 {
		t.Errorf("standard's active tenants by week: %v", by.Rows)
	}
	st := f.report("pm", "status_activity", 200, "purpose", "marketing", "week", asOf, "weeks", "2")
	if row := find(st.Rows, "week", "2026-11-16", "status", "trial"); row == nil || n(row["tenants"]) != 5 {
		t.Errorf("trial tenants of as_of's week: %v", st.Rows)
	}
	if row := find(st.Rows, "week", "2026-11-09", "status", "trial"); row != nil {
		t.Errorf("d1, alone on trial the week before, shows: %v", row)
	}

	// Marketing: contracted vs trial. The same holds for status filters.
	m := f.report("pm", "contract_comparison", 200, "purpose", "marketing", "week", asOf, "weeks", "2")
	overallC, overallT := find(m.Rows, "status", "contracted", "feature", "*"), find(m.Rows, "status", "trial", "feature", "*")
	// Atoms are per week. Contracted: p1..p6 in as_of's week, p1..p5 the week before (s1 is
	// alone in its segment): 5.5 a week. Trial: t1..t5 in as_of's week; d1, alone in the week
	// before, is in no atom: 2.5 a week.
	if overallC == nil || n(overallC["tenants"]) != 5.5 || n(overallC["uses"]) != 34 || overallT == nil || n(overallT["tenants"]) != 2.5 {
		t.Errorf("overall rows: contracted %v, trial %v", overallC, overallT)
	}
	if row := find(m.Rows, "status", "contracted", "feature", "board"); row == nil || n(row["tenants"]) != 5.5 || n(row["adoption_pct"]) != 100 || n(row["uses"]) != 44 {
		t.Errorf("contracted board: %v", row)
	}
	if row := find(m.Rows, "status", "trial", "feature", "export"); row == nil || n(row["tenants"]) != 2.5 || n(row["adoption_pct"]) != 100 || n(row["uses_per_tenant"]) != 2 {
		t.Errorf("trial export: %v", row)
	}
	// Differencing two periods gives a whole week's atoms, never a part of one: (as_of's week,
	// two weeks) − (the week before, one week) is as_of's week alone.
	prev := f.report("pm", "contract_comparison", 200, "purpose", "marketing", "week", "2026-11-13", "weeks", "1")
	this := f.report("pm", "contract_comparison", 200, "purpose", "marketing", "week", asOf, "weeks", "1")
	for _, st := range []string{"contracted", "trial"} {
		p, c := find(prev.Rows, "status", st, "feature", "board"), find(this.Rows, "status", st, "feature", "board")
		both := find(m.Rows, "status", st, "feature", "board")
		var pu, cu, bu float64
		if p != nil {
			pu = n(p["uses"])
		}
		if c != nil {
			cu = n(c["uses"])
		}
		if both != nil {
			bu = n(both["uses"])
		}
		if bu-pu != cu {
			t.Errorf("%s board uses: two weeks %v − the week before %v = %v, but the week alone is %v", st, bu, pu, bu-pu, cu)
		}
	}
	// The week in progress (not sealed) is refused.
	f.report("pm", "contract_comparison", 400, "purpose", "marketing", "week", time.Now().UTC().Format(time.DateOnly), "weeks", "1")
	one := f.report("pm", "contract_comparison", 200, "purpose", "marketing", "week", asOf, "weeks", "2", "status", "contracted", "edition", "standard")
	if len(one.Rows) != 0 {
		t.Errorf("contracted standard (one tenant) returned rows: %v", one.Rows)
	}

	// Follow-up: p1..p5 had 2 events last week and 4 in the 5 days of this week (+180% a day),
	// p6 is new, d1 is dormant.
	s := f.report("pm", "tenant_signals", 200, "purpose", "follow_up", "as_of", asOf)
	if row := find(s.Rows, "tenant_id", "d1"); row == nil || row["signal"] != "dormant" || row["status"] != "trial" || !strings.Contains(row["suggestion"].(string), "email") {
		t.Errorf("d1: %v", row)
	}
	if row := find(s.Rows, "tenant_id", "p1"); row == nil || row["signal"] != "rising" || n(row["events_this_week"]) != 4 || n(row["events_last_week"]) != 2 || n(row["trend_pct"]) != 180 || n(row["features_adopted"]) != 2 || n(row["active_days"]) != 2 {
		t.Errorf("p1: %v", row)
	}
	if row := find(s.Rows, "tenant_id", "p6"); row == nil || row["signal"] != "new" {
		t.Errorf("p6: %v", row)
	}
	if s.Rows[0]["tenant_id"] != "d1" {
		t.Errorf("the dormant tenant should come first: %v", s.Rows[0])
	}
	if find(s.Rows, "tenant_id", "acme") != nil {
		t.Error("acme, active only after as_of, is in the follow-up of as_of")
	}
	if today := f.report("pm", "tenant_signals", 200, "purpose", "follow_up"); find(today.Rows, "tenant_id", "acme") == nil {
		t.Error("acme, active an hour ago, is missing from today's follow-up")
	}
	tr := f.report("pm", "tenant_signals", 200, "purpose", "follow_up", "as_of", asOf, "status", "trial", "signal", "dormant")
	if len(tr.Rows) != 1 || tr.Rows[0]["tenant_id"] != "d1" {
		t.Errorf("trial dormant: %v", tr.Rows)
	}

	// Interview candidates: the tenants that used both board and chat, ranked: p1..p5 (two
	// active days), then s1 (one day, three users), then p6 (one day, two users).
	ic := f.report("pm", "interview_candidates", 200, "purpose", "interview_selection", "as_of", asOf, "feature", "board,chat")
	var order []string
	for _, row := range ic.Rows {
		order = append(order, row["tenant_id"].(string))
	}
	if strings.Join(order, ",") != "p1,p2,p3,p4,p5,s1,p6" || n(ic.Rows[0]["rank"]) != 1 || n(ic.Rows[0]["features_used"]) != 2 || n(ic.Rows[5]["active_users"]) != 3 {
		t.Errorf("interview candidates %v: %v", order, ic.Rows)
	}
	if n(ic.Rows[0]["score"]) != 0.244 {
		t.Errorf("p1's score %v, want 2 × log2(3) × 2 active days / 26 days (Monday 10-26 to 11-20) = 0.244", ic.Rows[0]["score"])
	}
	ic = f.report("pm", "interview_candidates", 200, "purpose", "interview_selection", "as_of", asOf, "feature", "board,chat", "edition", "professional", "limit", "3")
	if len(ic.Rows) != 3 || ic.Rows[0]["edition"] != "professional" {
		t.Errorf("professional candidates: %v", ic.Rows)
	}

	// The current status decides (the registry), not the one at event time: p2, terminated
	// today, is offered neither to follow-up nor to interviews; d1, on trial in its events and
	// contracted now, is followed up as contracted.
	ctx := context.Background()
	if _, err := f.reg.Update(ctx, "p2", func(t *registry.Tenant) error { t.Status = registry.StatusTerminated; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Update(ctx, "d1", func(t *registry.Tenant) error { t.Status = registry.StatusContracted; return nil }); err != nil {
		t.Fatal(err)
	}
	s = f.report("pm", "tenant_signals", 200, "purpose", "follow_up", "as_of", asOf, "status", "trial,beta,contracted")
	if find(s.Rows, "tenant_id", "p2") != nil {
		t.Errorf("p2, terminated, is offered to follow-up: %v", s.Rows)
	}
	if row := find(s.Rows, "tenant_id", "d1"); row == nil || row["status"] != "contracted" {
		t.Errorf("d1, contracted now: %v", row)
	}
	if tr := f.report("pm", "tenant_signals", 200, "purpose", "follow_up", "as_of", asOf, "status", "trial"); find(tr.Rows, "tenant_id", "d1") != nil {
		t.Errorf("d1 is offered as a trial tenant: %v", tr.Rows)
	}
	if ic := f.report("pm", "interview_candidates", 200, "purpose", "interview_selection", "as_of", asOf); find(ic.Rows, "tenant_id", "p2") != nil {
		t.Errorf("p2, terminated, is an interview candidate: %v", ic.Rows)
	}

	// CSV: the same rows, a header, no JSON.
	status, body, h := f.get("pm", "/v1/reports/feature_ranking", url.Values{"purpose": {"service_improvement"}, "week": {asOf}, "format": {"csv"}})
	if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv: %d %s", status, h.Get("Content-Type"))
	}
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil || len(recs) != len(r.Rows)+1 || strings.Join(recs[0], ",") != "edition,rank,feature,tenants,users,uses,tenants_prev_week,trend_pct" {
		t.Errorf("csv: %v %q", err, recs)
	}
	if status, _, _ := f.get("pm", "/v1/reports/feature_ranking", url.Values{"purpose": {"service_improvement"}, "format": {"xml"}}); status != 400 {
		t.Errorf("format=xml: %d", status)
	}

	// External aggregate: a release and the budget it spent.
	addRelease(t, f)
	rel := f.report("partner", "dp_releases", 200, "purpose", "external_aggregate", "from", "2026-11-01", "to", "2026-11-30")
	if len(rel.Rows) != 1 || n(rel.Rows[0]["value"]) != 41 || n(rel.Rows[0]["ci95_low"]) != 38.2 || rel.Rows[0]["mechanism"] != "laplace" || rel.Rows[0]["cell"] != "feature=board,status=contracted" {
		t.Errorf("releases: %v", rel.Rows)
	}
	bud := f.report("partner", "dp_budget", 200, "purpose", "external_aggregate")
	if len(bud.Rows) != 1 || n(bud.Rows[0]["epsilon_spent"]) != 5 || n(bud.Rows[0]["epsilon_left"]) != 26 || n(bud.Rows[0]["epsilon_budget"]) != 31 {
		t.Errorf("budget: %v", bud.Rows)
	}
	if a := f.lastAudit(); a.Principal != "partner" || a.Kind != "partner" || a.Report != "dp_budget" {
		t.Errorf("partner audit record %+v", a)
	}
}

// A failing report answers 500 with no word of the server's own error: ClickHouse's messages
// name databases and tables; the audit record keeps them.
func TestServerErrorsAreNotEchoed(t *testing.T) {
	f := newFixture(t, data(time.Now().UTC()))
	if err := f.conn.Exec(context.Background(), "DROP TABLE "+f.db+"_service_improvement_gated.atoms"); err != nil {
		t.Fatal(err)
	}
	status, body, _ := f.get("pm", "/v1/reports/feature_ranking", url.Values{"purpose": {"service_improvement"}, "week": {"2026-11-20"}})
	if status != 500 || strings.Contains(string(body), f.db) || strings.Contains(strings.ToLower(string(body)), "exist") || !strings.Contains(string(body), "feature_ranking failed") {
		t.Errorf("failed report: %d %s", status, body)
	}
	if r := f.lastAudit(); r.Decision != audit.Failed || !strings.Contains(r.Reason, "atoms") {
		t.Errorf("the audit record does not keep the error: %+v", r)
	}
}
