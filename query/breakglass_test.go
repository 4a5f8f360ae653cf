package query_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/query/principal"
)

// post sends a JSON body as principal who and returns the status and decoded answer.
func (f *fixture) post(who, path string, body any) (int, map[string]any) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest("POST", f.srv.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+f.tokens[who])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// Break-glass (clause 3(2)-5..7): a written, time-boxed request that opens one tenant's trace
// only after a second principal approves it; every step audited.
func TestBreakGlass(t *testing.T) {
	f := newFixture(t, data(time.Now().UTC()))
	ctx := context.Background()
	justification := "Written inquiry from the prefectural police, ref. 2026-1129-7, about account takeover"

	for _, bad := range []map[string]any{
		{"tenant": "acme", "clause": "3(2)-9", "justification": justification, "ttl": "4h"},
		{"tenant": "acme", "clause": "3(2)-7", "justification": "because", "ttl": "4h"},
		{"tenant": "acme", "clause": "3(2)-7", "justification": justification, "ttl": "400h"},
		{"tenant": "acme' OR 1=1", "clause": "3(2)-7", "justification": justification, "ttl": "4h"},
		{"tenant": "acme", "clause": "3(2)-7", "justification": justification, "ttl": "4h", "purpose": "marketing"},
	} {
		if status, m := f.post("investigator", "/v1/breakglass", bad); status != 400 {
			t.Errorf("request %v: %d %v", bad, status, m)
		}
	}
	status, g := f.post("investigator", "/v1/breakglass", map[string]any{"tenant": "acme", "clause": "3(2)-7", "justification": justification, "ttl": "4h"})
	if status != 201 || g["state"] != "pending" || g["tenant"] != "acme" {
		t.Fatalf("request: %d %v", status, g)
	}
	id := g["id"].(string)

	// Without approval: refused, audited with the grant's id.
	r := f.report("investigator", "support_trace", 403, "purpose", "support", "tenant", "acme", "breakglass", id)
	if !strings.Contains(r.Error, "pending") {
		t.Errorf("before approval: %s", r.Error)
	}
	if a := f.lastAudit(); a.Ticket != id || a.Decision != audit.Denied || a.Principal != "investigator" {
		t.Errorf("audit record %+v", a)
	}
	// The requester cannot approve its own request, nor can a contractor, a partner, or an
	// employee without the approver grant; each refusal is audited with the grant and tenant.
	for _, who := range []string{"investigator", "agency", "support-agency", "partner", "helpdesk", "pm"} {
		if status, m := f.post(who, "/v1/breakglass/"+id+"/approve", nil); status != 403 {
			t.Errorf("approval by %s: %d %v", who, status, m)
		}
		if a := f.lastAudit(); a.Principal != who || a.Report != "breakglass_approve" || a.Decision != audit.Denied || a.Ticket != id || a.Tenant != "acme" {
			t.Errorf("refused approval by %s: audit record %+v", who, a)
		}
	}
	status, g = f.post("dpo", "/v1/breakglass/"+id+"/approve", nil)
	if status != 200 || g["state"] != "open" || g["approved_by"] != "dpo" || g["expires_at"] == nil {
		t.Fatalf("approval: %d %v", status, g)
	}

	// Approved: the trace of that tenant, and only that tenant, for this principal only.
	r = f.report("investigator", "support_trace", 200, "purpose", "support", "tenant", "acme", "breakglass", id, "around_minutes", "120")
	if len(r.Rows) != 3 {
		t.Errorf("trace rows %d", len(r.Rows))
	}
	if a := f.lastAudit(); a.Ticket != id || a.Decision != audit.Allowed || a.Reason != "" || a.Rows != 3 || a.Tenant != "acme" {
		t.Errorf("audit record of the use %+v", a)
	}
	f.report("investigator", "support_trace", 403, "purpose", "support", "tenant", "beta-co", "breakglass", id)
	f.report("pm", "support_trace", 403, "purpose", "support", "tenant", "acme", "breakglass", id)
	f.report("investigator", "support_trace", 403, "purpose", "support", "tenant", "acme")
	// Break-glass opens the support trace only, not another purpose.
	f.report("investigator", "contract_comparison", 403, "purpose", "marketing", "breakglass", id)

	// Only the requester, the approver or an approver-grant holder may revoke it.
	for _, who := range []string{"pm", "helpdesk", "agency", "partner"} {
		if status, m := f.post(who, "/v1/breakglass/"+id+"/revoke", nil); status != 403 {
			t.Errorf("revocation by %s: %d %v", who, status, m)
		}
		if a := f.lastAudit(); a.Principal != who || a.Report != "breakglass_revoke" || a.Decision != audit.Denied || a.Ticket != id || a.Tenant != "acme" {
			t.Errorf("refused revocation by %s: audit record %+v", who, a)
		}
	}
	f.report("investigator", "support_trace", 200, "purpose", "support", "tenant", "acme", "breakglass", id)

	// Revoked: closed at once, for good.
	if status, m := f.post("group-dpo", "/v1/breakglass/"+id+"/revoke", nil); status != 200 || m["state"] != "revoked" {
		t.Fatalf("revoke: %d %v", status, m)
	}
	if a := f.lastAudit(); a.Principal != "group-dpo" || a.Report != "breakglass_revoke" || a.Decision != "revoked" || a.Tenant != "acme" {
		t.Errorf("revocation audit record %+v", a)
	}
	f.report("investigator", "support_trace", 403, "purpose", "support", "tenant", "acme", "breakglass", id)
	if status, m := f.post("dpo", "/v1/breakglass/"+id+"/approve", nil); status != 403 {
		t.Errorf("approval after the revocation: %d %v", status, m)
	}
	f.report("investigator", "support_trace", 403, "purpose", "support", "tenant", "acme", "breakglass", id)

	// The time box ends by itself.
	_, g = f.post("investigator", "/v1/breakglass", map[string]any{"tenant": "acme", "clause": "3(2)-6", "justification": justification, "ttl": "2s"})
	short := g["id"].(string)
	if status, m := f.post("dpo", "/v1/breakglass/"+short+"/approve", nil); status != 200 {
		t.Fatalf("approve: %d %v", status, m)
	}
	f.report("investigator", "support_trace", 200, "purpose", "support", "tenant", "acme", "breakglass", short)
	time.Sleep(2500 * time.Millisecond)
	r = f.report("investigator", "support_trace", 403, "purpose", "support", "tenant", "acme", "breakglass", short)
	if !strings.Contains(r.Error, "expired") {
		t.Errorf("after the time box: %s", r.Error)
	}

	// An open grant is used only while its requester still qualifies: support taken away, the
	// grant is refused (the report's purpose check lets a break-glass use through to it).
	_, g = f.post("investigator", "/v1/breakglass", map[string]any{"tenant": "acme", "clause": "3(2)-5", "justification": justification, "ttl": "1h"})
	third := g["id"].(string)
	if status, m := f.post("group-dpo", "/v1/breakglass/"+third+"/approve", nil); status != 200 || m["state"] != "open" {
		t.Fatalf("approval by an affiliate approver: %d %v", status, m)
	}
	f.report("investigator", "support_trace", 200, "purpose", "support", "tenant", "acme", "breakglass", third)
	if _, err := principal.New(f.conn, f.db).Update(ctx, "investigator", func(p *principal.Principal) error {
		p.Purposes = []string{"service_improvement"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r = f.report("investigator", "support_trace", 403, "purpose", "support", "tenant", "acme", "breakglass", third)
	if !strings.Contains(r.Error, "no longer qualifies") {
		t.Errorf("requester without support: %s", r.Error)
	}
	if a := f.lastAudit(); a.Ticket != third || a.Decision != audit.Denied || a.Tenant != "acme" {
		t.Errorf("audit record of the refused use %+v", a)
	}

	// Everything is in the audit log, reported per principal for the month, and the chain holds.
	recs, err := f.log.Report(ctx, "investigator", time.Now().UTC().Format("2006-01"))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, rec := range recs {
		kinds = append(kinds, rec.Report+":"+rec.Decision)
	}
	got := strings.Join(kinds, " ")
	for _, want := range []string{"breakglass_request:requested", "support_trace:denied", "support_trace:allowed"} {
		if !strings.Contains(got, want) {
			t.Errorf("the investigator's audit report lacks %s: %s", want, got)
		}
	}
	dpo, _ := f.log.Report(ctx, "dpo", time.Now().UTC().Format("2006-01"))
	if len(dpo) < 2 || dpo[0].Report != "breakglass_approve" || dpo[0].Ticket != id || dpo[0].Tenant != "acme" {
		t.Errorf("the approver's audit report: %+v", dpo)
	}
	if _, err := f.log.Verify(ctx); err != nil {
		t.Error(err)
	}
}

// Who may request (docs/promises.md 11): an enabled, unexpired employee or affiliate whose
// grant names support; and the justification is printable. Each refusal is audited.
func TestBreakGlassRequestRules(t *testing.T) {
	f := newFixture(t, data(time.Now().UTC()))
	justification := "Written inquiry from the prefectural police, ref. 2026-1129-7, about account takeover"
	body := func(j string) map[string]any {
		return map[string]any{"tenant": "acme", "clause": "3(2)-7", "justification": j, "ttl": "4h"}
	}
	for who, want := range map[string]int{
		"partner": 403, "agency": 403, "support-agency": 403, "pm": 403, "dpo": 403, "old-agency": 403, "gone": 403,
		"helpdesk": 201, "group-dpo": 201,
	} {
		status, m := f.post(who, "/v1/breakglass", body(justification))
		if status != want {
			t.Errorf("request by %s: %d %v, want %d", who, status, m, want)
		}
		a := f.lastAudit()
		// Refused at authentication (disabled, expired) before the body is read: no tenant yet.
		refusedEarly := who == "old-agency" || who == "gone"
		switch {
		case want == 403 && (a.Principal != who || a.Report != "breakglass_request" || a.Decision != audit.Denied || (a.Tenant != "acme") != refusedEarly):
			t.Errorf("refused request by %s: audit record %+v", who, a)
		case want == 201 && (a.Principal != who || a.Decision != "requested" || a.Ticket != m["id"] || a.Tenant != "acme"):
			t.Errorf("request by %s: audit record %+v", who, a)
		}
	}
	// A justification that could rewrite a terminal, or hide or fake a line: 400.
	for _, j := range []string{
		justification + "\x1b[1A\x1b[2K",
		"\u202e" + justification,
		justification + "\nbg-0000  helpdesk  acme  3(2)-7  open",
		justification + "\r",
	} {
		if status, m := f.post("helpdesk", "/v1/breakglass", body(j)); status != 400 || !strings.Contains(fmt.Sprint(m["error"]), "not printable") {
			t.Errorf("justification %q: %d %v", j, status, m)
		}
	}
	if status, m := f.post("helpdesk", "/v1/breakglass", body("  Customer's life at risk, ticket T-99; 顧客の生命の保護  ")); status != 201 {
		t.Errorf("printable justification with spaces: %d %v", status, m)
	}
}
