package attack

// Promise 10 (docs/promises.md): "The dashboards show only what the aggregate reports show.
// Grafana holds no ClickHouse credentials: it reads the query service's reports as a principal of
// its own, whose grant names only service_improvement, marketing and external_aggregate, every
// request audited; and the only read-only ClickHouse users Shukei declares are the query
// service's purpose readers."
//
// Written from the promise, docker-compose.yml, dashboards/grafana/**, the OpenAPI document and
// the command-line help alone: nothing under query/, aggregator/ or gate/ was read, nor
// migrations/readers.go.

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shukei/shukei/internal/servicetest"
)

// dashboardsPurposes is what the dashboards' principal's grant must name, and nothing else.
var dashboardsPurposes = []string{"service_improvement", "marketing", "external_aggregate"}

// policyPurposes are the purposes of every policy version built in (policy/v*.yaml):
// one purpose database, and one reader, each (README).
func policyPurposes(t *testing.T) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(servicetest.ModuleRoot(t), "policy", "v*.yaml"))
	set := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Purposes map[string]any `yaml:"purposes"`
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("harness: %s: %v", f, err)
		}
		for p := range doc.Purposes {
			set[p] = true
		}
	}
	if len(set) == 0 {
		t.Fatalf("harness: no purposes in policy/v*.yaml")
	}
	var out []string
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// aggregateReports are the aggregate reports by name, with their purpose (README, OpenAPI).
var aggregateReports = map[string]string{
	"feature_ranking":     "service_improvement",
	"active_tenants":      "service_improvement",
	"contract_comparison": "marketing",
	"status_activity":     "marketing",
	"dp_releases":         "external_aggregate",
	"dp_budget":           "external_aggregate",
}

// tenantReports are the tenant-level reports: never for the dashboards' principal.
var tenantReports = map[string]string{
	"tenant_signals":       "follow_up",
	"interview_candidates": "interview_selection",
	"support_trace":        "support",
}

// ---- docker-compose.yml ----

func loadCompose(t *testing.T) map[string]map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(servicetest.ModuleRoot(t), "docker-compose.yml"))
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	var doc struct {
		Services map[string]map[string]any `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("harness: docker-compose.yml: %v", err)
	}
	return doc.Services
}

// stringsOf turns a Compose command (a list, or a string split on blanks) into its words.
func stringsOf(v any) []string {
	switch x := v.(type) {
	case string:
		return strings.Fields(x)
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

// splitFlags turns --flag=value into --flag value.
func splitFlags(args []string) []string {
	var out []string
	for _, a := range args {
		if strings.HasPrefix(a, "--") {
			if k, v, ok := strings.Cut(a, "="); ok {
				out = append(out, k, v)
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// withFlag returns args with the value of name replaced (or name value appended; value ""
// with drop=true removes the flag and its value).
func withFlag(args []string, name, value string) []string {
	out := append([]string(nil), args...)
	for i, a := range out {
		if a == name && i+1 < len(out) {
			out[i+1] = value
			return out
		}
	}
	return append(out, name, value)
}

func withoutFlag(args []string, name string, hasValue bool) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == name {
			if hasValue {
				i++
			}
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// composeOneShot finds the one-shot service of docker-compose.yml that makes the dashboards'
// principal: a command 'principals add … --token-file … --exist-ok'. It returns the service's
// name and the command's words (from 'principals' on, --flag=value split).
func composeOneShot(t *testing.T) (string, []string, bool) {
	t.Helper()
	svcs := loadCompose(t)
	var names []string
	for n := range svcs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cmd := splitFlags(stringsOf(svcs[n]["command"]))
		for i := 0; i+1 < len(cmd); i++ {
			if cmd[i] == "principals" && cmd[i+1] == "add" && contains(cmd, "--token-file") {
				return n, cmd[i:], true
			}
		}
	}
	return "", nil, false
}

// ---- the dashboards' principal ----

type grafanaPrincipal struct {
	id, kind  string
	purposes  []string
	args      []string // the command run, with this test's token file
	tokenFile string
	token     string
	flags     bool // this build has --token-file and --exist-ok
}

var shqToken = regexp.MustCompile(`shq_[A-Za-z0-9_-]{8,}`)

// makeGrafanaPrincipal runs the exact command of docker-compose.yml's one-shot (its token file
// moved to dir) against this stack. When the compose file has no such one-shot, or this build
// lacks the flags, that is reported (MISSING FEATURE) and the principal the promise describes is
// made with 'principals add' as it is, so the rest of the attack still runs.
func (s *isoStack) makeGrafanaPrincipal(dir string) *grafanaPrincipal {
	t := s.t
	t.Helper()
	gp := &grafanaPrincipal{tokenFile: filepath.Join(dir, "grafana.token")}
	svc, args, ok := composeOneShot(t)
	if !ok {
		missing(t, "docker-compose.yml: a one-shot 'shukei principals add … --token-file … --exist-ok' for Grafana",
			"no service's command is 'principals add' with --token-file; the attack makes the principal the promise describes itself")
		args = []string{"principals", "add", "--id", "grafana", "--kind", "employee", "--purposes", strings.Join(dashboardsPurposes, ","), "--token-file", "x", "--exist-ok"}
	} else {
		t.Logf("docker-compose.yml service %q: shukei %s", svc, strings.Join(args, " "))
	}
	gp.id, _ = flagValue(args, "--id")
	gp.kind, _ = flagValue(args, "--kind")
	if gp.kind == "" {
		gp.kind = "employee" // 'principals add --help': the default kind
	}
	ps, _ := flagValue(args, "--purposes")
	for _, p := range strings.Split(ps, ",") {
		if p = strings.TrimSpace(p); p != "" {
			gp.purposes = append(gp.purposes, p)
		}
	}
	got := append([]string(nil), gp.purposes...)
	sort.Strings(got)
	want := append([]string(nil), dashboardsPurposes...)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("promise 10: the dashboards' principal's grant (docker-compose.yml) names %v, not exactly %v", gp.purposes, dashboardsPurposes)
	}
	gp.args = withFlag(args, "--token-file", gp.tokenFile)
	help, _ := s.tryCLI("principals", "add", "--help")
	gp.flags = strings.Contains(help, "--token-file") && strings.Contains(help, "--exist-ok")
	if !gp.flags {
		missing(t, "'shukei principals add --token-file … --exist-ok'", "'principals add --help' lists neither or only one of them; the principal is made without them (token printed)")
		plain := withoutFlag(withoutFlag(gp.args, "--token-file", true), "--exist-ok", false)
		out := s.cli(plain...)
		m := principalToken.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("harness: 'shukei %s' printed no token:\n%s", strings.Join(plain, " "), out)
		}
		gp.token = m[1]
		return gp
	}
	out := s.cli(gp.args...)
	if shqToken.MatchString(out) {
		t.Errorf("promise 10: 'shukei %s' printed a token although --token-file was given:\n%s", strings.Join(gp.args, " "), shqToken.ReplaceAllString(out, "shq_<redacted>"))
	}
	b, err := os.ReadFile(gp.tokenFile)
	if err != nil {
		t.Fatalf("'shukei %s' wrote no token file: %v\n%s", strings.Join(gp.args, " "), err, out)
	}
	m := principalToken.FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("'shukei %s' wrote a token file without a shq_ token (%d bytes)", strings.Join(gp.args, " "), len(b))
	}
	gp.token = m[1]
	if fi, err := os.Stat(gp.tokenFile); err == nil && fi.Mode().Perm()&0o007 != 0 {
		t.Logf("note: the token file is mode %v (readable by others)", fi.Mode().Perm())
	}
	return gp
}

// whoamiPurposes is the purposes GET /v1/whoami lists for a token.
func (s *isoStack) whoamiPurposes(token string) ([]string, reply) {
	r := s.apiDo("GET", "/v1/whoami", token, nil)
	var out []string
	if r.js != nil {
		for k, v := range r.js {
			if !strings.Contains(strings.ToLower(k), "purpose") {
				continue
			}
			if xs, ok := v.([]any); ok {
				for _, x := range xs {
					switch y := x.(type) {
					case string:
						out = append(out, y)
					case map[string]any:
						if n, ok := y["name"].(string); ok {
							out = append(out, n)
						} else if n, ok := y["purpose"].(string); ok {
							out = append(out, n)
						}
					}
				}
			}
		}
	}
	sort.Strings(out)
	return out, r
}

// ---- audit of answers ----

// auditBySeqs reads the audit records of many answers at once.
func (s *isoStack) auditBySeqs(seqs []uint64) map[uint64]auditRec {
	out := map[uint64]auditRec{}
	for len(seqs) > 0 {
		n := min(len(seqs), 500)
		var parts []string
		for _, q := range seqs[:n] {
			parts = append(parts, strconv.FormatUint(q, 10))
		}
		for _, a := range s.auditQuery("seq IN (" + strings.Join(parts, ",") + ")") {
			out[a.seq] = a
		}
		seqs = seqs[n:]
	}
	return out
}

// checkAllowedAudited checks that every 200 answer is in the audit log as allowed, naming the
// principal, and (when the record names them) the report and purpose asked.
func (s *isoStack) checkAllowedAudited(rs []reply, actor string) []string {
	var seqs []uint64
	for _, r := range rs {
		if seq, ok := r.auditSeq(); ok && r.code == 200 {
			seqs = append(seqs, seq)
		}
	}
	recs := s.auditBySeqs(seqs)
	var bad []string
	for _, r := range rs {
		if r.err != nil || r.code != 200 {
			continue
		}
		seq, ok := r.auditSeq()
		if !ok {
			if r.js == nil {
				continue // CSV: counted below
			}
			bad = append(bad, fmt.Sprintf("%s: answered 200 without an audit_seq", r.path))
			continue
		}
		a, found := recs[seq]
		switch {
		case !found:
			bad = append(bad, fmt.Sprintf("%s: answered 200 with audit_seq %d, which is not in the audit log", r.path, seq))
		case !allowedDecision(a.decision):
			bad = append(bad, fmt.Sprintf("%s: answered 200 but its audit record %d says decision %q", r.path, seq, a.decision))
		case a.principal != actor:
			bad = append(bad, fmt.Sprintf("%s: its audit record %d names principal %q, not %q", r.path, seq, a.principal, actor))
		default:
			u, _ := url.Parse(r.path)
			if u != nil {
				rep := strings.TrimPrefix(u.Path, "/v1/reports/")
				if p := u.Query().Get("purpose"); p != "" && a.purpose != "" && a.purpose != p {
					bad = append(bad, fmt.Sprintf("%s: its audit record %d names purpose %q", r.path, seq, a.purpose))
				}
				if rep != u.Path && a.report != "" && a.report != rep {
					bad = append(bad, fmt.Sprintf("%s: its audit record %d names report %q", r.path, seq, a.report))
				}
			}
		}
	}
	// Answers that carry no audit_seq (CSV has no place for it): the audit log must hold at least
	// as many allowed records of the principal for each purpose as there were 200 answers.
	need := map[string]int{}
	csv := map[string][]string{}
	for _, r := range rs {
		if r.err != nil || r.code != 200 {
			continue
		}
		u, err := url.Parse(r.path)
		if err != nil {
			continue
		}
		pu := u.Query().Get("purpose")
		need[pu]++
		if _, ok := r.auditSeq(); !ok && r.js == nil {
			csv[pu] = append(csv[pu], r.path)
		}
	}
	for pu, paths := range csv {
		var have int
		for _, a := range s.auditQuery("principal_id = ? AND purpose = ?", actor, pu) {
			if allowedDecision(a.decision) {
				have++
			}
		}
		if have < need[pu] {
			bad = append(bad, fmt.Sprintf("purpose %s: %d answers of 200 to %s (%d of them CSV, without an audit_seq, e.g. %s) but only %d allowed audit records of it", pu, need[pu], actor, len(paths), paths[0], have))
		}
	}
	return bad
}

// ---- scanning answers ----

// needles are what no dashboard may ever show: every planted tenant id, and the target's own
// feature and application (used by no k tenants in any week).
func (p *isoPop) needles() []string {
	out := []string{p.targetFeature, p.targetApp}
	for _, ten := range append(p.tenants(), p.S6) {
		out = append(out, ten.id)
	}
	return out
}

// scanBody lists the needles found in an answer and any tenant column or per-tenant figure.
func scanBody(p *isoPop, what string, r reply) []string {
	var bad []string
	body := string(r.body)
	for _, nd := range p.needles() {
		if strings.Contains(body, nd) {
			kind := "a planted tenant id"
			switch {
			case nd == p.targetFeature || nd == p.targetApp:
				kind = "the target's own feature/application (used by fewer than k tenants)"
			case strings.HasPrefix(nd, "iso-target-"):
				kind = "the target tenant's id"
			}
			bad = append(bad, fmt.Sprintf("%s: the answer holds %s (%s)", what, kind, nd))
		}
	}
	if rows, ok := r.js["rows"].([]any); ok {
		for _, x := range rows {
			m, _ := x.(map[string]any)
			for k := range m {
				lk := strings.ToLower(k)
				if lk == "tenant" || lk == "tenant_id" || strings.HasSuffix(lk, "tenant_id") || lk == "tenant_hash" {
					bad = append(bad, fmt.Sprintf("%s: rows carry a tenant column %q", what, k))
					return bad
				}
			}
		}
	}
	return bad
}

// ---- the weekly reports (active_tenants, status_activity) ----

// weeklyRequests are requests of the two weekly aggregate reports over overlapping periods,
// editions and statuses (the OpenAPI document: week, weeks, edition, status, by_edition).
func weeklyRequests(p *isoPop) []isoReq {
	var out []isoReq
	day := func(t time.Time) string { return t.Format("2006-01-02") }
	type wk struct {
		param  string
		monday time.Time
	}
	editionSets := [][]string{nil, {"standard"}, {"enterprise"}, {"professional"}, {"standard", "enterprise"}, {"professional", "enterprise"}, {"standard", "professional", "enterprise"}}
	for _, w := range []wk{{"last_week", p.weeks[3]}, {day(p.weeks[1]), p.weeks[1]}, {day(p.weeks[2].AddDate(0, 0, 2)), p.weeks[2]}} {
		for _, n := range []int{1, 2, 4, 8} {
			for _, eds := range editionSets {
				for _, be := range []bool{false, true} {
					q := url.Values{"purpose": {"service_improvement"}, "week": {w.param}, "weeks": {strconv.Itoa(n)}, "by_edition": {strconv.FormatBool(be)}}
					if eds != nil {
						q.Set("edition", strings.Join(eds, ","))
					}
					out = append(out, isoReq{report: "active_tenants", purpose: "service_improvement", week: w.monday, weeks: n, editions: eds, byEdition: be,
						path: "/v1/reports/active_tenants?" + q.Encode()})
				}
			}
		}
	}
	ccEditions := [][]string{nil, {"standard"}, {"enterprise"}, {"standard", "enterprise"}, {"professional", "enterprise"}}
	ccStatuses := [][]string{nil, {"contracted"}, {"beta"}, {"contracted", "beta"}, {"trial", "beta"}}
	for _, w := range []wk{{"last_week", p.weeks[3]}, {day(p.weeks[1]), p.weeks[1]}} {
		for _, n := range []int{1, 4} {
			for _, eds := range ccEditions {
				for _, sts := range ccStatuses {
					for _, be := range []bool{false, true} {
						q := url.Values{"purpose": {"marketing"}, "week": {w.param}, "weeks": {strconv.Itoa(n)}, "by_edition": {strconv.FormatBool(be)}}
						if eds != nil {
							q.Set("edition", strings.Join(eds, ","))
						}
						if sts != nil {
							q.Set("status", strings.Join(sts, ","))
						}
						out = append(out, isoReq{report: "status_activity", purpose: "marketing", week: w.monday, weeks: n, editions: eds, statuses: sts, byEdition: be,
							path: "/v1/reports/status_activity?" + q.Encode()})
					}
				}
			}
		}
	}
	for _, rep := range []struct{ name, purpose string }{{"active_tenants", "service_improvement"}, {"status_activity", "marketing"}} {
		for _, n := range []string{"1", "3"} {
			q := url.Values{"purpose": {rep.purpose}, "week": {"today"}, "weeks": {n}}
			out = append(out, isoReq{report: rep.name, purpose: rep.purpose, week: p.current, path: "/v1/reports/" + rep.name + "?" + q.Encode(), unsealed: true})
		}
		q := url.Values{"purpose": {rep.purpose}, "week": {day(p.current)}}
		out = append(out, isoReq{report: rep.name, purpose: rep.purpose, week: p.current, path: "/v1/reports/" + rep.name + "?" + q.Encode(), unsealed: true})
	}
	return out
}

// mondayOf is the Monday (UTC) of the ISO week of a date written YYYY-MM-DD (or longer).
func mondayOf(s string) (time.Time, bool) {
	if len(s) < 10 {
		return time.Time{}, false
	}
	d, err := time.Parse("2006-01-02", s[:10])
	if err != nil {
		return time.Time{}, false
	}
	for d.Weekday() != time.Monday {
		d = d.AddDate(0, 0, -1)
	}
	return d, true
}

// checkWeekly checks the answers of active_tenants and status_activity against the plan: each
// row is one week of the period asked; its tenants are a sum of whole atoms (edition × week, or
// status × edition × week) of ≥ k tenants of that week; a row with no such atom behind it
// carries no figure; no row outside the filters; an unsealed week is refused and audited.
func checkWeekly(s *isoStack, sg *segs, reqs []isoReq, ans []answer) []string {
	var bad []string
	k := sg.k
	for i, rq := range reqs {
		a := ans[i]
		if rq.unsealed {
			if a.code == 200 {
				bad = append(bad, fmt.Sprintf("a week not sealed yet was answered (the interface: 4xx): %s → %d rows", rq.path, len(a.rows)))
			} else if s != nil {
				bad = append(bad, s.checkRefused(a.r, "", "unsealed week "+rq.path)...)
			}
			continue
		}
		if a.code != 200 {
			bad = append(bad, fmt.Sprintf("%s: %s (a sealed week must be answered)", rq.path, a.r))
			continue
		}
		if a.k != 0 && a.k < k {
			bad = append(bad, fmt.Sprintf("%s: answered with k=%d, below the policy's %d", rq.path, a.k, k))
		}
		eds := rq.editions
		if eds == nil {
			eds = sg.eds
		}
		sts := rq.statuses
		if sts == nil {
			sts = []string{"trial", "beta", "contracted"}
		}
		w := sg.weekIndex(rq.week)
		first := rq.week.AddDate(0, 0, -7*(max(rq.weeks, 1)-1))
		for _, row := range a.rows {
			rowText, _ := json.Marshal(row)
			ws, _ := row["week"].(string)
			monday, ok := mondayOf(ws)
			if !ok {
				bad = append(bad, fmt.Sprintf("%s: a row without a week: %s", rq.path, rowText))
				continue
			}
			if monday.Before(first) || monday.After(rq.week) {
				bad = append(bad, fmt.Sprintf("%s: a row of week %s, outside the period asked (%s … %s): %s", rq.path, ws, first.Format("2006-01-02"), rq.week.Format("2006-01-02"), rowText))
			}
			wi := sg.weekIndex(monday)
			_ = w
			e, _ := row["edition"].(string)
			var edsOf []string
			if e == "all" || e == "" {
				edsOf = eds
			} else {
				if !contains(eds, e) {
					bad = append(bad, fmt.Sprintf("%s: a row of edition %q, outside the filter: %s", rq.path, e, rowText))
				}
				edsOf = []string{e}
			}
			stsOf := sts
			if rq.report == "status_activity" {
				st, _ := row["status"].(string)
				if !contains(sts, st) {
					bad = append(bad, fmt.Sprintf("%s: a row of status %q, outside the statuses asked: %s", rq.path, st, rowText))
				}
				stsOf = []string{st}
			}
			var cand []int
			for _, ed := range edsOf {
				if rq.report == "status_activity" {
					if n := len(sg.active[wi][stsOf[0]][ed]); n >= k {
						cand = append(cand, n)
					}
					continue
				}
				// active_tenants: the atom is edition × week, over every status.
				all := map[string]bool{}
				for _, st := range []string{"trial", "beta", "contracted"} {
					for ten := range sg.active[wi][st][ed] {
						all[ten] = true
					}
				}
				if len(all) >= k {
					cand = append(cand, len(all))
				}
			}
			if len(cand) == 0 {
				for _, col := range []string{"tenants", "users", "events"} {
					if v, ok := numOf(row[col]); ok && v != 0 {
						bad = append(bad, fmt.Sprintf("%s: a row with %s=%v for week %s and a segment with no atom of ≥ %d tenants (edition %q): %s", rq.path, col, v, ws, k, e, rowText))
						break
					}
				}
				continue
			}
			if v, ok := numOf(row["tenants"]); ok && !plausible(v, cand, 1) {
				bad = append(bad, fmt.Sprintf("%s: tenants = %v in week %s is no sum of atoms of ≥ %d tenants (the atoms it could use hold %v): %s", rq.path, v, ws, k, cand, rowText))
			}
		}
	}
	return bad
}

// TestIsolationWeeklyChecksFindWhatTheyClaim is the self-check of checkWeekly: a week counting
// the lone target, a row of the 4-tenant professional atom of w1, a week outside the period and
// a figure for w0 (the target alone) are flagged; whole atoms are not.
func TestIsolationWeeklyChecksFindWhatTheyClaim(t *testing.T) {
	p := newIsoPop()
	sg := newSegs(p, p.plan(true))
	day := func(i int) string { return p.weeks[i].Format("2006-01-02") }
	at := isoReq{report: "active_tenants", purpose: "service_improvement", week: p.weeks[3], weeks: 4, path: "at"}
	sa := isoReq{report: "status_activity", purpose: "marketing", week: p.weeks[3], weeks: 4, path: "sa"}
	row := func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name string
		req  isoReq
		row  map[string]any
		flag bool
	}{
		{"standard and professional in w3", at, row("week", day(3), "edition", "all", "tenants", 10.0, "users", 10.0, "events", 70.0), false},
		{"only standard in w1", at, row("week", day(1), "edition", "all", "tenants", 5.0, "users", 5.0, "events", 30.0), false},
		{"the target counted in w3", at, row("week", day(3), "edition", "all", "tenants", 11.0), true},
		{"the 4-tenant atom counted in w1", at, row("week", day(1), "edition", "all", "tenants", 9.0), true},
		{"the professional edition in w1", at, row("week", day(1), "edition", "professional", "tenants", nil, "users", 4.0), true},
		{"w0: the target alone", at, row("week", day(0), "edition", "all", "tenants", nil, "events", 3.0), true},
		{"w0 without figures", at, row("week", day(0), "edition", "all", "tenants", nil, "users", nil, "events", nil), false},
		{"beta in w2 (the target alone)", sa, row("week", day(2), "status", "beta", "edition", "all", "tenants", 1.0), true},
		{"trial in w2", sa, row("week", day(2), "status", "trial", "edition", "all", "tenants", 5.0), false},
		{"a week after the period", sa, row("week", p.current.Format("2006-01-02"), "status", "trial", "edition", "all", "tenants", nil), true},
	}
	for _, c := range cases {
		got := checkWeekly(nil, sg, []isoReq{c.req}, []answer{{code: 200, rows: []map[string]any{c.row}}})
		if (len(got) > 0) != c.flag {
			t.Errorf("%s: flagged %v, want %v (%v)", c.name, len(got) > 0, c.flag, got)
		}
	}
	// The scan of answers finds a tenant id, the target's own feature and a tenant column.
	mk := func(body string) reply {
		r := reply{path: "x", code: 200, body: []byte(body)}
		_ = json.Unmarshal(r.body, &r.js)
		return r
	}
	for _, c := range []struct {
		body string
		flag bool
	}{
		{`{"rows":[{"feature":"app.record.create","tenants":10}]}`, false},
		{`{"rows":[{"feature":"` + p.targetFeature + `","tenants":null}]}`, true},
		{`{"rows":[{"note":"` + p.T.id + `"}]}`, true},
		{`{"rows":[{"tenant_id":"x"}]}`, true},
		{"week,tenants\n2026-01-05," + p.S[2].id + "\n", true},
	} {
		if got := scanBody(p, "x", mk(c.body)); (len(got) > 0) != c.flag {
			t.Errorf("scanBody(%s): flagged %v, want %v", c.body, len(got) > 0, c.flag)
		}
	}
	// Grafana's time variables.
	rg := isoRange{"r", time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC), time.Date(2026, 3, 9, 23, 59, 59, 0, time.UTC)}
	for in, want := range map[string]string{
		"${__from:date:YYYY-MM-DD}": "2026-03-02", "${__to:date:YYYY-MM-DD}": "2026-03-09",
		"$__from": strconv.FormatInt(rg.from.UnixMilli(), 10), "${__to:date:seconds}": strconv.FormatInt(rg.to.Unix(), 10),
		"${db}": "shukei",
	} {
		if got, err := grafanaExpand(in, rg, map[string]string{"db": "shukei"}); err != nil || got != want {
			t.Errorf("grafanaExpand(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := grafanaExpand("${__unknown}", rg, nil); err == nil {
		t.Errorf("grafanaExpand: an unknown variable is not an error")
	}
}

// ---- the dashboards' panels ----

type dsInfo struct {
	name, uid, typ, url string
	isDefault           bool
	raw                 map[string]any
}

func loadDatasources(t *testing.T) ([]dsInfo, []string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(servicetest.ModuleRoot(t), "dashboards", "grafana", "provisioning", "datasources", "*.y*ml"))
	var out []dsInfo
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Datasources []map[string]any `yaml:"datasources"`
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("harness: %s: %v", f, err)
		}
		for _, d := range doc.Datasources {
			di := dsInfo{raw: d}
			di.name, _ = d["name"].(string)
			di.uid, _ = d["uid"].(string)
			di.typ, _ = d["type"].(string)
			di.url, _ = d["url"].(string)
			di.isDefault, _ = d["isDefault"].(bool)
			if di.url == "" {
				if jd, ok := d["jsonData"].(map[string]any); ok {
					di.url, _ = jd["url"].(string)
				}
			}
			out = append(out, di)
		}
	}
	return out, files
}

// panelTarget is one query of one panel.
type panelTarget struct {
	file, title, refID string
	ds                 dsInfo
	target             map[string]any
}

// dashboardTemplating is the template variables of a dashboard: name → the values a viewer can
// pick (current first).
func dashboardTemplating(d map[string]any) map[string][]string {
	out := map[string][]string{}
	tm, _ := d["templating"].(map[string]any)
	list, _ := tm["list"].([]any)
	for _, x := range list {
		v, _ := x.(map[string]any)
		name, _ := v["name"].(string)
		var vals []string
		if cur, ok := v["current"].(map[string]any); ok {
			switch cv := cur["value"].(type) {
			case string:
				vals = append(vals, cv)
			case []any:
				var parts []string
				for _, p := range cv {
					parts = append(parts, fmt.Sprint(p))
				}
				vals = append(vals, strings.Join(parts, ","))
			}
		}
		if opts, ok := v["options"].([]any); ok {
			for _, o := range opts {
				om, _ := o.(map[string]any)
				if s, ok := om["value"].(string); ok && !contains(vals, s) {
					vals = append(vals, s)
				}
			}
		}
		if q, ok := v["query"].(string); ok && len(vals) == 0 {
			vals = append(vals, strings.Split(q, ",")...)
		}
		out[name] = vals
	}
	return out
}

// loadPanels lists every query of every panel of dashboards/grafana/*.json with its data source.
func loadPanels(t *testing.T) ([]panelTarget, map[string]map[string][]string) {
	t.Helper()
	dss, _ := loadDatasources(t)
	resolve := func(v any) dsInfo {
		var uid, typ string
		switch x := v.(type) {
		case map[string]any:
			uid, _ = x["uid"].(string)
			typ, _ = x["type"].(string)
		case string:
			uid = x
		case nil:
			for _, d := range dss {
				if d.isDefault {
					return d
				}
			}
			return dsInfo{typ: "prometheus"} // Grafana's default when none is marked
		}
		for _, d := range dss {
			if (uid != "" && (d.uid == uid || d.name == uid)) || (uid == "" && typ != "" && d.typ == typ) {
				return d
			}
		}
		return dsInfo{uid: uid, typ: typ}
	}
	files, _ := filepath.Glob(filepath.Join(servicetest.ModuleRoot(t), "dashboards", "grafana", "*.json"))
	if len(files) == 0 {
		t.Fatalf("harness: no dashboards in dashboards/grafana")
	}
	var out []panelTarget
	vars := map[string]map[string][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d map[string]any
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("harness: %s: %v", f, err)
		}
		base := filepath.Base(f)
		vars[base] = dashboardTemplating(d)
		var walk func(ps []any)
		walk = func(ps []any) {
			for _, x := range ps {
				p, _ := x.(map[string]any)
				if sub, ok := p["panels"].([]any); ok {
					walk(sub)
				}
				title := fmt.Sprint(p["title"])
				ts, _ := p["targets"].([]any)
				for _, tx := range ts {
					tg, _ := tx.(map[string]any)
					dsv, ok := tg["datasource"]
					if !ok || dsv == nil {
						dsv = p["datasource"]
					}
					ref, _ := tg["refId"].(string)
					out = append(out, panelTarget{file: base, title: title, refID: ref, ds: resolve(dsv), target: tg})
				}
			}
		}
		ps, _ := d["panels"].([]any)
		walk(ps)
	}
	return out, vars
}

func isClickHouseType(typ string) bool {
	return strings.Contains(strings.ToLower(typ), "clickhouse")
}

func isPrometheusType(typ string) bool {
	return strings.EqualFold(typ, "prometheus")
}

var grafanaVar = regexp.MustCompile(`\$\{([^}]+)\}|\[\[([A-Za-z0-9_]+)\]\]|\$(__[A-Za-z_]+|[A-Za-z_][A-Za-z0-9_]*)`)

// momentLayout turns a Grafana/moment date format (YYYY-MM-DD, …) into a Go layout.
var momentLayout = strings.NewReplacer("YYYY", "2006", "MM", "01", "DD", "02", "HH", "15", "mm", "04", "ss", "05", "SSS", "000")

// grafanaExpand substitutes Grafana's built-in variables for the time range rg, and the
// dashboard's own variables with vals (one value each). An unknown variable is an error.
func grafanaExpand(s string, rg isoRange, vals map[string]string) (string, error) {
	var bad error
	out := grafanaVar.ReplaceAllStringFunc(s, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		expr := sub[1] + sub[2] + sub[3]
		name, format, _ := strings.Cut(expr, ":")
		var tm time.Time
		switch name {
		case "__from":
			tm = rg.from
		case "__to":
			tm = rg.to
		case "__range_s":
			return strconv.FormatInt(int64(rg.to.Sub(rg.from).Seconds()), 10)
		case "__range_ms":
			return strconv.FormatInt(rg.to.Sub(rg.from).Milliseconds(), 10)
		case "__range":
			return fmt.Sprintf("%ds", int64(rg.to.Sub(rg.from).Seconds()))
		case "__interval":
			return "1h"
		case "__interval_ms":
			return "3600000"
		default:
			if v, ok := vals[name]; ok {
				return v
			}
			bad = fmt.Errorf("harness: a Grafana variable this test does not substitute: %q", m)
			return m
		}
		tm = tm.UTC()
		switch {
		case format == "":
			return strconv.FormatInt(tm.UnixMilli(), 10)
		case format == "date" || format == "date:iso":
			return tm.Format("2006-01-02T15:04:05.000Z")
		case format == "date:seconds":
			return strconv.FormatInt(tm.Unix(), 10)
		case strings.HasPrefix(format, "date:"):
			return tm.Format(momentLayout.Replace(strings.TrimPrefix(format, "date:")))
		}
		bad = fmt.Errorf("harness: a Grafana time format this test does not know: %q", m)
		return m
	})
	return out, bad
}

// panelRequest builds the request a panel's query sends (an Infinity-style target: url,
// url_options.method, url_options.params, url_options.data), as a path and query on the query
// service, for one time range and one choice of the dashboard's variables. Its second result
// says why it is not a request (inline data); an error is a harness error.
func panelRequest(pt panelTarget, rg isoRange, vals map[string]string) (method, path string, body []byte, skip string, err error) {
	tg := pt.target
	if src, ok := tg["source"].(string); ok && src != "" && src != "url" {
		return "", "", nil, "source " + src, nil
	}
	raw, _ := tg["url"].(string)
	if raw == "" {
		return "", "", nil, "", fmt.Errorf("harness: %s %q (%s): a query of data source type %q with no url: %v", pt.file, pt.title, pt.refID, pt.ds.typ, keysOf(tg))
	}
	if raw, err = grafanaExpand(raw, rg, vals); err != nil {
		return "", "", nil, "", err
	}
	full := raw
	if !strings.Contains(raw, "://") {
		full = strings.TrimRight(pt.ds.url, "/") + "/" + strings.TrimLeft(raw, "/")
		if pt.ds.url == "" {
			full = "http://query" + "/" + strings.TrimLeft(raw, "/")
		}
	}
	u, perr := url.Parse(full)
	if perr != nil {
		return "", "", nil, "", fmt.Errorf("harness: %s %q: url %q: %v", pt.file, pt.title, full, perr)
	}
	q := u.Query()
	method = "GET"
	if uo, ok := tg["url_options"].(map[string]any); ok {
		if m, ok := uo["method"].(string); ok && m != "" {
			method = strings.ToUpper(m)
		}
		if ps, ok := uo["params"].([]any); ok {
			for _, x := range ps {
				pm, _ := x.(map[string]any)
				k, _ := pm["key"].(string)
				v := fmt.Sprint(pm["value"])
				if k == "" {
					continue
				}
				if v, err = grafanaExpand(v, rg, vals); err != nil {
					return "", "", nil, "", err
				}
				q.Add(k, v)
			}
		}
		if d, ok := uo["data"].(string); ok && d != "" && method != "GET" {
			if d, err = grafanaExpand(d, rg, vals); err != nil {
				return "", "", nil, "", err
			}
			body = []byte(d)
		}
	}
	path = u.EscapedPath()
	if enc := q.Encode(); enc != "" {
		path += "?" + enc
	}
	return method, path, body, "", nil
}

func keysOf(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// panelRanges are the time ranges a viewer might pick: the overlapping ranges over the planted
// weeks, and Grafana's relative ones.
func panelRanges(p *isoPop) []isoRange {
	now := time.Now().UTC()
	out := isoRanges(p)
	for _, d := range []int{1, 2, 30, 90} {
		out = append(out, isoRange{fmt.Sprintf("now-%dd", d), now.AddDate(0, 0, -d), now})
	}
	out = append(out, isoRange{"w1-to-now-minus-1d", p.weeks[1], now.AddDate(0, 0, -1)})
	return out
}

// variableChoices are the combinations of the dashboard's variables a viewer can pick (each
// variable through its values, the others at their first).
func variableChoices(vars map[string][]string) []map[string]string {
	base := map[string]string{}
	for k, vs := range vars {
		if len(vs) > 0 {
			base[k] = vs[0]
		}
	}
	out := []map[string]string{base}
	for k, vs := range vars {
		for _, v := range vs[min(1, len(vs)):] {
			c := map[string]string{}
			for kk, vv := range base {
				c[kk] = vv
			}
			c[k] = v
			out = append(out, c)
		}
	}
	return out
}

// isoReqOf reads a report request (path and query) as the isoReq the checks of promise 9 take,
// with the OpenAPI document's defaults.
func isoReqOf(p *isoPop, path string) (isoReq, bool) {
	u, err := url.Parse(path)
	if err != nil || !strings.HasPrefix(u.Path, "/v1/reports/") {
		return isoReq{}, false
	}
	q := u.Query()
	rq := isoReq{report: strings.TrimPrefix(u.Path, "/v1/reports/"), purpose: q.Get("purpose"), path: path, category: q.Get("category")}
	if q.Get("format") != "" && q.Get("format") != "json" {
		return isoReq{}, false
	}
	defaults := map[string]struct {
		weeks int
		byEd  bool
	}{"feature_ranking": {1, true}, "contract_comparison": {4, false}, "active_tenants": {8, false}, "status_activity": {8, false}}
	d, ok := defaults[rq.report]
	if !ok {
		return isoReq{}, false
	}
	if rq.category == "" {
		rq.category = "feature_use"
	}
	rq.weeks, rq.byEdition = d.weeks, d.byEd
	if n, err := strconv.Atoi(q.Get("weeks")); err == nil && rq.report != "feature_ranking" {
		rq.weeks = n
	}
	if b, err := strconv.ParseBool(q.Get("by_edition")); err == nil {
		rq.byEdition = b
	}
	if e := q.Get("edition"); e != "" {
		rq.editions = strings.Split(e, ",")
	}
	if st := q.Get("status"); st != "" {
		rq.statuses = strings.Split(st, ",")
	}
	switch wk := q.Get("week"); wk {
	case "", "last_week":
		rq.week = p.current.AddDate(0, 0, -7)
	case "today":
		rq.week = p.current
	default:
		m, ok := mondayOf(wk)
		if !ok {
			return isoReq{}, false
		}
		rq.week = m
	}
	rq.unsealed = !rq.week.Before(p.current)
	return rq, true
}

// checkReportAnswer applies the checks of promise 9 (or of the weekly reports) to one answer
// of a report request, when the test knows the report.
func checkReportAnswer(s *isoStack, sg *segs, p *isoPop, r reply) []string {
	rq, ok := isoReqOf(p, r.path)
	if !ok {
		return nil
	}
	a := canonical(r)
	switch rq.report {
	case "feature_ranking", "contract_comparison":
		return checkAnswers(s, sg, []isoReq{rq}, []answer{a})
	default:
		return checkWeekly(s, sg, []isoReq{rq}, []answer{a})
	}
}

// ---- the attack on the worlds ----

// dashboardsPrincipalAttack is promise 10 on the two worlds of TestLoneTenantLeavesNoTrace:
// as the dashboards' principal (made by docker-compose.yml's one-shot), every report of every
// purpose, the break-glass endpoints, the weekly reports over overlapping periods and filters,
// a third of promise 9's requests, and every non-Prometheus panel of the dashboards over many
// time ranges. Every 200 must be an aggregate report of the three purposes, audited as allowed
// with the principal named, hold no planted tenant id or target-only item and no figure from
// fewer than k tenants, and be the same in both worlds; everything else must be refused (403
// for a report outside the grant) with the refusal audited.
func dashboardsPrincipalAttack(t *testing.T, a, b *isoWorld, isoReqs []isoReq) {
	began := time.Now()
	for _, w := range []*isoWorld{a, b} {
		got, r := w.s.whoamiPurposes(w.gp.token)
		want := append([]string(nil), dashboardsPurposes...)
		sort.Strings(want)
		if r.code != 200 {
			t.Errorf("world %s: GET /v1/whoami as the dashboards' principal %s: %s", w.name, w.gp.id, r)
		} else if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("promise 10 (world %s): whoami of the dashboards' principal %s lists the purposes %v, not exactly %v (%s)", w.name, w.gp.id, got, want, r)
		}
	}
	viewA, badA := dashboardsRequests(t, a, isoReqs)
	viewB, badB := dashboardsRequests(t, b, isoReqs)
	reportList(t, "promise 10 (world A): a request of the dashboards' principal reached a tenant-level report, a tenant id or a figure from fewer than k tenants, or was not audited", badA)
	reportList(t, "promise 10 (world B): a request of the dashboards' principal reached a tenant-level report, a tenant id or a figure from fewer than k tenants, or was not audited", badB)
	var keys []string
	for k := range viewA {
		keys = append(keys, k)
	}
	for k := range viewB {
		if _, ok := viewA[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var diffs []string
	for _, k := range keys {
		if viewA[k] != viewB[k] {
			diffs = append(diffs, fmt.Sprintf("%s\n      world A: %s\n      world B: %s", k, firstDiff(viewA[k], viewB[k]), firstDiff(viewB[k], viewA[k])))
		}
	}
	reportList(t, "promise 10: what the dashboards' principal (or a panel) reads depends on the lone tenant's usage (two worlds that differ only in it)", diffs)
	t.Logf("promise 10: %d answers compared between the worlds in %s", len(keys), time.Since(began).Round(time.Second))
}

// dashboardsRequests makes every request of the attack in one world and returns the answers
// by key (for the comparison of worlds) and the violations.
func dashboardsRequests(t *testing.T, w *isoWorld, isoReqs []isoReq) (map[string]string, []string) {
	t.Helper()
	s, gp, p := w.s, w.gp, w.pop
	view := map[string]string{}
	var bad []string
	var oks []reply
	tag := "world " + w.name + ": "

	// Every report of every purpose.
	reports := map[string]bool{}
	for r := range aggregateReports {
		reports[r] = true
	}
	for r := range tenantReports {
		reports[r] = true
	}
	cat := s.apiDo("GET", "/v1/reports", gp.token, nil)
	if cat.code != 200 {
		t.Logf("%sthe catalogue as the dashboards' principal: %s", tag, cat)
	} else {
		bad = append(bad, scanBody(p, tag+"GET /v1/reports", cat)...)
		var walk func(v any)
		walk = func(v any) {
			switch x := v.(type) {
			case map[string]any:
				if n, ok := x["name"].(string); ok {
					if _, ok := x["purpose"]; ok {
						reports[n] = true
					}
				}
				for _, y := range x {
					walk(y)
				}
			case []any:
				for _, y := range x {
					walk(y)
				}
			}
		}
		walk(cat.js)
	}
	if doc := s.apiDo("GET", "/openapi.json", "", nil); doc.js != nil {
		if paths, ok := doc.js["paths"].(map[string]any); ok {
			for k := range paths {
				if n, ok := strings.CutPrefix(k, "/v1/reports/"); ok && !strings.Contains(n, "{") {
					reports[n] = true
				}
			}
		}
	}
	var names []string
	for n := range reports {
		names = append(names, n)
	}
	sort.Strings(names)
	purposes := policyPurposes(t)
	ticket := "DASH-" + p.sfx
	s.cli("tenants", "ticket", "open", "--tenant", p.T.id, "--ticket", ticket, "--ttl", "2h", "--by", "attack")
	for _, rep := range names {
		own, isAgg := aggregateReports[rep]
		if !isAgg {
			own = tenantReports[rep]
		}
		for _, pu := range purposes {
			q := url.Values{"purpose": {pu}}
			if rep == "support_trace" {
				q.Set("tenant", p.T.id)
				q.Set("ticket", ticket)
			}
			path := "/v1/reports/" + rep + "?" + q.Encode()
			r := s.apiDo("GET", path, gp.token, nil)
			known := isAgg || tenantReports[rep] != ""
			mayAnswer := pu == own && contains(dashboardsPurposes, pu) && (isAgg || !known)
			key := fmt.Sprintf("matrix %s purpose=%s", rep, pu)
			view[key] = canonical(r).canon
			if r.code == 200 {
				oks = append(oks, r)
				bad = append(bad, scanBody(p, tag+path, r)...)
				bad = append(bad, checkReportAnswer(s, w.segs, p, r)...)
				if !mayAnswer {
					bad = append(bad, fmt.Sprintf("%sthe dashboards' principal got %s answered (HTTP 200, %d rows): only the aggregate reports of %v may answer it", tag, path, len(canonical(r).rows), dashboardsPurposes))
				}
				if !known {
					t.Logf("%sa report this test does not know answered the dashboards' principal: %s (scanned for tenant ids)", tag, path)
				}
				if mayAnswer {
					c := s.apiDo("GET", path+"&format=csv", gp.token, nil)
					if c.code == 200 {
						oks = append(oks, c)
						bad = append(bad, scanBody(p, tag+path+"&format=csv", c)...)
					}
				}
				continue
			}
			if mayAnswer && isAgg {
				bad = append(bad, fmt.Sprintf("%s%s: %s (an aggregate report of the dashboards' grant must answer; a broken dashboard, not a leak)", tag, path, r))
				continue
			}
			if r.code != 403 {
				bad = append(bad, fmt.Sprintf("%s%s: want 403 for a report outside the dashboards' grant, got %s", tag, path, r))
			}
			bad = append(bad, s.checkRefused(r, gp.id, tag+"the dashboards' principal on "+path)...)
		}
	}
	// Break-glass: the dashboards' principal can neither request nor use it.
	rb := s.apiDo("POST", "/v1/breakglass", gp.token, bgBody(p.T.id, bgJustification, "1h"))
	if rb.code == 200 || rb.code == 201 {
		bad = append(bad, fmt.Sprintf("%sthe dashboards' principal requested break-glass access to %s: %s", tag, p.T.id, rb))
	} else {
		bad = append(bad, s.checkRefused(rb, gp.id, tag+"the dashboards' principal on POST /v1/breakglass")...)
	}
	bgq := url.Values{"purpose": {"support"}, "tenant": {p.T.id}, "breakglass": {"bg-" + randHex(8)}}
	rt := s.apiDo("GET", "/v1/reports/support_trace?"+bgq.Encode(), gp.token, nil)
	if rt.code != 403 {
		bad = append(bad, fmt.Sprintf("%ssupport_trace with a break-glass id as the dashboards' principal: want 403, got %s", tag, rt))
	}
	if rt.code >= 400 && rt.code < 500 {
		bad = append(bad, s.checkRefused(rt, gp.id, tag+"the dashboards' principal on support_trace?breakglass")...)
	}
	// whoami and the catalogue show no tenant.
	for _, path := range []string{"/v1/whoami", "/v1/reports"} {
		r := s.apiDo("GET", path, gp.token, nil)
		bad = append(bad, scanBody(p, tag+path, r)...)
	}

	// The weekly aggregate reports over overlapping periods and filters.
	wreqs := weeklyRequests(p)
	tokens := map[string]string{"service_improvement": gp.token, "marketing": gp.token}
	wans := s.runAll(wreqs, tokens)
	bad = append(bad, checkWeekly(s, w.segs, wreqs, wans)...)
	withRows := 0
	for i, x := range wans {
		view["weekly "+wreqs[i].path] = x.canon
		if len(x.rows) > 0 {
			withRows++
		}
		if x.code == 200 {
			oks = append(oks, x.r)
			bad = append(bad, scanBody(p, tag+wreqs[i].path, x.r)...)
		}
	}
	t.Logf("%sweekly reports: %d of %d answers have rows", tag, withRows, len(wreqs))
	if withRows == 0 {
		t.Errorf("harness: %sno answer of active_tenants or status_activity has a row: nothing was attacked (first: %s)", tag, wans[0].r)
	}
	// A third of promise 9's requests (and every unsealed one), as the dashboards' principal.
	var sub []isoReq
	for i, rq := range isoReqs {
		if i%3 == 0 || rq.unsealed {
			sub = append(sub, rq)
		}
	}
	sans := s.runAll(sub, tokens)
	bad = append(bad, checkAnswers(s, w.segs, sub, sans)...)
	for i, x := range sans {
		view["p9 "+sub[i].path] = x.canon
		if x.code == 200 {
			oks = append(oks, x.r)
			bad = append(bad, scanBody(p, tag+sub[i].path, x.r)...)
		}
	}
	// The DP releases and the budget over overlapping ranges.
	day := func(t time.Time) string { return t.Format("2006-01-02") }
	for _, rg := range isoRanges(p) {
		q := url.Values{"purpose": {"external_aggregate"}, "from": {day(rg.from)}, "to": {day(rg.to)}}
		r := s.apiDo("GET", "/v1/reports/dp_releases?"+q.Encode(), gp.token, nil)
		view["dp "+rg.name] = canonical(r).canon
		if r.code == 200 {
			oks = append(oks, r)
			bad = append(bad, scanBody(p, tag+r.path, r)...)
		} else if r.code != 400 {
			bad = append(bad, fmt.Sprintf("%s%s: %s", tag, r.path, r))
		}
	}
	for _, m := range []string{"current", p.weeks[0].Format("2006-01"), p.current.Format("2006-01")} {
		r := s.apiDo("GET", "/v1/reports/dp_budget?purpose=external_aggregate&month="+m, gp.token, nil)
		if r.code == 200 {
			oks = append(oks, r)
			bad = append(bad, scanBody(p, tag+r.path, r)...)
		}
	}

	// Every panel whose data source is not Prometheus, over many time ranges.
	pv, pbad, pOK := panelAnswers(t, w)
	for k, v := range pv {
		view[k] = v
	}
	bad = append(bad, pbad...)
	oks = append(oks, pOK...)

	bad = append(bad, s.checkAllowedAudited(oks, gp.id)...)
	t.Logf("%s%d answers of 200 to the dashboards' principal, each checked in the audit log", tag, len(oks))
	return view, bad
}

// panelAnswers replays every non-Prometheus panel of the dashboards as the dashboards'
// principal, over the time ranges and variable choices, and checks each answer.
func panelAnswers(t *testing.T, w *isoWorld) (map[string]string, []string, []reply) {
	t.Helper()
	s, gp, p := w.s, w.gp, w.pop
	panels, vars := loadPanels(t)
	view := map[string]string{}
	var bad, broken []string
	var oks []reply
	replayed, rowsSeen := 0, 0
	for _, pt := range panels {
		if isPrometheusType(pt.ds.typ) {
			continue
		}
		name := fmt.Sprintf("%s %q %s", pt.file, pt.title, pt.refID)
		if isClickHouseType(pt.ds.typ) {
			bad = append(bad, fmt.Sprintf("world %s: panel %s reads ClickHouse (data source %q, type %q): Grafana must hold no ClickHouse credentials", w.name, name, pt.ds.uid, pt.ds.typ))
			continue
		}
		if sql, ok := pt.target["rawSql"].(string); ok && sql != "" {
			bad = append(bad, fmt.Sprintf("world %s: panel %s carries SQL (data source type %q)", w.name, name, pt.ds.typ))
			continue
		}
		answered := 0
		tried := 0
		for _, vals := range variableChoices(vars[pt.file]) {
			for _, rg := range panelRanges(p) {
				method, path, body, skip, err := panelRequest(pt, rg, vals)
				if err != nil {
					t.Errorf("world %s: %v", w.name, err)
					break
				}
				if skip != "" {
					t.Logf("panel %s: not a request (%s)", name, skip)
					break
				}
				tried++
				var r reply
				if body != nil {
					r = s.apiDo(method, path, gp.token, body)
				} else {
					r = s.apiDo(method, path, gp.token, nil)
				}
				key := fmt.Sprintf("panel %s range %s vars %v", name, rg.name, vals)
				view[key] = canonical(r).canon
				if r.code == 200 {
					answered++
					if len(canonical(r).rows) > 0 {
						rowsSeen++
					}
					oks = append(oks, r)
					bad = append(bad, scanBody(p, "world "+w.name+": panel "+name+" range "+rg.name+" ("+path+")", r)...)
					bad = append(bad, checkReportAnswer(s, w.segs, p, r)...)
					continue
				}
				// A refusal (an unsealed week at the end of the range) must be audited; the
				// dashboards' principal is named.
				if r.code >= 400 && r.code < 500 {
					bad = append(bad, s.checkRefused(r, gp.id, "world "+w.name+": panel "+name+" range "+rg.name+" ("+path+")")...)
				} else {
					bad = append(bad, fmt.Sprintf("world %s: panel %s range %s: %s", w.name, name, rg.name, r))
				}
			}
		}
		if tried > 0 {
			replayed++
			if answered == 0 {
				broken = append(broken, fmt.Sprintf("world %s: panel %s: no time range answered (first request: %s)", w.name, name, firstPanelPath(pt, p, vars)))
			}
		}
	}
	t.Logf("world %s: %d panel queries replayed; %d answers of 200 with rows", w.name, replayed, rowsSeen)
	if replayed == 0 {
		t.Errorf("world %s: no panel of dashboards/grafana/*.json reads the query service: nothing of the dashboards was replayed", w.name)
	}
	if len(broken) > 0 {
		t.Errorf("panels that never answer the dashboards' principal (a broken dashboard, not a leak):\n  %s", strings.Join(broken, "\n  "))
	}
	return view, bad, oks
}

func firstPanelPath(pt panelTarget, p *isoPop, vars map[string]map[string][]string) string {
	_, path, _, _, err := panelRequest(pt, panelRanges(p)[0], variableChoices(vars[pt.file])[0])
	if err != nil {
		return err.Error()
	}
	return path
}

// ---- the readers migrate declares; the dashboards' ClickHouse user ----

type xnode struct {
	XMLName xml.Name
	Content string  `xml:",chardata"`
	Nodes   []xnode `xml:",any"`
}

func (n xnode) child(name string) (xnode, bool) {
	for _, c := range n.Nodes {
		if c.XMLName.Local == name {
			return c, true
		}
	}
	return xnode{}, false
}

// readersFile parses <users_dir>/<db>-readers.xml and checks it declares exactly one read-only
// user per purpose database (<db>_<purpose>_reader, for every purpose of the policy), each
// allowed only its purpose's databases, and no other user.
func readersFile(s *isoStack) (users []string, bad []string) {
	allPurposes := policyPurposes(s.t)
	// Promise 10 as amended with promise 16: the users declared are exactly the roles' users
	// ('shukei users credentials <role>'), none of them the dashboards'; the purpose readers
	// among them are checked as before. The file is <db>-users.xml since 0016.
	f := filepath.Join(s.usersDir, s.db+"-users.xml")
	roleUsers := map[string]bool{}
	for _, role := range []string{"collector", "processor", "aggregator", "query", "retention"} {
		for _, line := range strings.Split(strings.TrimSpace(s.cli("users", "credentials", role)), "\n") {
			if name, _, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
				roleUsers[name] = true
			}
		}
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, []string{fmt.Sprintf("migrate with clickhouse.users_dir wrote no %s: %v", f, err)}
	}
	var root xnode
	if err := xml.Unmarshal(b, &root); err != nil {
		return nil, []string{fmt.Sprintf("%s does not parse: %v", f, err)}
	}
	profiles := map[string]xnode{}
	if ps, ok := root.child("profiles"); ok {
		for _, p := range ps.Nodes {
			profiles[p.XMLName.Local] = p
		}
	}
	for _, top := range root.Nodes {
		switch top.XMLName.Local {
		case "profiles", "users", "quotas":
		default:
			bad = append(bad, fmt.Sprintf("%s: an element <%s> besides profiles, users and quotas", f, top.XMLName.Local))
		}
	}
	want := map[string]string{}
	for _, p := range allPurposes {
		want[s.db+"_"+p+"_reader"] = p
	}
	us, _ := root.child("users")
	seen := map[string]int{}
	for _, u := range us.Nodes {
		name := u.XMLName.Local
		users = append(users, name)
		seen[name]++
		purpose, ok := want[name]
		if strings.Contains(name, "dashboard") || strings.Contains(name, "grafana") {
			bad = append(bad, fmt.Sprintf("promise 10: %s declares a dashboards' ClickHouse user: %s", filepath.Base(f), name))
			continue
		}
		if !ok {
			if !roleUsers[name] {
				bad = append(bad, fmt.Sprintf("promise 10: %s declares %s, no role's user ('shukei users credentials') nor purpose reader", filepath.Base(f), name))
			}
			continue
		}
		// Allowed databases: its purpose's own (and its gated atoms), nothing else.
		var dbs []string
		if ad, ok := u.child("allow_databases"); ok {
			for _, d := range ad.Nodes {
				dbs = append(dbs, strings.TrimSpace(d.Content))
			}
		}
		if len(dbs) == 0 {
			bad = append(bad, fmt.Sprintf("promise 10: the reader %s is allowed every database (no allow_databases)", name))
		}
		for _, d := range dbs {
			if d != s.db+"_"+purpose && d != s.db+"_"+purpose+"_gated" {
				bad = append(bad, fmt.Sprintf("promise 10: the reader %s is allowed the database %s, not its purpose's", name, d))
			}
		}
		// Read-only: its profile sets readonly.
		prof, _ := u.child("profile")
		pn := strings.TrimSpace(prof.Content)
		pr, ok := profiles[pn]
		ro, _ := pr.child("readonly")
		if !ok || (strings.TrimSpace(ro.Content) != "1" && strings.TrimSpace(ro.Content) != "2") {
			bad = append(bad, fmt.Sprintf("promise 10: the reader %s has profile %q, which is not read-only in %s", name, pn, filepath.Base(f)))
		}
		var pw string
		for _, tag := range []string{"password", "password_sha256_hex", "password_double_sha1_hex"} {
			if x, ok := u.child(tag); ok {
				pw += strings.TrimSpace(x.Content)
			}
		}
		if pw == "" {
			bad = append(bad, fmt.Sprintf("promise 10: the reader %s has no password", name))
		}
	}
	for name := range want {
		if seen[name] != 1 {
			bad = append(bad, fmt.Sprintf("%s declares the purpose reader %s %d times (want once)", filepath.Base(f), name, seen[name]))
		}
	}
	// No other file of users.d declares a user of this database.
	others, _ := filepath.Glob(filepath.Join(s.usersDir, "*"))
	for _, o := range others {
		if o == f {
			continue
		}
		if c, err := os.ReadFile(o); err == nil && bytes.Contains(c, []byte(s.db+"_")) {
			bad = append(bad, fmt.Sprintf("promise 10: %s, besides %s, names users of this database", o, filepath.Base(f)))
		}
	}
	return users, bad
}

// waitReady waits for the query service's /readyz (it waits for ClickHouse to load the
// purpose readers migrate wrote).
func (s *isoStack) waitReady() {
	base := "http://" + s.ops
	if s.ops == "" {
		base = "http://" + s.api
	}
	for end := time.Now().Add(40 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if r := s.do(base, "GET", "/readyz", "", nil); r.code == 200 {
			return
		}
	}
	s.t.Logf("the query service's /readyz did not answer 200 within 40 s")
}

// TestIsolationDashboardsHoldNoClickHouse attacks promise 10 on the real services: the readers
// file migrate writes declares only the purpose readers; nobody signs in as
// <db>_dashboards_reader (any password, nor the one the old clickhouse.dashboards_password_file
// setting would get); and docker-compose.yml's one-shot for the dashboards' principal, run a
// second time, changes nothing and prints no token, and fails for another grant.
func TestIsolationDashboardsHoldNoClickHouse(t *testing.T) {
	began := time.Now()
	s := newIsoStack(t)
	sfx := randHex(3)
	ten := "dash-ten-" + sfx
	s.cli("tenants", "add", "--tenant", ten, "--status", "contracted", "--edition", "standard", "--size-band", "s")
	gp := s.makeGrafanaPrincipal(t.TempDir())
	s.startQuery()
	s.waitReady()

	t.Run("readers_file", func(t *testing.T) {
		users, bad := readersFile(s)
		t.Logf("%s-readers.xml declares: %v", s.db, users)
		reportList(t, "promise 10: the read-only ClickHouse users migrate declares are not exactly the query service's purpose readers", bad)
	})

	t.Run("no_dashboards_user", func(t *testing.T) {
		var bad []string
		dbs := []string{s.db + "_service_improvement_gated", s.db + "_marketing_gated", s.db + "_external_aggregate", s.db + "_service_improvement", s.db + "_marketing", "system", "default", s.db}
		user := s.db + "_dashboards_reader"
		for _, pw := range []string{"", "shukei", "default", "dashboards", randHex(16)} {
			if db, err := s.chTry(user, pw, dbs...); err == nil {
				bad = append(bad, fmt.Sprintf("signed in to ClickHouse as %s with the password %q (database %s)", user, pw, db))
			}
		}
		// The old setting: if this build still takes it, migrate with it and try what it wrote —
		// as the dashboards' user and as every purpose reader.
		pwFile := filepath.Join(t.TempDir(), "clickhouse.password")
		kv := "SHUKEI_CLICKHOUSE_DASHBOARDS_PASSWORD_FILE=" + pwFile
		if ok, out := s.supportsEnv(kv); !ok {
			t.Logf("'shukei config' refuses clickhouse.dashboards_password_file (the old setting is gone): %s", lastLine(out))
		} else {
			t.Logf("'shukei config' still accepts clickhouse.dashboards_password_file: running migrate with it")
			out, err := s.tryCLIEnv([]string{kv}, "migrate")
			if err != nil {
				t.Logf("migrate with clickhouse.dashboards_password_file fails: %v: %s", err, tailText(out, 3))
			}
			if b, err := os.ReadFile(pwFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
				pw := strings.TrimSpace(string(b))
				bad = append(bad, fmt.Sprintf("migrate still writes a ClickHouse password to clickhouse.dashboards_password_file (%d bytes) for Grafana", len(pw)))
				time.Sleep(3 * time.Second) // the server reloads users.d
				for _, u := range append([]string{user}, func() []string {
					var rs []string
					for _, p := range policyPurposes(t) {
						rs = append(rs, s.db+"_"+p+"_reader")
					}
					return rs
				}()...) {
					for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
						if db, err := s.chTry(u, pw, append(dbs, s.db+"_follow_up", s.db+"_support", s.db+"_interview_selection")...); err == nil {
							bad = append(bad, fmt.Sprintf("the password migrate wrote to clickhouse.dashboards_password_file signs in to ClickHouse as %s (database %s)", u, db))
							break
						}
					}
				}
			} else {
				t.Logf("migrate wrote nothing to %s", pwFile)
			}
			users, rbad := readersFile(s)
			t.Logf("after migrate with the old setting, %s-readers.xml declares: %v", s.db, users)
			bad = append(bad, rbad...)
		}
		// Some other setting still naming the dashboards?
		if out, err := s.tryCLI("config"); err == nil {
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(strings.ToLower(l), "dashboard") {
					t.Logf("'shukei config' still has: %s", strings.TrimSpace(l))
				}
			}
		}
		reportList(t, "promise 10: a dashboards' ClickHouse user (or a ClickHouse credential for Grafana) exists", bad)
	})

	t.Run("exist_ok", func(t *testing.T) {
		if !gp.flags {
			missing(t, "'principals add --token-file --exist-ok'", "cannot attack a second run")
			return
		}
		var bad []string
		list := func() string {
			out, _ := s.tryCLI("principals", "list")
			var lines []string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, gp.id) {
					lines = append(lines, strings.TrimSpace(l))
				}
			}
			return strings.Join(lines, "\n")
		}
		before := list()
		tokBefore, _ := os.ReadFile(gp.tokenFile)
		want := append([]string(nil), dashboardsPurposes...)
		sort.Strings(want)
		unchanged := func(what string) {
			if got := list(); got != before {
				bad = append(bad, fmt.Sprintf("%s: 'principals list' changed:\n      before: %s\n      after:  %s", what, before, got))
			}
			if b, _ := os.ReadFile(gp.tokenFile); !bytes.Equal(b, tokBefore) {
				bad = append(bad, fmt.Sprintf("%s: the token file changed", what))
			}
			got, r := s.whoamiPurposes(gp.token)
			if r.code != 200 {
				bad = append(bad, fmt.Sprintf("%s: the principal's token no longer works: %s", what, r))
			} else if strings.Join(got, ",") != strings.Join(want, ",") {
				bad = append(bad, fmt.Sprintf("%s: the principal's purposes are now %v", what, got))
			}
		}
		run := func(args []string) (string, error) {
			out, err := s.tryCLI(args...)
			if shqToken.MatchString(out) {
				bad = append(bad, fmt.Sprintf("'shukei %s' printed a token", strings.Join(args, " ")))
			}
			return out, err
		}
		// The same command again: succeeds, changes nothing.
		if out, err := run(gp.args); err != nil {
			bad = append(bad, fmt.Sprintf("the compose one-shot run a second time fails (--exist-ok must succeed without change): %v: %s", err, tailText(out, 3)))
		}
		unchanged("a second run of the one-shot")
		// Another grant: must fail, and change nothing.
		ps := func(xs ...string) string { return strings.Join(xs, ",") }
		for _, v := range []struct {
			what string
			args []string
		}{
			{"purposes plus follow_up", withFlag(gp.args, "--purposes", ps(append(append([]string(nil), gp.purposes...), "follow_up")...))},
			{"purposes plus support", withFlag(gp.args, "--purposes", ps(append(append([]string(nil), gp.purposes...), "support")...))},
			{"purposes without external_aggregate", withFlag(gp.args, "--purposes", ps("service_improvement", "marketing"))},
			{"purposes interview_selection only", withFlag(gp.args, "--purposes", "interview_selection")},
			{"another kind", withFlag(gp.args, "--kind", map[bool]string{true: "affiliate", false: "employee"}[gp.kind == "employee"])},
		} {
			out, err := run(v.args)
			if err == nil {
				bad = append(bad, fmt.Sprintf("--exist-ok with %s succeeds (want a failure): %s", v.what, tailText(out, 2)))
			}
			unchanged("--exist-ok with " + v.what)
		}
		// The break-glass approver grant asked with --exist-ok: fails, or at least grants nothing.
		if help, _ := s.tryCLI("principals", "add", "--help"); strings.Contains(help, "--approver") {
			out, err := run(append(append([]string(nil), gp.args...), "--approver"))
			if err == nil {
				t.Logf("--exist-ok with --approver succeeds: %s", tailText(out, 2))
			}
			unchanged("--exist-ok with --approver")
			sup := s.mustPrincipal("dash-sup-"+sfx, "employee", []string{"support"}, "", false)
			g := s.apiDo("POST", "/v1/breakglass", sup, bgBody(ten, bgJustification, "1h"))
			if id := g.str("id"); id != "" {
				r := s.apiDo("POST", "/v1/breakglass/"+id+"/approve", gp.token, nil)
				if r.code >= 200 && r.code < 300 {
					bad = append(bad, fmt.Sprintf("after --exist-ok --approver, the dashboards' principal approved a break-glass grant: %s", r))
				} else {
					bad = append(bad, s.checkRefused(r, gp.id, "the dashboards' principal approving break-glass")...)
				}
				r = s.apiDo("POST", "/v1/breakglass/"+id+"/revoke", gp.token, nil)
				if r.code >= 200 && r.code < 300 {
					bad = append(bad, fmt.Sprintf("the dashboards' principal revoked another principal's break-glass grant: %s", r))
				} else {
					bad = append(bad, s.checkRefused(r, gp.id, "the dashboards' principal revoking break-glass")...)
				}
			} else {
				t.Logf("harness: the support employee could not request break-glass: %s", g)
			}
		}
		// The token file emptied (the principal exists): no token printed, the grant unchanged.
		if err := os.WriteFile(gp.tokenFile, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := run(gp.args)
		nb, _ := os.ReadFile(gp.tokenFile)
		t.Logf("--exist-ok with an empty token file and the principal there: err=%v, token file now %d bytes: %s", err, len(nb), tailText(out, 2))
		if got, r := s.whoamiPurposes(gp.token); r.code == 200 && strings.Join(got, ",") != strings.Join(want, ",") {
			bad = append(bad, fmt.Sprintf("--exist-ok with an empty token file: the purposes are now %v", got))
		}
		if m := principalToken.FindStringSubmatch(string(nb)); m != nil {
			if got, r := s.whoamiPurposes(m[1]); r.code == 200 && strings.Join(got, ",") != strings.Join(want, ",") {
				bad = append(bad, fmt.Sprintf("--exist-ok with an empty token file wrote a token whose purposes are %v", got))
			}
		}
		reportList(t, "promise 10: docker-compose.yml's one-shot for the dashboards' principal changes the principal, prints a token, or accepts another grant", bad)
	})
	t.Logf("took %s", time.Since(began).Round(100*time.Millisecond))
}

// TestIsolationDashboardsConfig reads the deployment (no services): no panel of
// dashboards/grafana/*.json uses a ClickHouse data source; the provisioned data sources hold no
// ClickHouse data source and no ClickHouse credential; docker-compose.yml gives Grafana no
// ClickHouse user or password, and shares with it no volume a ClickHouse password is written to;
// no token is written into a dashboard or a provisioning file.
func TestIsolationDashboardsConfig(t *testing.T) {
	var bad []string
	root := servicetest.ModuleRoot(t)
	panels, _ := loadPanels(t)
	infinity := 0
	for _, pt := range panels {
		name := fmt.Sprintf("%s %q %s", pt.file, pt.title, pt.refID)
		if isClickHouseType(pt.ds.typ) {
			bad = append(bad, fmt.Sprintf("panel %s uses the ClickHouse data source %q (type %q)", name, pt.ds.uid, pt.ds.typ))
		}
		if sql, ok := pt.target["rawSql"].(string); ok && sql != "" {
			bad = append(bad, fmt.Sprintf("panel %s carries SQL", name))
		}
		if !isPrometheusType(pt.ds.typ) && !isClickHouseType(pt.ds.typ) {
			infinity++
		}
	}
	t.Logf("%d panel queries, %d of them neither Prometheus nor ClickHouse", len(panels), infinity)
	dss, files := loadDatasources(t)
	chWord := regexp.MustCompile(`(?i)clickhouse|:9000\b|:19000\b|:8123\b|:18123\b|_reader\b`)
	var walk func(ds string, path string, v any)
	walk = func(ds, path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, y := range x {
				walk(ds, path+"."+k, y)
			}
		case []any:
			for i, y := range x {
				walk(ds, fmt.Sprintf("%s[%d]", path, i), y)
			}
		case string:
			if chWord.MatchString(x) || chWord.MatchString(path) {
				bad = append(bad, fmt.Sprintf("data source %q: %s = %q names ClickHouse", ds, path, x))
			}
		}
	}
	for _, d := range dss {
		if isClickHouseType(d.typ) {
			bad = append(bad, fmt.Sprintf("the provisioned data source %q (uid %q) is of type %q", d.name, d.uid, d.typ))
			continue
		}
		walk(d.name, "", d.raw)
		if !isPrometheusType(d.typ) {
			jd, _ := d.raw["jsonData"].(map[string]any)
			if hs, ok := jd["allowedHosts"].([]any); !ok || len(hs) == 0 {
				t.Logf("note: the data source %q (type %q) has no allowedHosts: an editor may point its queries, with its token, at any host", d.name, d.typ)
			} else {
				t.Logf("data source %q (type %q) allowedHosts %v", d.name, d.typ, hs)
			}
		}
	}
	t.Logf("data sources (%v): %d", files, len(dss))

	// No token in a dashboard or a provisioning file (every viewer reads the JSON).
	_ = filepath.WalkDir(filepath.Join(root, "dashboards", "grafana"), func(path string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && shqToken.Match(b) {
			bad = append(bad, fmt.Sprintf("%s holds a query-service token", path))
		}
		return nil
	})

	// docker-compose.yml: the grafana service gets no ClickHouse user or password.
	svcs := loadCompose(t)
	g, ok := svcs["grafana"]
	if !ok {
		t.Fatalf("harness: docker-compose.yml has no grafana service")
	}
	envOf := func(svc map[string]any) map[string]string {
		out := map[string]string{}
		switch e := svc["environment"].(type) {
		case map[string]any:
			for k, v := range e {
				out[k] = fmt.Sprint(v)
			}
		case []any:
			for _, x := range e {
				k, v, _ := strings.Cut(fmt.Sprint(x), "=")
				out[k] = v
			}
		}
		return out
	}
	for k, v := range envOf(g) {
		if chWord.MatchString(k) || chWord.MatchString(v) {
			if k == "GF_INSTALL_PLUGINS" {
				t.Logf("note: Grafana still installs %q (a ClickHouse plugin without credentials reads nothing)", v)
				continue
			}
			bad = append(bad, fmt.Sprintf("docker-compose.yml: the grafana service's environment %s=%q names ClickHouse", k, v))
		}
	}
	for _, f := range []string{"env_file", "secrets"} {
		if v, ok := g[f]; ok {
			t.Logf("note: the grafana service has %s: %v", f, v)
		}
	}
	// Volumes Grafana shares with a service that writes a ClickHouse password or declares users.
	volName := func(v any) string {
		switch x := v.(type) {
		case string:
			src, _, _ := strings.Cut(x, ":")
			return src
		case map[string]any:
			return fmt.Sprint(x["source"])
		}
		return ""
	}
	gvols := map[string]bool{}
	for _, v := range g["volumes"].([]any) {
		gvols[volName(v)] = true
	}
	for name, svc := range svcs {
		if name == "grafana" {
			continue
		}
		env := envOf(svc)
		writesCH := false
		for k, v := range env {
			lk := strings.ToLower(k)
			if strings.Contains(lk, "clickhouse") && (strings.Contains(lk, "password_file") || strings.Contains(lk, "users_dir")) && v != "" {
				writesCH = true
			}
		}
		vols, _ := svc["volumes"].([]any)
		for _, v := range vols {
			src := volName(v)
			if gvols[src] && (writesCH || name == "clickhouse") {
				bad = append(bad, fmt.Sprintf("docker-compose.yml: grafana mounts the volume %q, which %s writes ClickHouse users or passwords into", src, name))
			}
		}
		if _, ok := env["SHUKEI_CLICKHOUSE_DASHBOARDS_PASSWORD_FILE"]; ok {
			bad = append(bad, fmt.Sprintf("docker-compose.yml: the %s service still sets SHUKEI_CLICKHOUSE_DASHBOARDS_PASSWORD_FILE", name))
		}
	}
	if _, args, ok := composeOneShot(t); !ok {
		missing(t, "docker-compose.yml: the one-shot 'principals add … --token-file … --exist-ok' for Grafana", "not found")
	} else {
		tf, _ := flagValue(args, "--token-file")
		if !contains(args, "--exist-ok") {
			bad = append(bad, "docker-compose.yml: the dashboards' principal one-shot has no --exist-ok (a second 'up' would fail or print a token)")
		}
		t.Logf("the one-shot writes the token to %s", tf)
	}
	reportList(t, "promise 10: the deployment gives Grafana a ClickHouse data source or ClickHouse credentials", bad)
}
