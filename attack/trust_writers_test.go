package attack

// Promise 17, second half: any number of processes appending at once (two query services and
// retention) leave one chain that verifies, every answered request's audit_seq naming its own
// record — even when one query service is stopped (SIGSTOP) mid-flood for longer than any
// timeout and resumed.

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type sentReq struct {
	principal, token string
	path             string
	report, purpose  string
	allowed          bool
	via              string
}

type answered struct {
	req  sentReq
	code int
	seq  uint64
	ok   bool
	err  error
	body string
}

func TestTrustTrailsManyWriters(t *testing.T) {
	t.Parallel()
	s := newTrustStack(t)
	auditKey := s.writeKey("audit.key")
	if s.hasSetting("SHUKEI_AUDIT_KEY_FILE="+auditKey, "audit.key_file (SHUKEI_AUDIT_KEY_FILE)") {
		s.env = append(s.env, "SHUKEI_AUDIT_KEY_FILE="+auditKey)
	}
	anchors := s.hasCommand("audit", "anchor")
	s.env = append(s.env, "SHUKEI_QUERY_TIMEOUT=2s")
	sfx := randHex(2)
	a := s.mustPrincipal("trw-a-"+sfx, "employee", []string{"service_improvement", "marketing"}, "", false)
	b := s.mustPrincipal("trw-b-"+sfx, "employee", []string{"follow_up"}, "", false)
	p := s.mustPrincipal("trw-p-"+sfx, "partner", []string{"external_aggregate"}, "", false)
	reqs := []sentReq{
		{principal: "trw-a-" + sfx, token: a, path: "/v1/reports/feature_ranking?purpose=service_improvement", report: "feature_ranking", purpose: "service_improvement", allowed: true},
		{principal: "trw-a-" + sfx, token: a, path: "/v1/reports/contract_comparison?purpose=marketing&weeks=1", report: "contract_comparison", purpose: "marketing", allowed: true},
		{principal: "trw-b-" + sfx, token: b, path: "/v1/reports/tenant_signals?purpose=follow_up", report: "tenant_signals", purpose: "follow_up", allowed: true},
		{principal: "trw-p-" + sfx, token: p, path: "/v1/reports/dp_budget?purpose=external_aggregate", report: "dp_budget", purpose: "external_aggregate", allowed: true},
		{principal: "trw-a-" + sfx, token: a, path: "/v1/reports/tenant_signals?purpose=follow_up", report: "tenant_signals", purpose: "follow_up"},
		{principal: "trw-p-" + sfx, token: p, path: "/v1/reports/feature_ranking?purpose=service_improvement", report: "feature_ranking", purpose: "service_improvement"},
		{principal: "trw-b-" + sfx, token: b, path: "/v1/reports/contract_comparison?purpose=marketing", report: "contract_comparison", purpose: "marketing"},
		{principal: "", token: "", path: "/v1/reports/feature_ranking?purpose=service_improvement", report: "unauthenticated"},
		{principal: "", token: "shq_" + randHex(20), path: "/v1/whoami", report: "unauthenticated"},
	}
	anchorF := s.dir + "/audit.anchor"
	if anchors {
		s.cli("audit", "anchor", "--out", anchorF) // an empty chain's head, or refused: either way
	}
	qa := s.startQueryAs("query A")
	qb := s.startQueryAs("query B")
	ret := s.startAs("retention --every 1s", "", nil, "retention", "run", "--every", "1s")

	// Tenants whose contract ended long ago keep arriving, so retention deletes one now and
	// then (a receipt in the audit log each); 'shukei tenants delete' appends too.
	stop := make(chan struct{})
	var side sync.WaitGroup
	side.Add(1)
	go func() {
		defer side.Done()
		old := time.Now().AddDate(-6, 0, 0).Format("2006-01-02")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ten := fmt.Sprintf("trw-old-%s-%d", sfx, i)
			if _, err := s.tryCLI("tenants", "add", "--tenant", ten, "--status", "contracted", "--edition", "standard", "--size-band", "s", "--contract-end", old); err != nil {
				continue
			}
			if i%3 == 0 {
				_, _ = s.tryCLI("tenants", "delete", "--tenant", ten, "--reason", "trust attack")
			}
			time.Sleep(700 * time.Millisecond)
		}
	}()

	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var mu sync.Mutex
	var got []answered
	var wg sync.WaitGroup
	flood := time.Now().Add(20 * time.Second)
	for w := range 24 {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for time.Now().Before(flood) {
				r := reqs[rng.IntN(len(reqs))]
				base := qa
				r.via = "A"
				if rng.IntN(2) == 1 {
					base, r.via = qb, "B"
				}
				req, _ := http.NewRequest("GET", "http://"+base.api+r.path, nil)
				if r.token != "" {
					req.Header.Set("Authorization", "Bearer "+r.token)
				}
				an := answered{req: r}
				resp, err := client.Do(req)
				if err != nil {
					an.err = err
				} else {
					var buf strings.Builder
					_, _ = fmt.Fprint(&buf, readBody(resp))
					an.code, an.body = resp.StatusCode, buf.String()
					an.seq, an.ok = jsonSeq([]byte(an.body))
				}
				mu.Lock()
				got = append(got, an)
				mu.Unlock()
			}
		}(w)
	}
	// Query B stopped mid-flood for longer than any timeout (12 s), then resumed.
	time.Sleep(4 * time.Second)
	_ = qb.p.cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(12 * time.Second) // query.timeout is 2 s; the other defaults are at most 10 s
	_ = qb.p.cmd.Process.Signal(syscall.SIGCONT)
	wg.Wait()
	close(stop)
	side.Wait()
	time.Sleep(2 * time.Second) // a last retention run
	for _, pr := range []*proc{qa.p, qb.p, ret} {
		if !pr.running() {
			t.Errorf("%s exited during the attack (%v):\n%s", pr.name, pr.err, tail(pr.out, 15))
		}
		s.stop(pr)
	}

	// One chain that verifies.
	if out, err := s.tryCLI("audit", "verify"); err != nil {
		t.Errorf("promise 17: after concurrent appends the audit log does not verify: %v\n%s", err, tailText(out, 8))
	}
	if anchors {
		if out, err := s.tryCLI("audit", "anchor", "--out", anchorF); err != nil {
			t.Errorf("promise 17: 'shukei audit anchor' after concurrent appends: %v\n%s", err, tailText(out, 8))
		} else if out, err := s.tryCLI("audit", "verify", "--anchor", anchorF); err != nil {
			t.Errorf("promise 17: 'shukei audit verify --anchor' after concurrent appends: %v\n%s", err, tailText(out, 8))
		}
	}

	// Every answered request's audit_seq names its own record.
	recs := s.auditRecords("1 = 1")
	var bad []string
	bySeq := map[uint64][]answered{}
	var nAnswered, nB, n503 int
	// judge checks one answered request against the record its audit_seq names.
	judge := func(an answered) []string {
		var out []string
		rs := distinctAudit(recs[an.seq])
		switch {
		case len(rs) == 0:
			out = append(out, fmt.Sprintf("%s via %s (principal %q, HTTP %d): audit_seq %d is not in the audit log", an.req.path, an.req.via, an.req.principal, an.code, an.seq))
		case len(rs) > 1:
			out = append(out, fmt.Sprintf("audit_seq %d names %d different records (a fork): %+v", an.seq, len(rs), rs))
		case an.req.principal == "":
			if an.code != 401 || allowedDecision(rs[0].decision) {
				out = append(out, fmt.Sprintf("unauthenticated %s via %s: HTTP %d, its record %d says %+v", an.req.path, an.req.via, an.code, an.seq, rs[0]))
			}
		default:
			r := rs[0]
			if r.principal != an.req.principal || (r.report != an.req.report && r.purpose != an.req.purpose) {
				out = append(out, fmt.Sprintf("%s via %s (principal %s, HTTP %d): audit_seq %d names a record of principal %q, report %q, purpose %q", an.req.path, an.req.via, an.req.principal, an.code, an.seq, r.principal, r.report, r.purpose))
			} else if an.code == 200 && !allowedDecision(r.decision) {
				out = append(out, fmt.Sprintf("%s via %s: answered 200 but its record %d says decision %q", an.req.path, an.req.via, an.seq, r.decision))
			} else if an.code >= 400 && an.code < 500 && allowedDecision(r.decision) && !strings.Contains(strings.ToLower(r.decision), "refus") {
				out = append(out, fmt.Sprintf("%s via %s: refused (HTTP %d) but its record %d says decision %q", an.req.path, an.req.via, an.code, an.seq, r.decision))
			}
			// (An allowed report may still be answered 400 for its data, e.g. a week not sealed,
			// or 504 when its service was stopped past query.timeout: audited either way.)
			if an.req.allowed && (an.code == 401 || an.code == 403) {
				out = append(out, fmt.Sprintf("%s via %s (principal %s): allowed request answered HTTP %d: %s", an.req.path, an.req.via, an.req.principal, an.code, cut(an.body, 120)))
			}
		}
		return out
	}
	for _, an := range got {
		if msg := scanCHError(an.req.path, []byte(an.body)); msg != "" {
			bad = append(bad, msg)
		}
		if an.err != nil {
			bad = append(bad, fmt.Sprintf("%s via %s: no answer within 60 s: %v", an.req.path, an.req.via, an.err))
			continue
		}
		nAnswered++
		if an.req.via == "B" {
			nB++
		}
		if an.code == 503 {
			n503++
		}
		if !an.ok && an.code == 503 {
			// Refused because the audit log could not be written (fail closed): not answered,
			// so no audit_seq is promised.
			continue
		}
		if !an.ok {
			bad = append(bad, fmt.Sprintf("%s via %s (principal %q): HTTP %d without an audit_seq: %s", an.req.path, an.req.via, an.req.principal, an.code, cut(an.body, 120)))
			continue
		}
		bySeq[an.seq] = append(bySeq[an.seq], an)
		bad = append(bad, judge(an)...)
	}
	for seq, ans := range bySeq {
		var authed int
		for _, an := range ans {
			if an.req.principal != "" {
				authed++
			}
		}
		if authed > 1 {
			bad = append(bad, fmt.Sprintf("audit_seq %d answers %d authenticated requests (each request has a record of its own)", seq, authed))
		}
	}
	// Self-check: an answer judged against another principal's expectation is flagged.
	for _, an := range got {
		if an.ok && an.code == 200 && an.req.principal != "" {
			wrong := an
			wrong.req.principal = "someone-else"
			if len(judge(wrong)) == 0 {
				t.Errorf("self-check: an answer whose record names another principal is not flagged")
			}
			break
		}
	}
	ours := map[string]bool{"trw-a-" + sfx: true, "trw-b-" + sfx: true, "trw-p-" + sfx: true, "anonymous": true, "": true}
	var others int
	for _, rs := range recs {
		for _, r := range rs {
			if !ours[r.principal] {
				others++
			}
		}
	}
	sort.Strings(bad)
	t.Logf("%d requests answered (%d via the query service that was stopped, %d answered 503); %d audit records, %d of other writers (retention, tenants delete)", nAnswered, nB, n503, len(recs), others)
	if others == 0 {
		t.Errorf("harness: no record of another writer (retention, tenants delete) was appended during the flood")
	}
	if nB == 0 {
		t.Errorf("harness: no request reached query B")
	}
	reportList(t, "promise 17: concurrent appenders leave one chain, every answered request's audit_seq naming its own record", bad)
}

func distinctAudit(rs []trustAudit) []trustAudit {
	seen := map[trustAudit]bool{}
	var out []trustAudit
	for _, r := range rs {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

func readBody(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for b.Len() < 4<<20 {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}
