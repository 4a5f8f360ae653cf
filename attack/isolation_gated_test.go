package attack

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// ---- the population of promise 9 ----
//
// Four complete ISO weeks w0 (oldest) … w3 (last complete week):
//   - five standard/contracted tenants S1…S5, active in w1, w2, w3;
//   - five professional/trial tenants P1…P5, active in w2 and w3; in w1 only P1…P4 (fewer
//     than k: that atom holds 4 tenants);
//   - the target T, enterprise/beta: alone in its edition and in its status, every week, and the
//     only tenant active at all in w0.
// World B differs from world A only in T's usage (10-20× the uses, more users, features and
// applications nobody else uses) and in P4's usage in w1 (where its atom has 4 tenants). Every
// answer must be the same in both worlds.

type isoTenant struct {
	id, edition, status, size string
}

type isoPop struct {
	sfx            string
	ns             uuid.UUID
	S, P           []isoTenant
	T, S6          isoTenant
	weeks          []time.Time // w0…w3 Mondays
	current        time.Time   // this week's Monday
	targetFeature  string      // used only by T (world B) and P4 in w1 (world B)
	targetApp      string
	lowFeature     string // used by three standard tenants only
	profFeature    string // used by the professional tenants only
	commonFeatures []string
}

func newIsoPop() *isoPop {
	sfx := randHex(3)
	p := &isoPop{sfx: sfx, ns: uuid.New()}
	for i := 1; i <= 5; i++ {
		p.S = append(p.S, isoTenant{fmt.Sprintf("iso-s%d-%s", i, sfx), "standard", "contracted", "s"})
		p.P = append(p.P, isoTenant{fmt.Sprintf("iso-p%d-%s", i, sfx), "professional", "trial", "m"})
	}
	p.T = isoTenant{"iso-target-" + sfx, "enterprise", "beta", "l"}
	p.S6 = isoTenant{"iso-s6-" + sfx, "standard", "contracted", "s"}
	p.weeks, p.current = isoWeeks(4)
	p.targetFeature = "app.target" + randDigits(5) + ".secret"
	p.targetApp = randDigits(7)
	p.lowFeature = "app.comment.post"
	p.profFeature = "app.view.calendar"
	p.commonFeatures = []string{"app.record.create", "app.record.search"}
	return p
}

func (p *isoPop) user(tenant string, n int) string {
	return uuid.NewSHA1(p.ns, []byte(fmt.Sprintf("%s/%d", tenant, n))).String()
}

// at is a moment of week w (Tuesday, 09:00 UTC plus minutes).
func (p *isoPop) at(w int, minutes int) time.Time {
	return p.weeks[w].Add(33*time.Hour + time.Duration(minutes)*time.Minute)
}

// ordinary are the events of a standard or professional tenant in week w.
func (p *isoPop) ordinary(t isoTenant, i, w int) []pev {
	u := p.user(t.id, 1)
	var evs []pev
	add := func(schema, item string, count int) {
		evs = append(evs, pev{tenant: t.id, schema: schema, user: u, item: item, count: count, at: p.at(w, i*7+len(evs))})
	}
	add("tenant_profile/v1", "", i)
	if t.edition == "standard" {
		add("feature_use/v1", "app.record.create", 3)
		add("feature_use/v1", "app.record.search", 1)
		if i <= 3 {
			add("feature_use/v1", p.lowFeature, 2)
		}
		add("app_access/v1", "1047", 1)
		add("app_access/v1", "2001", 1)
	} else {
		add("feature_use/v1", "app.record.create", 2)
		add("feature_use/v1", p.profFeature, 4)
		add("app_access/v1", "1047", 1)
	}
	for k := range evs {
		if evs[k].schema == "tenant_profile/v1" {
			evs[k].user = ""
		}
	}
	return evs
}

// target is T's usage in week w: small in world A, large and distinctive in world B.
func (p *isoPop) target(w int, worldB bool) []pev {
	var evs []pev
	add := func(schema, user, item string, count int) {
		evs = append(evs, pev{tenant: p.T.id, schema: schema, user: user, item: item, count: count, at: p.at(w, 200+len(evs))})
	}
	u1 := p.user(p.T.id, 1)
	add("tenant_profile/v1", "", "", 1)
	add("feature_use/v1", u1, "app.record.create", 1)
	add("app_access/v1", u1, "1047", 1)
	if worldB {
		for n := 2; n <= 4; n++ {
			u := p.user(p.T.id, n)
			add("feature_use/v1", u, "app.record.create", 20)
			add("feature_use/v1", u, "app.record.search", 7)
			add("feature_use/v1", u, p.targetFeature, 9)
			add("feature_use/v1", u, p.profFeature, 5)
			add("feature_use/v1", u, p.lowFeature, 3)
			add("app_access/v1", u, "1047", 1)
			add("app_access/v1", u, p.targetApp, 1)
			add("app_access/v1", u, "2001", 1)
		}
		add("tenant_profile/v1", "", "", 40)
	}
	return evs
}

// plan is every event of a world's first planting.
func (p *isoPop) plan(worldB bool) []pev {
	var evs []pev
	for w := range p.weeks {
		evs = append(evs, p.target(w, worldB)...)
		if w == 0 {
			continue
		}
		for i, t := range p.S {
			evs = append(evs, p.ordinary(t, i+1, w)...)
		}
		for i, t := range p.P {
			if w == 1 && i == 4 {
				continue // P5 is not active in w1: that atom holds P1…P4
			}
			evs = append(evs, p.ordinary(t, i+1, w)...)
			if w == 1 && i == 3 && worldB {
				u := p.user(t.id, 9)
				for n, item := range []string{"app.record.create", p.lowFeature, p.targetFeature, p.profFeature} {
					evs = append(evs, pev{tenant: t.id, schema: "feature_use/v1", user: u, item: item, count: 30, at: p.at(w, 400+n)})
				}
				evs = append(evs, pev{tenant: t.id, schema: "app_access/v1", user: u, item: p.targetApp, count: 1, at: p.at(w, 410)})
			}
		}
	}
	return evs
}

// late is planted after the first seal, for weeks already sealed: a sixth standard tenant in w2
// and w3 (a 5-tenant atom would become 6), P5 in w1 (the 4-tenant atom would reach k), more
// uses for S1 in w2 and more of T everywhere. Sealed weeks never change, so no answer may move.
func (p *isoPop) late() []pev {
	var evs []pev
	evs = append(evs, p.ordinary(p.S6, 6, 2)...)
	evs = append(evs, p.ordinary(p.S6, 6, 3)...)
	evs = append(evs, p.ordinary(p.P[4], 5, 1)...)
	evs = append(evs, pev{tenant: p.S[0].id, schema: "feature_use/v1", user: p.user(p.S[0].id, 5), item: "app.record.create", count: 50, at: p.at(2, 500)})
	for w := range p.weeks {
		evs = append(evs, p.target(w, true)...)
	}
	return evs
}

func (p *isoPop) tenants() []isoTenant {
	return append(append(append([]isoTenant(nil), p.S...), p.P...), p.T)
}

func (p *isoPop) attrs() map[string]isoTenant {
	m := map[string]isoTenant{}
	for _, t := range append(p.tenants(), p.S6) {
		m[t.id] = t
	}
	return m
}

// ---- segments of the plan: which figures a sealed atom of ≥ k tenants can explain ----

type segs struct {
	k       int
	weeks   []time.Time
	feature map[int]map[string]map[string]map[string]map[string]bool            // week → category → edition → item → tenants
	cc      map[int]map[string]map[string]map[string]map[string]map[string]bool // week → category → status → edition → item → tenants
	active  map[int]map[string]map[string]map[string]bool                       // week → status → edition → tenants
	eds     []string
}

func newSegs(p *isoPop, evs []pev) *segs {
	s := &segs{k: isoK, weeks: p.weeks, feature: map[int]map[string]map[string]map[string]map[string]bool{},
		cc: map[int]map[string]map[string]map[string]map[string]map[string]bool{}, active: map[int]map[string]map[string]map[string]bool{},
		eds: []string{"standard", "professional", "enterprise"}}
	attrs := p.attrs()
	put := func(m map[string]map[string]bool, key, ten string) {
		if m[key] == nil {
			m[key] = map[string]bool{}
		}
		m[key][ten] = true
	}
	for _, e := range evs {
		w := -1
		for i, wk := range p.weeks {
			if !e.at.Before(wk) && e.at.Before(wk.AddDate(0, 0, 7)) {
				w = i
			}
		}
		if w < 0 {
			continue
		}
		a := attrs[e.tenant]
		if s.active[w] == nil {
			s.active[w] = map[string]map[string]map[string]bool{}
		}
		if s.active[w][a.status] == nil {
			s.active[w][a.status] = map[string]map[string]bool{}
		}
		put(s.active[w][a.status], a.edition, e.tenant)
		var cat string
		switch e.schema {
		case "feature_use/v1":
			cat = "feature_use"
		case "app_access/v1":
			cat = "app_access"
		default:
			continue
		}
		if s.feature[w] == nil {
			s.feature[w] = map[string]map[string]map[string]map[string]bool{}
		}
		if s.feature[w][cat] == nil {
			s.feature[w][cat] = map[string]map[string]map[string]bool{}
		}
		if s.feature[w][cat][a.edition] == nil {
			s.feature[w][cat][a.edition] = map[string]map[string]bool{}
		}
		put(s.feature[w][cat][a.edition], e.item, e.tenant)
		if s.cc[w] == nil {
			s.cc[w] = map[string]map[string]map[string]map[string]map[string]bool{}
		}
		if s.cc[w][cat] == nil {
			s.cc[w][cat] = map[string]map[string]map[string]map[string]bool{}
		}
		if s.cc[w][cat][a.status] == nil {
			s.cc[w][cat][a.status] = map[string]map[string]map[string]bool{}
		}
		if s.cc[w][cat][a.status][a.edition] == nil {
			s.cc[w][cat][a.status][a.edition] = map[string]map[string]bool{}
		}
		put(s.cc[w][cat][a.status][a.edition], e.item, e.tenant)
	}
	return s
}

func (s *segs) weekIndex(monday time.Time) int {
	for i, w := range s.weeks {
		if w.Equal(monday) {
			return i
		}
	}
	return -100 // a week with no planted event
}

// plausible says whether v is what whole atoms can give: the sum of a non-empty subset of the
// candidate atom sizes (each ≥ k), or such a sum averaged over d ≤ maxDiv weeks (the promise
// allows averages of atoms); answers are rounded, so within 0.051 (or 0.5% of v).
func plausible(v float64, cands []int, maxDiv int) bool {
	reach := map[int]bool{0: true}
	for _, c := range cands {
		next := map[int]bool{}
		for r := range reach {
			next[r] = true
			next[r+c] = true
		}
		reach = next
	}
	if v <= 0 {
		return true
	}
	tol := max(0.051, v*0.005)
	for sum := range reach {
		if sum == 0 {
			continue
		}
		for d := 1; d <= max(1, maxDiv); d++ {
			if x := float64(sum) / float64(d); x-tol <= v && v <= x+tol {
				return true
			}
		}
	}
	return false
}

func numOf(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

func intOf(v any) (int, bool) {
	switch x := v.(type) {
	case float64:
		return int(x), true
	case json.Number:
		n, err := x.Int64()
		return int(n), err == nil
	}
	return 0, false
}

// ---- the requests ----

type isoReq struct {
	report    string
	purpose   string
	week      time.Time // Monday of the week asked for
	weeks     int
	category  string
	editions  []string // nil: every edition
	statuses  []string
	byEdition bool
	path      string
	unsealed  bool // the week (or one of the weeks) is not complete yet
}

func isoRequests(p *isoPop) []isoReq {
	var out []isoReq
	day := func(t time.Time) string { return t.Format("2006-01-02") }
	editionSets := [][]string{nil, {"standard"}, {"enterprise"}, {"professional"}, {"standard", "enterprise"}, {"professional", "enterprise"}, {"standard", "professional", "enterprise"}}
	type wk struct {
		param  string
		monday time.Time
	}
	frWeeks := []wk{{"last_week", p.weeks[3]}, {day(p.weeks[2].AddDate(0, 0, 2)), p.weeks[2]}}
	for _, w := range p.weeks {
		frWeeks = append(frWeeks, wk{day(w), w})
	}
	for _, w := range frWeeks {
		for _, cat := range []string{"feature_use", "app_access"} {
			for _, eds := range editionSets {
				for _, be := range []bool{true, false} {
					q := url.Values{"purpose": {"service_improvement"}, "week": {w.param}, "category": {cat}, "by_edition": {strconv.FormatBool(be)}}
					if eds != nil {
						q.Set("edition", strings.Join(eds, ","))
					}
					out = append(out, isoReq{report: "feature_ranking", purpose: "service_improvement", week: w.monday, weeks: 1, category: cat, editions: eds, byEdition: be,
						path: "/v1/reports/feature_ranking?" + q.Encode()})
				}
			}
		}
	}
	ccEditions := [][]string{nil, {"standard"}, {"enterprise"}, {"standard", "enterprise"}, {"professional", "enterprise"}}
	ccStatuses := [][]string{nil, {"contracted"}, {"beta"}, {"contracted", "beta"}, {"trial", "beta"}}
	periods := []struct {
		w, n int
	}{{3, 1}, {3, 2}, {3, 3}, {3, 4}, {2, 1}, {2, 2}, {2, 3}, {1, 1}, {1, 2}, {0, 1}}
	for _, pr := range periods {
		for _, cat := range []string{"feature_use", "app_access"} {
			for _, eds := range ccEditions {
				for _, sts := range ccStatuses {
					for _, be := range []bool{false, true} {
						q := url.Values{"purpose": {"marketing"}, "week": {day(p.weeks[pr.w])}, "weeks": {strconv.Itoa(pr.n)}, "category": {cat}, "by_edition": {strconv.FormatBool(be)}}
						if eds != nil {
							q.Set("edition", strings.Join(eds, ","))
						}
						if sts != nil {
							q.Set("status", strings.Join(sts, ","))
						}
						out = append(out, isoReq{report: "contract_comparison", purpose: "marketing", week: p.weeks[pr.w], weeks: pr.n, category: cat, editions: eds, statuses: sts, byEdition: be,
							path: "/v1/reports/contract_comparison?" + q.Encode()})
					}
				}
			}
		}
	}
	// Weeks not sealed: the current week, alone or at the end of a period.
	for _, q := range []url.Values{
		{"purpose": {"service_improvement"}, "week": {"today"}},
		{"purpose": {"service_improvement"}, "week": {day(p.current)}, "by_edition": {"false"}},
	} {
		out = append(out, isoReq{report: "feature_ranking", purpose: "service_improvement", week: p.current, weeks: 1, path: "/v1/reports/feature_ranking?" + q.Encode(), unsealed: true})
	}
	for _, n := range []string{"1", "2", "4"} {
		q := url.Values{"purpose": {"marketing"}, "week": {"today"}, "weeks": {n}}
		out = append(out, isoReq{report: "contract_comparison", purpose: "marketing", week: p.current, path: "/v1/reports/contract_comparison?" + q.Encode(), unsealed: true})
	}
	return out
}

// answer is one report's answer, reduced to what must not depend on the target: the status, and
// for a 200 the k, the columns, the rows (sorted) and truncation.
type answer struct {
	code  int
	canon string
	rows  []map[string]any
	k     int
	r     reply
}

func canonical(r reply) answer {
	a := answer{code: r.code, r: r}
	if r.err != nil {
		a.canon = "transport error"
		return a
	}
	if r.code != 200 || r.js == nil {
		a.canon = fmt.Sprintf("HTTP %d", r.code)
		return a
	}
	var rows []string
	if rs, ok := r.js["rows"].([]any); ok {
		for _, x := range rs {
			m, _ := x.(map[string]any)
			a.rows = append(a.rows, m)
			b, _ := json.Marshal(m)
			rows = append(rows, string(b))
		}
	}
	sort.Strings(rows)
	a.k, _ = intOf(r.js["k"])
	var cols []string
	if cs, ok := r.js["columns"].([]any); ok {
		for _, c := range cs {
			if m, ok := c.(map[string]any); ok {
				cols = append(cols, fmt.Sprint(m["name"]))
			}
		}
	}
	a.canon = fmt.Sprintf("HTTP 200 k=%d truncated=%v columns=%v rows=%s", a.k, r.js["truncated"], cols, strings.Join(rows, "\n"))
	return a
}

// runAll asks every request with the token of its purpose, six at a time.
func (s *isoStack) runAll(reqs []isoReq, tokens map[string]string) []answer {
	out := make([]answer, len(reqs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = canonical(s.apiDo("GET", reqs[i].path, tokens[reqs[i].purpose], nil))
			}
		}()
	}
	for i := range reqs {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// checkAnswers checks every answer of one world against the plan: a row's every tenant figure
// is a sum of whole atoms of ≥ k tenants, no row stands for a segment below k, an unsealed week
// is refused (and the refusal audited), and nothing failed.
func checkAnswers(s *isoStack, sg *segs, reqs []isoReq, ans []answer) []string {
	var bad []string
	k := sg.k
	for i, rq := range reqs {
		a := ans[i]
		if rq.unsealed {
			if a.code == 200 {
				bad = append(bad, fmt.Sprintf("a week not sealed yet was answered (the interface: 4xx): %s → %d rows", rq.path, len(a.rows)))
			} else {
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
		for _, row := range a.rows {
			rowText, _ := json.Marshal(row)
			e, _ := row["edition"].(string)
			f, _ := row["feature"].(string)
			var edsOf []string
			if e == "all" || e == "" {
				edsOf = eds
			} else {
				if !contains(eds, e) {
					bad = append(bad, fmt.Sprintf("%s: a row of edition %q, outside the filter: %s", rq.path, e, rowText))
				}
				edsOf = []string{e}
			}
			var cand, candPrev, candActive []int
			switch rq.report {
			case "feature_ranking":
				for _, ed := range edsOf {
					if n := len(sg.feature[w][rq.category][ed][f]); n >= k {
						cand = append(cand, n)
					}
					if n := len(sg.feature[w-1][rq.category][ed][f]); n >= k {
						candPrev = append(candPrev, n)
					}
				}
			case "contract_comparison":
				st, _ := row["status"].(string)
				if !contains(sts, st) {
					bad = append(bad, fmt.Sprintf("%s: a row of status %q, outside the statuses asked: %s", rq.path, st, rowText))
				}
				for wi := w - rq.weeks + 1; wi <= w; wi++ {
					for _, ed := range edsOf {
						act := len(sg.active[wi][st][ed])
						if act >= k {
							candActive = append(candActive, act)
						}
						n := act
						if f != "*" {
							n = len(sg.cc[wi][rq.category][st][ed][f])
						}
						if n >= k {
							cand = append(cand, n)
						}
					}
				}
			}
			figure := func(col string, cands []int) {
				v, ok := numOf(row[col])
				if !ok {
					return // null: no figure
				}
				if !plausible(v, cands, rq.weeks) {
					bad = append(bad, fmt.Sprintf("%s: %s = %v is no sum (or average over ≤ %d weeks) of atoms of ≥ %d tenants (the atoms it could use hold %v): %s", rq.path, col, v, rq.weeks, k, cands, rowText))
				}
			}
			if len(cand) == 0 {
				// No atom of ≥ k tenants behind this row: any figure in it comes from fewer.
				for _, col := range []string{"tenants", "users", "uses", "uses_per_tenant", "adoption_pct", "trend_pct", "rank"} {
					if v, ok := row[col]; ok && v != nil && col != "rank" {
						bad = append(bad, fmt.Sprintf("%s: a row with %s=%v for a segment with no atom of ≥ %d tenants (edition %q, feature %q): %s", rq.path, col, v, k, e, f, rowText))
						break
					}
				}
				continue
			}
			figure("tenants", cand)
			switch rq.report {
			case "feature_ranking":
				figure("tenants_prev_week", candPrev)
				if v, ok := numOf(row["tenants_prev_week"]); ok && v > 0 && len(candPrev) == 0 {
					bad = append(bad, fmt.Sprintf("%s: tenants_prev_week = %v, but the week before has no atom of ≥ %d tenants for it: %s", rq.path, v, k, rowText))
				}
			case "contract_comparison":
				figure("active_tenants", candActive)
			}
		}
	}
	return bad
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// diffAnswers lists the requests whose answers differ between two runs.
func diffAnswers(reqs []isoReq, a, b []answer) []string {
	var out []string
	for i := range reqs {
		if a[i].canon == b[i].canon {
			continue
		}
		out = append(out, fmt.Sprintf("%s\n      first:  %s\n      second: %s", reqs[i].path, firstDiff(a[i].canon, b[i].canon), firstDiff(b[i].canon, a[i].canon)))
	}
	return out
}

// firstDiff is the line of x where x and y first differ (cut to 400 bytes).
func firstDiff(x, y string) string {
	xl, yl := strings.Split(x, "\n"), strings.Split(y, "\n")
	for i, l := range xl {
		if i >= len(yl) || l != yl[i] {
			if len(l) > 400 {
				l = l[:400] + "…"
			}
			if i == 0 {
				return l
			}
			return fmt.Sprintf("row line %d: %s", i, l)
		}
	}
	return "(no more lines)"
}

// ---- a world ----

type isoWorld struct {
	name   string
	s      *isoStack
	pop    *isoPop
	evs    []pev
	segs   *segs
	tokens map[string]string
	sealed bool
	gp     *grafanaPrincipal // the dashboards' principal, made as docker-compose.yml makes it
}

func buildWorld(t *testing.T, name string, pop *isoPop, worldB bool) *isoWorld {
	t.Helper()
	w := &isoWorld{name: name, s: newIsoStack(t), pop: pop, evs: pop.plan(worldB)}
	for _, ten := range pop.tenants() {
		w.s.cli("tenants", "add", "--tenant", ten.id, "--status", ten.status, "--edition", ten.edition, "--size-band", ten.size)
	}
	w.s.plant(w.evs)
	w.segs = newSegs(pop, w.evs)
	w.sealed = w.s.seal()
	w.tokens = map[string]string{
		"service_improvement": w.s.mustPrincipal("iso-product-"+pop.sfx, "employee", []string{"service_improvement"}, "", false),
		"marketing":           w.s.mustPrincipal("iso-marketing-"+pop.sfx, "employee", []string{"marketing"}, "", false),
	}
	w.gp = w.s.makeGrafanaPrincipal(t.TempDir())
	w.s.startQuery()
	return w
}

// TestLoneTenantLeavesNoTrace attacks promises 9 and 10 with two worlds that differ only in the
// usage of a tenant alone in its segment (and of one tenant of a 4-tenant atom): every answer
// of both aggregate reports, over every overlapping period and filter, every table the
// dashboards' user can read and every dashboard panel over overlapping date ranges must be the
// same in both worlds; and the same requests after late events and a second sealing pass must
// get the same answers.
func TestLoneTenantLeavesNoTrace(t *testing.T) {
	began := time.Now()
	pop := newIsoPop()
	t.Logf("weeks w0…w3: %s; target %s (enterprise, beta)", fmtWeeks(pop.weeks), pop.T.id)
	a := buildWorld(t, "A", pop, false)
	b := buildWorld(t, "B", pop, true)
	reqs := isoRequests(pop)
	t.Logf("worlds built and sealed in %s; %d requests per run", time.Since(began).Round(time.Second), len(reqs))

	ansA := a.s.runAll(reqs, a.tokens)
	ansB := b.s.runAll(reqs, b.tokens)
	served := 0
	for _, x := range ansA {
		if x.code == 200 && len(x.rows) > 0 {
			served++
		}
	}
	t.Logf("world A: %d of %d answers have rows (%s)", served, len(reqs), time.Since(began).Round(time.Second))
	if served == 0 {
		t.Errorf("harness: no request of world A got a row: nothing was attacked (first answer: %s)", ansA[0].r)
	}

	t.Run("promise9_worlds_agree", func(t *testing.T) {
		reportList(t, "promise 9: a tenant alone in its segment (or one of fewer than k) changed an answer — the two worlds differ only in its usage", diffAnswers(reqs, ansA, ansB))
	})
	t.Run("promise9_every_figure_from_k_tenants", func(t *testing.T) {
		reportList(t, "promise 9 (world A): answers not made of whole atoms of ≥ k tenants", checkAnswers(a.s, a.segs, reqs, ansA))
		reportList(t, "promise 9 (world B): answers not made of whole atoms of ≥ k tenants", checkAnswers(b.s, b.segs, reqs, ansB))
	})

	// Promise 10 reads the worlds as they are now (before the late events), as the dashboards'
	// principal (isolation_dashboards_test.go).
	t.Run("promise10_dashboards_principal", func(t *testing.T) {
		dashboardsPrincipalAttack(t, a, b, reqs)
	})

	t.Run("promise9_sealed_atoms_never_change", func(t *testing.T) {
		a.s.cli("tenants", "add", "--tenant", pop.S6.id, "--status", pop.S6.status, "--edition", pop.S6.edition, "--size-band", pop.S6.size)
		late := pop.late()
		a.s.plant(late)
		a.s.seal()
		again := a.s.runAll(reqs, a.tokens)
		reportList(t, "promise 9: an answer changed after late events for sealed weeks and a second sealing pass (an atom changed once readable)", diffAnswers(reqs, ansA, again))
		t.Logf("late events: %d planted; the whole test took %s", len(late), time.Since(began).Round(time.Second))
	})
}

func fmtWeeks(ws []time.Time) string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Format("2006-01-02"))
	}
	return strings.Join(out, ", ")
}

// ---- promise 10: time ranges of the dashboards ----

func pop(w *isoWorld) *isoPop { return w.pop }

type isoRange struct {
	name     string
	from, to time.Time
}

// isoRanges are overlapping date ranges over the planted weeks (differencing any two of them
// isolates a week, a pair of weeks or a day).
func isoRanges(p *isoPop) []isoRange {
	end := func(w time.Time) time.Time { return w.AddDate(0, 0, 7).Add(-time.Second) }
	ws := p.weeks
	out := []isoRange{
		{"all", ws[0], time.Now().UTC()},
		{"w0-w3", ws[0], end(ws[3])}, {"w1-w3", ws[1], end(ws[3])}, {"w0-w1", ws[0], end(ws[1])}, {"w2-w3", ws[2], end(ws[3])},
		{"w1-w2", ws[1], end(ws[2])}, {"day-of-w2", ws[2].AddDate(0, 0, 1), ws[2].AddDate(0, 0, 2).Add(-time.Second)},
		{"last-7-days", time.Now().UTC().AddDate(0, 0, -7), time.Now().UTC()},
	}
	for i, w := range ws {
		out = append(out, isoRange{fmt.Sprintf("w%d", i), w, end(w)})
	}
	return out
}

// TestIsolationChecksFindWhatTheyClaim is the self-check of promise 9's row checks (a check
// that cannot fail would make the attack pass): a row that counts the lone target with an atom,
// a row of the target's own segment, and a row of a 4-tenant atom are all flagged; the
// figures of whole atoms (a sum, an average over the period) are not.
func TestIsolationChecksFindWhatTheyClaim(t *testing.T) {
	p := newIsoPop()
	sg := newSegs(p, p.plan(true))
	s := &isoStack{}
	fr := isoReq{report: "feature_ranking", purpose: "service_improvement", week: p.weeks[3], weeks: 1, category: "feature_use", byEdition: false, path: "fr"}
	frW1 := fr
	frW1.week, frW1.byEdition, frW1.path = p.weeks[1], true, "fr-w1"
	cc := isoReq{report: "contract_comparison", purpose: "marketing", week: p.weeks[3], weeks: 3, category: "feature_use", path: "cc"}
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
		{"standard and professional atoms", fr, row("edition", "all", "feature", "app.record.create", "tenants", 10.0, "uses", 35.0), false},
		{"the target counted in", fr, row("edition", "all", "feature", "app.record.create", "tenants", 11.0), true},
		{"the target's own feature", fr, row("edition", "all", "feature", p.targetFeature, "tenants", 1.0), true},
		{"the target's segment, no tenant figure", fr, row("edition", "enterprise", "feature", "app.record.create", "uses", 20.0), true},
		{"the 4-tenant professional atom of w1", frW1, row("edition", "professional", "feature", "app.record.create", "tenants", 4.0), true},
		{"an average of whole atoms", cc, row("status", "trial", "edition", "all", "feature", "*", "tenants", 3.3, "active_tenants", 3.3), false},
		{"an average with the 4-tenant atom in it", cc, row("status", "trial", "edition", "all", "feature", "*", "tenants", 4.7), true},
		{"the beta status (the target alone)", cc, row("status", "beta", "edition", "all", "feature", "*", "tenants", 1.0), true},
	}
	for _, c := range cases {
		got := checkAnswers(s, sg, []isoReq{c.req}, []answer{{code: 200, rows: []map[string]any{c.row}}})
		if (len(got) > 0) != c.flag {
			t.Errorf("%s: flagged %v, want %v (%v)", c.name, len(got) > 0, c.flag, got)
		}
	}
}
