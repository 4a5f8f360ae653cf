package attack

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestTenantReadsAccountableAndCurrent attacks promise 12: expired and disabled principals of
// every kind, no token and an unknown token, on every endpoint of the query service (each
// refusal in the audit log); the audit record of a support trace names the tenant read; the
// follow-up and interview reports use each tenant's current contract status (a tenant set
// terminated after its events is not offered; a trial tenant that became contracted is no
// longer a trial); the public listener serves no metrics without a token, the ops listener
// does. (The attack of the old promise 10 — the dashboards' ClickHouse user reading the text of
// running queries in system.processes — went with that user: see ISOLATION.md.)
func TestTenantReadsAccountableAndCurrent(t *testing.T) {
	began := time.Now()
	s := newIsoStack(t)
	sfx := randHex(3)
	live := "acc-live-" + sfx
	term := "acc-term-" + sfx
	t2c := "acc-t2c-" + sfx
	s.cli("tenants", "add", "--tenant", live, "--status", "contracted", "--edition", "standard", "--size-band", "s")
	s.cli("tenants", "add", "--tenant", term, "--status", "contracted", "--edition", "standard", "--size-band", "s")
	s.cli("tenants", "add", "--tenant", t2c, "--status", "trial", "--edition", "standard", "--size-band", "s")

	// Events last week and in the last hour (the trace's window), for each tenant.
	weeks, _ := isoWeeks(1)
	now := time.Now().UTC()
	var evs []pev
	for i, ten := range []string{live, term, t2c} {
		u := fmt.Sprintf("%08d-1111-4111-8111-%012d", i+1, i+1)
		for d, at := range []time.Time{weeks[0].Add(33 * time.Hour), weeks[0].Add(57 * time.Hour), now.Add(-10 * time.Minute), now.Add(-20 * time.Minute)} {
			evs = append(evs,
				pev{tenant: ten, schema: "feature_use/v1", user: u, item: "app.record.create", count: 2 + d, at: at},
				pev{tenant: ten, schema: "feature_use/v1", user: u, item: "app.record.search", count: 1, at: at.Add(time.Minute)},
				pev{tenant: ten, schema: "operation/v1", user: u, item: "record.bulk_update", at: at.Add(2 * time.Minute)},
				pev{tenant: ten, schema: "app_access/v1", user: u, item: "1047", at: at.Add(3 * time.Minute)},
				pev{tenant: ten, schema: "tenant_profile/v1", count: 5, at: at.Add(4 * time.Minute)},
			)
		}
	}
	s.plant(evs)

	yesterday := now.AddDate(0, 0, -1).Format("2006-01-02")
	all := []string{"support", "service_improvement", "marketing", "follow_up", "interview_selection"}
	tok := map[string]string{
		"fu":  s.mustPrincipal("acc-fu-"+sfx, "employee", []string{"follow_up"}, "", false),
		"iv":  s.mustPrincipal("acc-iv-"+sfx, "employee", []string{"interview_selection"}, "", false),
		"sup": s.mustPrincipal("acc-sup-"+sfx, "employee", []string{"support"}, "", false),
		"si":  s.mustPrincipal("acc-si-"+sfx, "employee", []string{"service_improvement"}, "", false),
		"ext": s.mustPrincipal("acc-ext-"+sfx, "partner", []string{"external_aggregate"}, "", false),
	}
	type refusedP struct{ name, id, token string }
	var bads []refusedP
	for _, p := range []struct {
		name, kind string
		purposes   []string
		expires    string
	}{
		{"expired employee", "employee", all, yesterday},
		{"expired affiliate", "affiliate", all, yesterday},
		{"expired contractor", "contractor", []string{"marketing"}, yesterday},
		{"expired partner", "partner", []string{"external_aggregate"}, yesterday},
	} {
		id := "acc-" + strings.ReplaceAll(p.name, " ", "-") + "-" + sfx
		bads = append(bads, refusedP{p.name, id, s.mustPrincipal(id, p.kind, p.purposes, p.expires, false)})
	}
	disEmp := "acc-disabled-employee-" + sfx
	disAff := "acc-disabled-affiliate-" + sfx
	disCon := "acc-disabled-contractor-" + sfx
	disTok := map[string]string{
		disEmp: s.mustPrincipal(disEmp, "employee", all, "", false),
		disAff: s.mustPrincipal(disAff, "affiliate", all, "", false),
		disCon: s.mustPrincipal(disCon, "contractor", []string{"marketing"}, "", false),
	}
	s.cli("tenants", "ticket", "open", "--tenant", live, "--ticket", "SUP-"+sfx, "--ttl", "2h", "--by", "attack")
	s.startQuery()
	var bad []string

	// Disabled while the service runs: "its token stops working at once".
	for id, tk := range disTok {
		if r := s.apiDo("GET", "/v1/whoami", tk, nil); r.code != 200 {
			t.Fatalf("precondition: %s's token before it was disabled: %s", id, r)
		}
		s.cli("principals", "disable", "--id", id)
		bads = append(bads, refusedP{"disabled " + id, id, tk})
	}
	bads = append(bads, refusedP{"no token", "", ""}, refusedP{"unknown token", "", "shq_" + randHex(24)})

	// A pending grant for the approve and revoke endpoints.
	gr := s.apiDo("POST", "/v1/breakglass", tok["sup"], bgBody(live, bgJustification, "1h"))
	grant := gr.str("id")
	if grant == "" {
		grant = "bg-" + randHex(8)
		t.Logf("the support employee could not request break-glass (%s); approve/revoke are attacked with a made-up id", gr)
	}
	day := now.Format("2006-01-02")
	endpoints := []struct{ method, path string }{
		{"GET", "/v1/whoami"},
		{"GET", "/v1/reports"},
		{"GET", "/v1/reports/feature_ranking?purpose=service_improvement"},
		{"GET", "/v1/reports/contract_comparison?purpose=marketing&weeks=1"},
		{"GET", "/v1/reports/active_tenants?purpose=service_improvement"},
		{"GET", "/v1/reports/status_activity?purpose=marketing"},
		{"GET", "/v1/reports/tenant_signals?purpose=follow_up"},
		{"GET", "/v1/reports/interview_candidates?purpose=interview_selection"},
		{"GET", "/v1/reports/support_trace?purpose=support&tenant=" + live + "&ticket=SUP-" + sfx},
		{"GET", "/v1/reports/support_trace?purpose=support&tenant=" + live + "&breakglass=" + grant},
		{"GET", "/v1/reports/dp_releases?purpose=external_aggregate&to=" + day},
		{"GET", "/v1/reports/dp_budget?purpose=external_aggregate"},
		{"GET", "/v1/reports/tenant_signals?purpose=follow_up&format=csv"},
		{"POST", "/v1/breakglass"},
		{"POST", "/v1/breakglass/" + grant + "/approve"},
		{"POST", "/v1/breakglass/" + grant + "/revoke"},
	}
	for _, p := range bads {
		for _, ep := range endpoints {
			var body any
			if ep.path == "/v1/breakglass" {
				body = bgBody(live, bgJustification, "1h")
			}
			r := s.apiDo(ep.method, ep.path, p.token, body)
			bad = append(bad, s.checkRefused(r, p.id, fmt.Sprintf("%s on %s %s", p.name, ep.method, ep.path))...)
		}
	}
	// The documents served without a token hold no tenant.
	for _, path := range []string{"/", "/openapi.json"} {
		r := s.apiDo("GET", path, "", nil)
		for _, ten := range []string{live, term, t2c} {
			if strings.Contains(string(r.body), ten) {
				bad = append(bad, fmt.Sprintf("GET %s without a token shows the tenant %s", path, ten))
			}
		}
	}
	reportList(t, "promise 12: a request whose token is not an enabled, unexpired principal's was not refused, or its refusal is not in the audit log", bad)

	// The support trace's audit record names the tenant read.
	bad = nil
	q := url.Values{"purpose": {"support"}, "tenant": {live}, "ticket": {"SUP-" + sfx}, "around_minutes": {"120"}}
	r := s.apiDo("GET", "/v1/reports/support_trace?"+q.Encode(), tok["sup"], nil)
	switch seq, ok := r.auditSeq(); {
	case r.code != 200:
		bad = append(bad, fmt.Sprintf("precondition: support_trace with an open ticket: %s", r))
	case !ok:
		bad = append(bad, fmt.Sprintf("support_trace answered without an audit_seq: %s", r))
	case !s.auditHasTenant():
		missing(t, "audit_log.tenant_id", "the audit log has no tenant_id column, so no record names the tenant read")
	default:
		if rows, _ := r.js["rows"].([]any); len(rows) == 0 {
			t.Logf("support_trace returned no row (harness: the planted operations are %s old)", 10*time.Minute)
		}
		if a, found := s.auditBySeq(seq); !found {
			bad = append(bad, fmt.Sprintf("the support_trace's audit record %d is not in the audit log", seq))
		} else if a.tenant != live {
			bad = append(bad, fmt.Sprintf("the audit record %d of a support_trace of %s names tenant %q", seq, live, a.tenant))
		}
	}
	reportList(t, "promise 12: the audit record of a support trace does not name the tenant read", bad)

	// Current contract status.
	bad = nil
	offered := func(report, purpose, token string, extra url.Values) map[string]string {
		q := url.Values{"purpose": {purpose}, "limit": {"1000"}}
		for k, v := range extra {
			q[k] = v
		}
		r := s.apiDo("GET", "/v1/reports/"+report+"?"+q.Encode(), token, nil)
		out := map[string]string{}
		if r.code != 200 {
			bad = append(bad, fmt.Sprintf("%s?%s: %s", report, q.Encode(), r))
			return out
		}
		rows, _ := r.js["rows"].([]any)
		for _, x := range rows {
			m, _ := x.(map[string]any)
			id, _ := m["tenant_id"].(string)
			st, _ := m["status"].(string)
			out[id] = st
		}
		return out
	}
	type view struct {
		report, purpose, token string
		extra                  url.Values
	}
	views := []view{
		{"tenant_signals", "follow_up", tok["fu"], url.Values{}},
		{"tenant_signals", "follow_up", tok["fu"], url.Values{"status": {"contracted"}}},
		{"tenant_signals", "follow_up", tok["fu"], url.Values{"status": {"trial,beta,contracted"}, "as_of": {"last_week"}}},
		{"interview_candidates", "interview_selection", tok["iv"], url.Values{}},
		{"interview_candidates", "interview_selection", tok["iv"], url.Values{"status": {"contracted"}, "weeks": {"2"}}},
		{"interview_candidates", "interview_selection", tok["iv"], url.Values{"as_of": {"last_week"}}},
	}
	for _, v := range views {
		if _, ok := offered(v.report, v.purpose, v.token, v.extra)[term]; !ok {
			t.Logf("harness note: %s %v does not offer %s even before it is terminated", v.report, v.extra, term)
		}
	}
	s.cli("tenants", "set", "--tenant", term, "--status", "terminated")
	s.cli("tenants", "set", "--tenant", t2c, "--status", "contracted")
	changed := time.Now()
	deadline := changed.Add(5 * time.Second) // one registry refresh (2 s) and a margin
	for {
		var still []string
		for _, v := range views {
			got := offered(v.report, v.purpose, v.token, v.extra)
			if st, ok := got[term]; ok {
				still = append(still, fmt.Sprintf("%s %v offers %s (status %q) after it was set terminated", v.report, v.extra, term, st))
			}
			if st, ok := got[t2c]; ok && st != "contracted" {
				still = append(still, fmt.Sprintf("%s %v shows %s as %q after it was set contracted", v.report, v.extra, t2c, st))
			}
		}
		for _, v := range []view{
			{"tenant_signals", "follow_up", tok["fu"], url.Values{"status": {"trial"}}},
			{"interview_candidates", "interview_selection", tok["iv"], url.Values{"status": {"trial"}}},
		} {
			if _, ok := offered(v.report, v.purpose, v.token, v.extra)[t2c]; ok {
				still = append(still, fmt.Sprintf("%s status=trial offers %s, contracted now", v.report, t2c))
			}
		}
		if len(still) == 0 {
			t.Logf("the reports follow the current status %s after the change", time.Since(changed).Round(10*time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			bad = append(bad, still...)
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	reportList(t, "promise 12: the follow-up and interview reports do not use the tenant's current contract status", bad)

	// The public listener serves no metrics without a token; the ops listener does.
	bad = nil
	r = s.apiDo("GET", "/metrics", "", nil)
	if r.code == 200 && (strings.Contains(string(r.body), "# TYPE") || strings.Contains(string(r.body), "shukei_")) {
		bad = append(bad, fmt.Sprintf("GET /metrics on query.listen without a token serves metrics (HTTP 200, %d bytes)", len(r.body)))
	}
	if s.ops != "" {
		o := s.do("http://"+s.ops, "GET", "/metrics", "", nil)
		if o.code != 200 || !strings.Contains(string(o.body), "shukei_") {
			bad = append(bad, fmt.Sprintf("GET /metrics on query.ops_listen: %s (want the metrics)", o))
		}
		for _, path := range []string{"/v1/reports/tenant_signals?purpose=follow_up", "/v1/reports", "/v1/whoami"} {
			o := s.do("http://"+s.ops, "GET", path, "", nil)
			if o.code == 200 {
				bad = append(bad, fmt.Sprintf("GET %s on query.ops_listen without a token: HTTP 200 (%d bytes)", path, len(o.body)))
			}
			for _, ten := range []string{live, term, t2c} {
				if strings.Contains(string(o.body), ten) {
					bad = append(bad, fmt.Sprintf("GET %s on query.ops_listen without a token shows tenant %s", path, ten))
				}
			}
		}
	}
	reportList(t, "promise 12: the public listener serves metrics or data without a token", bad)

	t.Logf("access attack took %s", time.Since(began).Round(100*time.Millisecond))
}
