package attack

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// bgActor is a principal of the break-glass attack.
type bgActor struct {
	id, kind string
	purposes []string
	expires  string
	approver bool
	disable  bool
	token    string
	// what promise 11 lets it do
	mayRequest, mayApprove bool
	cliRefused             bool // 'principals add' refused it (partners and contractors with --approver)
}

func bgBody(tenant, justification, ttl string) map[string]any {
	return map[string]any{"tenant": tenant, "clause": "3(2)-6", "justification": justification, "ttl": ttl}
}

const bgJustification = "A customer reported an imminent threat to a person; the trace is needed now"

// checkStepAudited checks that a step that was done (2xx) is in the audit log: a record of the
// actor, of a report naming the step, that references the grant.
func (s *isoStack) checkStepAudited(actor, step, grant string) []string {
	rs := s.auditQuery("principal_id = ? AND (ticket = ? OR position(reason, ?) > 0) AND positionCaseInsensitive(report, ?) > 0", actor, grant, grant, step)
	for _, a := range rs {
		if allowedDecision(a.decision) {
			return nil
		}
	}
	return []string{fmt.Sprintf("break-glass %s of %s by %s was done (2xx) but no audit record of %s names it (records of that grant and step: %d)", step, grant, actor, actor, len(rs))}
}

// TestBreakGlassOnlyForTheRightPeople attacks promise 11: every kind of principal (employee,
// affiliate, contractor, partner; with and without support; with and without the approver
// grant; expired; disabled) requests, approves and revokes break-glass access; self-approval;
// revocation by strangers; concurrent approvals and revocations in many rounds (a revoked grant
// must never open again); expiry; and justifications carrying terminal escapes, bidi overrides,
// line breaks and other control characters. Every refusal must be in the audit log.
func TestBreakGlassOnlyForTheRightPeople(t *testing.T) {
	began := time.Now()
	s := newIsoStack(t)
	sfx := randHex(3)
	tenant := "bg-acme-" + sfx
	other := "bg-other-" + sfx
	s.cli("tenants", "add", "--tenant", tenant, "--status", "contracted", "--edition", "standard", "--size-band", "s")
	s.cli("tenants", "add", "--tenant", other, "--status", "contracted", "--edition", "standard", "--size-band", "s")
	yesterday := time.Now().UTC().AddDate(0, 0, -1).Format("2006-01-02")
	sup := []string{"support"}
	si := []string{"service_improvement"}
	actors := []*bgActor{
		{id: "emp-sup", kind: "employee", purposes: sup, mayRequest: true},
		{id: "aff-sup", kind: "affiliate", purposes: sup, mayRequest: true},
		{id: "emp-mkt", kind: "employee", purposes: []string{"marketing"}},
		{id: "emp-stranger", kind: "employee", purposes: sup, mayRequest: true},
		{id: "con-sup", kind: "contractor", purposes: sup},
		{id: "con-appr", kind: "contractor", purposes: []string{"marketing"}, approver: true},
		{id: "par-ext", kind: "partner", purposes: []string{"external_aggregate"}},
		{id: "par-appr", kind: "partner", purposes: []string{"external_aggregate"}, approver: true},
		{id: "emp-sup-expired", kind: "employee", purposes: sup, expires: yesterday},
		{id: "aff-sup-expired", kind: "affiliate", purposes: sup, expires: yesterday},
		{id: "emp-sup-disabled", kind: "employee", purposes: sup, disable: true},
		{id: "appr-emp", kind: "employee", purposes: si, approver: true, mayApprove: true},
		{id: "appr-aff", kind: "affiliate", purposes: si, approver: true, mayApprove: true},
		{id: "appr-sup", kind: "employee", purposes: sup, approver: true, mayRequest: true, mayApprove: true},
		{id: "appr-expired", kind: "employee", purposes: si, approver: true, expires: yesterday},
		{id: "appr-disabled", kind: "employee", purposes: si, approver: true, disable: true},
		{id: "aff-appr-expired", kind: "affiliate", purposes: sup, approver: true, expires: yesterday},
	}
	by := map[string]*bgActor{}
	var bad []string
	for _, a := range actors {
		a.id += "-" + sfx
		by[strings.TrimSuffix(a.id, "-"+sfx)] = a
		tok, out, err := s.addPrincipal(a.id, a.kind, a.purposes, a.expires, a.approver)
		if err != nil {
			if a.approver && (a.kind == "partner" || a.kind == "contractor") {
				a.cliRefused = true
				t.Logf("principals add refused the approver grant for %s (%s): %s", a.id, a.kind, lastLine(out))
				// Still attack with the same principal without the grant: it must not approve either.
				tok, out, err = s.addPrincipal(a.id, a.kind, a.purposes, a.expires, false)
			}
			if err != nil {
				t.Fatalf("shukei principals add %s (%s, %v): %v\n%s", a.id, a.kind, a.purposes, err, out)
			}
		} else if a.approver && (a.kind == "partner" || a.kind == "contractor") && approverFlag {
			bad = append(bad, fmt.Sprintf("'shukei principals add --kind %s --approver' gave %s the approver grant (partners and contractors may not approve)", a.kind, a.id))
		}
		a.token = tok
		if a.disable {
			s.cli("principals", "disable", "--id", a.id)
		}
	}
	if !approverFlag {
		missing(t, "'shukei principals add --approver'", "the flag is not in 'principals add --help'; approvers were added without it, so any approval below tests what this build does")
	}
	s.startQuery()
	b := func(a *bgActor, method, path string, body any) reply { return s.apiDo(method, path, a.token, body) }
	trace := func(a *bgActor, grant string) reply {
		q := url.Values{"purpose": {"support"}, "tenant": {tenant}, "breakglass": {grant}}
		return b(a, "GET", "/v1/reports/support_trace?"+q.Encode(), nil)
	}
	request := func(a *bgActor, ttl string) (string, reply) {
		r := b(a, "POST", "/v1/breakglass", bgBody(tenant, bgJustification, ttl))
		return r.str("id"), r
	}
	mustRequest := func(a *bgActor, ttl string) string {
		t.Helper()
		id, r := request(a, ttl)
		if r.code/100 != 2 || id == "" {
			t.Fatalf("precondition: %s (%s with support) could not request break-glass: %s", a.id, a.kind, r)
		}
		bad = append(bad, s.checkStepAudited(a.id, "request", id)...)
		return id
	}
	approve := func(a *bgActor, id string) reply { return b(a, "POST", "/v1/breakglass/"+id+"/approve", nil) }
	revoke := func(a *bgActor, id string) reply { return b(a, "POST", "/v1/breakglass/"+id+"/revoke", nil) }
	refused := func(r reply, a *bgActor, what string) {
		bad = append(bad, s.checkRefused(r, a.id, what)...)
	}

	// 1. Who may request.
	for _, a := range actors {
		id, r := request(a, "4h")
		what := fmt.Sprintf("request by %s (%s, purposes %v, expires %q, disabled %v)", a.id, a.kind, a.purposes, a.expires, a.disable)
		if a.mayRequest {
			if r.code/100 != 2 || id == "" {
				bad = append(bad, fmt.Sprintf("%s: an enabled, unexpired %s with support must be able to request: %s", what, a.kind, r))
				continue
			}
			if st := r.str("state"); st != "pending" {
				bad = append(bad, fmt.Sprintf("%s: a new request is %q, not pending (it must open only on a second principal's approval)", what, st))
			}
			bad = append(bad, s.checkStepAudited(a.id, "request", id)...)
			continue
		}
		refused(r, a, what)
	}
	// Malformed requests are refused and audited too.
	for _, bd := range []map[string]any{
		{"tenant": tenant, "clause": "3(1)-1", "justification": bgJustification, "ttl": "4h"},
		{"tenant": tenant, "clause": "3(2)-6", "justification": bgJustification, "ttl": "73h"},
		{"tenant": tenant, "clause": "3(2)-6", "justification": "too short", "ttl": "4h"},
		{"tenant": tenant, "clause": "3(2)-6", "justification": bgJustification, "ttl": "4h", "approved_by": by["appr-emp"].id},
	} {
		refused(b(by["emp-sup"], "POST", "/v1/breakglass", bd), by["emp-sup"], fmt.Sprintf("malformed request %v", bd))
	}

	// 2. Who may approve: G1 of emp-sup is pending while everyone but the approvers tries.
	g1 := mustRequest(by["emp-sup"], "4h")
	refused(trace(by["emp-sup"], g1), by["emp-sup"], "support_trace with a pending grant")
	for _, a := range actors {
		if a.mayApprove || a == by["emp-sup"] {
			continue
		}
		refused(approve(a, g1), a, fmt.Sprintf("approval of %s by %s (%s, approver asked %v, expires %q, disabled %v)", g1, a.id, a.kind, a.approver, a.expires, a.disable))
	}
	refused(approve(by["emp-sup"], g1), by["emp-sup"], "self-approval of "+g1)
	refused(trace(by["emp-sup"], g1), by["emp-sup"], "support_trace with a grant only refused approvals touched")
	gs := mustRequest(by["appr-sup"], "4h")
	refused(approve(by["appr-sup"], gs), by["appr-sup"], "self-approval by an approver-grant holder of its own request "+gs)
	// The rest uses a fresh grant, whatever the refused approvals did to G1.
	g1 = mustRequest(by["emp-sup"], "4h")
	r := approve(by["appr-emp"], g1)
	if r.code/100 != 2 || r.str("state") != "open" {
		t.Fatalf("precondition: the approver-grant holder %s could not approve %s: %s", by["appr-emp"].id, g1, r)
	}
	bad = append(bad, s.checkStepAudited(by["appr-emp"].id, "approve", g1)...)
	if r := trace(by["emp-sup"], g1); r.code != 200 {
		bad = append(bad, fmt.Sprintf("support_trace by the requester with the approved grant %s: %s (must open)", g1, r))
	} else if seq, ok := r.auditSeq(); ok {
		if a, found := s.auditBySeq(seq); !found {
			bad = append(bad, fmt.Sprintf("the break-glass support_trace (audit_seq %d) is not in the audit log", seq))
		} else if s.auditHasTenant() && a.tenant != tenant {
			bad = append(bad, fmt.Sprintf("the audit record %d of a break-glass support_trace names tenant %q, not %q", seq, a.tenant, tenant))
		}
	}
	refused(trace(by["aff-sup"], g1), by["aff-sup"], "support_trace by another support principal with someone else's grant "+g1)
	refused(trace(by["appr-emp"], g1), by["appr-emp"], "support_trace by the approver (no support purpose) with "+g1)
	{
		q := url.Values{"purpose": {"support"}, "tenant": {other}, "breakglass": {g1}}
		refused(b(by["emp-sup"], "GET", "/v1/reports/support_trace?"+q.Encode(), nil), by["emp-sup"], "support_trace of another tenant with "+g1)
	}

	// 3. Who may revoke.
	for _, name := range []string{"emp-stranger", "aff-sup", "emp-mkt", "con-sup", "con-appr", "par-ext", "par-appr", "emp-sup-expired", "emp-sup-disabled", "appr-expired", "appr-disabled"} {
		a := by[name]
		refused(revoke(a, g1), a, fmt.Sprintf("revocation of %s by %s (%s; neither requester, approver nor an enabled approver-grant holder)", g1, a.id, a.kind))
	}
	if r := trace(by["emp-sup"], g1); r.code != 200 {
		bad = append(bad, fmt.Sprintf("support_trace with %s after only refused revocations: %s (it must still be open)", g1, r))
	}
	if r := revoke(by["emp-sup"], g1); r.code/100 != 2 {
		bad = append(bad, fmt.Sprintf("the requester could not revoke its own grant %s: %s", g1, r))
	} else {
		bad = append(bad, s.checkStepAudited(by["emp-sup"].id, "revoke", g1)...)
	}
	refused(approve(by["appr-aff"], g1), by["appr-aff"], "approval of the revoked grant "+g1)
	refused(trace(by["emp-sup"], g1), by["emp-sup"], "support_trace with the revoked grant "+g1)

	g2 := mustRequest(by["aff-sup"], "4h")
	if r := approve(by["appr-aff"], g2); r.code/100 != 2 {
		bad = append(bad, fmt.Sprintf("the affiliate approver %s could not approve %s: %s", by["appr-aff"].id, g2, r))
	}
	if r := revoke(by["appr-aff"], g2); r.code/100 != 2 {
		bad = append(bad, fmt.Sprintf("the approver could not revoke the grant it approved (%s): %s", g2, r))
	} else {
		bad = append(bad, s.checkStepAudited(by["appr-aff"].id, "revoke", g2)...)
	}
	refused(approve(by["appr-emp"], g2), by["appr-emp"], "re-approval of the revoked grant "+g2)
	refused(trace(by["aff-sup"], g2), by["aff-sup"], "support_trace with the revoked (then re-approved) grant "+g2)

	g3 := mustRequest(by["emp-sup"], "4h")
	if r := revoke(by["appr-emp"], g3); r.code/100 != 2 {
		bad = append(bad, fmt.Sprintf("an approver-grant holder could not revoke a pending grant (%s): %s", g3, r))
	}
	refused(approve(by["appr-aff"], g3), by["appr-aff"], "approval of a grant revoked while pending "+g3)
	refused(trace(by["emp-sup"], g3), by["emp-sup"], "support_trace with "+g3+", revoked while pending")

	g4 := mustRequest(by["emp-sup"], "4h")
	approve(by["appr-emp"], g4)
	if r := revoke(by["appr-aff"], g4); r.code/100 != 2 {
		bad = append(bad, fmt.Sprintf("an approver-grant holder (not its approver) could not revoke %s: %s", g4, r))
	}
	refused(trace(by["emp-sup"], g4), by["emp-sup"], "support_trace with "+g4+", revoked by another approver")

	// 4. Expiry: a short time box, then no use, no re-approval.
	func() {
		var id string
		var ttl time.Duration
		for _, cand := range []string{"3s", "10s"} {
			i, r := request(by["emp-sup"], cand)
			if r.code/100 == 2 && i != "" {
				id, ttl = i, mustDuration(cand)
				break
			}
			t.Logf("a break-glass request with ttl %s: %s", cand, r)
		}
		if id == "" {
			t.Logf("no time box of 10s or less is accepted: the expiry of a grant is attacked with the revocations only")
			return
		}
		r := approve(by["appr-emp"], id)
		if r.code/100 != 2 {
			bad = append(bad, fmt.Sprintf("approval of %s (ttl %s): %s", id, ttl, r))
			return
		}
		exp, err := time.Parse(time.RFC3339, r.str("expires_at"))
		if err != nil {
			exp = time.Now().Add(ttl)
		}
		time.Sleep(time.Until(exp) + 1500*time.Millisecond)
		refused(trace(by["emp-sup"], id), by["emp-sup"], "support_trace with the expired grant "+id)
		refused(approve(by["appr-aff"], id), by["appr-aff"], "re-approval of the expired grant "+id)
		refused(trace(by["emp-sup"], id), by["emp-sup"], "support_trace with the expired, re-approved grant "+id)
	}()
	reportList(t, "promise 11: break-glass for the wrong people, or a step not in the audit log", bad)
	t.Logf("paths done in %s", time.Since(began).Round(100*time.Millisecond))

	// 5. Races: approvals and revocations land concurrently; once a revocation was answered,
	// no use of the grant may succeed, and the grant ends revoked.
	bad = nil
	const rounds = 20
	var openedAfterRevoke, refusedRevokes, unaudited []string
	for round := range rounds {
		id := mustRequest(by["emp-sup"], "4h")
		if round%2 == 1 {
			approve(by["appr-emp"], id) // half the rounds start from an open grant
		}
		var mu sync.Mutex
		var replies []struct {
			what string
			r    reply
		}
		rec := func(what string, r reply) {
			mu.Lock()
			replies = append(replies, struct {
				what string
				r    reply
			}{what, r})
			mu.Unlock()
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		jitter := func() { time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) }
		for i := range 6 {
			a := by["appr-emp"]
			if i%2 == 1 {
				a = by["appr-aff"]
			}
			wg.Add(1)
			go func() { defer wg.Done(); <-start; jitter(); rec("approve by "+a.id, approve(a, id)) }()
		}
		for _, a := range []*bgActor{by["emp-sup"], by["appr-emp"]} {
			wg.Add(1)
			go func() { defer wg.Done(); <-start; jitter(); rec("revoke by "+a.id, revoke(a, id)) }()
		}
		done := make(chan struct{})
		var tw sync.WaitGroup
		tw.Add(1)
		go func() {
			defer tw.Done()
			<-start
			for {
				select {
				case <-done:
					return
				default:
				}
				rec("support_trace", trace(by["emp-sup"], id))
			}
		}()
		close(start)
		wg.Wait()
		close(done)
		tw.Wait()
		rec("support_trace after the race", trace(by["emp-sup"], id))
		var revokedAt time.Time
		for _, x := range replies {
			if strings.HasPrefix(x.what, "revoke") && x.r.code/100 == 2 && (revokedAt.IsZero() || x.r.done.Before(revokedAt)) {
				revokedAt = x.r.done
			}
		}
		if revokedAt.IsZero() {
			refusedRevokes = append(refusedRevokes, fmt.Sprintf("round %d: neither the requester nor an approver could revoke %s", round, id))
			continue
		}
		for _, x := range replies {
			if !x.r.start.After(revokedAt) {
				continue
			}
			switch {
			case strings.HasPrefix(x.what, "support_trace") && x.r.code == 200:
				openedAfterRevoke = append(openedAfterRevoke, fmt.Sprintf("round %d: %s of %s succeeded %s after a revocation was answered", round, x.what, id, x.r.start.Sub(revokedAt).Round(time.Microsecond)))
			case strings.HasPrefix(x.what, "approve") && x.r.code/100 == 2 && x.r.str("state") == "open":
				openedAfterRevoke = append(openedAfterRevoke, fmt.Sprintf("round %d: %s of %s answered state open %s after a revocation was answered", round, x.what, id, x.r.start.Sub(revokedAt).Round(time.Microsecond)))
			}
		}
		for _, x := range replies {
			if x.r.code >= 400 && x.r.code < 500 {
				if v := s.checkRefused(x.r, "", fmt.Sprintf("round %d %s", round, x.what)); len(v) > 0 {
					unaudited = append(unaudited, v...)
				}
			}
		}
		// The grant's state as 'shukei breakglass' shows it.
		out := s.cli("breakglass")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, id) && !strings.Contains(line, "revoked") {
				openedAfterRevoke = append(openedAfterRevoke, fmt.Sprintf("round %d: 'shukei breakglass' shows %s not revoked after a revocation was answered: %s", round, id, strings.Join(strings.Fields(line), " ")))
			}
		}
	}
	reportList(t, "promise 11: a revoked grant opened again under concurrent approvals and revocations", openedAfterRevoke)
	reportList(t, "promise 11: a revocation by the requester or an approver was refused in a race", refusedRevokes)
	reportList(t, "promise 11: a refused step of the races is not in the audit log", unaudited)
	t.Logf("%d race rounds done in %s", rounds, time.Since(began).Round(100*time.Millisecond))

	// 6. Free text: printable-only when stored and when shown.
	bad = nil
	type evil struct{ name, text string }
	evils := []evil{
		{"ANSI colour (ESC [)", "Threat to life reported \x1b[31mJMARK01\x1b[0m trace needed now"},
		{"OSC title (ESC ] … BEL)", "Threat to life reported JMARK02 \x1b]0;owned\x07 trace needed now"},
		{"cursor movement to rewrite a line", "Threat to life reported JMARK03 \x1b[2K\x1b[1Gapproved by the CEO"},
		{"bidi override (U+202E)", "Threat to life reported JMARK04 \u202edeen ecart won trace"},
		{"bidi isolate (U+2066)", "Threat to life reported JMARK05 \u2066hidden\u2069 trace needed"},
		{"newline forging a second record", "Threat to life reported JMARK06\nbg-fake  admin  all  3(2)-6  open  ceo"},
		{"carriage return", "Threat to life reported JMARK07\rapproved justification overwritten"},
		{"NUL", "Threat to life reported JMARK08\x00 trace needed right now"},
		{"C1 CSI (U+009B)", "Threat to life reported JMARK09 \u009b31m trace needed now"},
		{"line separator (U+2028)", "Threat to life reported JMARK10\u2028second line of text here"},
		{"zero-width space", "Threat to life reported JMARK11 tr\u200bace needed right now"},
		{"tab", "Threat to life reported JMARK12\ttrace needed right now!"},
		{"backspace", "Threat to life reported JMARK13 xx\b\b trace needed now"},
	}
	reqEmp := by["emp-sup"]
	stored := map[string]string{}
	for _, e := range evils {
		r := b(reqEmp, "POST", "/v1/breakglass", bgBody(tenant, e.text, "1h"))
		what := "justification with " + e.name
		if r.code/100 == 2 {
			id := r.str("id")
			stored[id] = e.name
			if c, i, ok := unprintable(r.str("justification")); ok {
				bad = append(bad, fmt.Sprintf("%s: accepted, and the answer shows it with U+%04X at byte %d", what, c, i))
			}
			continue
		}
		bad = append(bad, s.checkRefused(r, reqEmp.id, what)...)
	}
	// Invalid UTF-8, sent as raw bytes.
	raw := []byte(`{"tenant":"` + tenant + `","clause":"3(2)-6","justification":"Threat to life reported JMARK14 \xff\xfe trace needed now","ttl":"1h"}`)
	if r := b(reqEmp, "POST", "/v1/breakglass", raw); r.code/100 == 2 {
		stored[r.str("id")] = "invalid UTF-8"
	} else {
		bad = append(bad, s.checkRefused(r, reqEmp.id, "justification with invalid UTF-8")...)
	}
	t.Logf("justifications with control characters: %d accepted (must be stored printable-only), %d refused", len(stored), len(evils)+1-len(stored))
	// What is stored: the breakglass table and the audit log.
	ctx := context.Background()
	_, rows, err := readAll(ctx, s.conn, "SELECT id, justification FROM "+s.db+"_breakglass.breakglass")
	if err != nil {
		t.Fatalf("read %s.breakglass: %v", s.db, err)
	}
	for _, row := range rows {
		if c, i, ok := unprintable(row[1]); ok {
			bad = append(bad, fmt.Sprintf("%s.breakglass stores the justification of %s (%s) with U+%04X at byte %d", s.db, row[0], stored[row[0]], c, i))
		}
	}
	_, rows, err = readAll(ctx, s.conn, "SELECT seq, principal_id, purpose, ticket, report, decision, reason FROM "+s.db+"_audit.audit_log")
	if err != nil {
		t.Fatalf("read %s.audit_log: %v", s.db, err)
	}
	for _, row := range rows {
		for i, v := range row[1:] {
			if c, at, ok := unprintable(v); ok {
				bad = append(bad, fmt.Sprintf("%s.audit_log record %s stores column %d with U+%04X at byte %d", s.db, row[0], i+1, c, at))
			}
		}
	}
	// What is shown: 'shukei breakglass' and 'shukei audit report'.
	month := time.Now().UTC().Format("2006-01")
	for _, args := range [][]string{{"breakglass"}, {"audit", "report", "--principal", reqEmp.id, "--month", month}} {
		out, err := s.tryCLI(args...)
		if err != nil {
			bad = append(bad, fmt.Sprintf("shukei %s: %v", strings.Join(args, " "), err))
		}
		if strings.Contains(out, "\x1b") {
			bad = append(bad, fmt.Sprintf("'shukei %s' prints raw ESC bytes (%d)", strings.Join(args, " "), strings.Count(out, "\x1b")))
		}
		for n, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			if c, i, ok := unprintable(line); ok {
				bad = append(bad, fmt.Sprintf("'shukei %s' line %d shows U+%04X at byte %d: %q", strings.Join(args, " "), n+1, c, i, cut(line, 120)))
			}
		}
		// A line break in a justification would start a line that is no record of the table.
		if strings.Contains(out, "bg-fake  admin") || strings.Contains(out, "\nbg-fake") {
			bad = append(bad, fmt.Sprintf("'shukei %s' shows a forged line from a justification's line break", strings.Join(args, " ")))
		}
	}
	reportList(t, "promise 11: free text stored or shown with control, escape or bidi characters (or a refusal not audited)", bad)
	t.Logf("break-glass attack took %s", time.Since(began).Round(100*time.Millisecond))
}

func mustDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
