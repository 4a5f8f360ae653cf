package query_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/query/audit"
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
	// The requester cannot approve its own request, nor can a contractor.
	if status, m := f.post("investigator", "/v1/breakglass/"+id+"/approve", nil); status != 403 {
		t.Errorf("self-approval: %d %v", status, m)
	}
	if status, m := f.post("agency", "/v1/breakglass/"+id+"/approve", nil); status != 403 {
		t.Errorf("contractor approval: %d %v", status, m)
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
	if a := f.lastAudit(); a.Ticket != id || a.Decision != audit.Allowed || a.Reason != "break-glass" || a.Rows != 3 {
		t.Errorf("audit record of the use %+v", a)
	}
	f.report("investigator", "support_trace", 403, "purpose", "support", "tenant", "beta-co", "breakglass", id)
	f.report("pm", "support_trace", 403, "purpose", "support", "tenant", "acme", "breakglass", id)
	f.report("investigator", "support_trace", 403, "purpose", "support", "tenant", "acme")
	// Break-glass opens the support trace only, not another purpose.
	f.report("investigator", "contract_comparison", 403, "purpose", "marketing", "breakglass", id)

	// Revoked: closed at once.
	if status, m := f.post("dpo", "/v1/breakglass/"+id+"/revoke", nil); status != 200 || m["state"] != "revoked" {
		t.Fatalf("revoke: %d %v", status, m)
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
	if len(dpo) < 2 || dpo[0].Report != "breakglass_approve" || dpo[0].Ticket != id {
		t.Errorf("the approver's audit report: %+v", dpo)
	}
	if _, err := f.log.Verify(ctx); err != nil {
		t.Error(err)
	}
}
