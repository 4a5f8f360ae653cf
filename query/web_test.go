package query_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"image/png"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/internal/servicetest"
)

// TestWebPage drives the built-in web page in headless Chromium against the real service and
// its ClickHouse data: sign-in, the purpose picker, each purpose's reports drawn as charts
// whose bars carry the same data the API answers, parameters changed and re-run, refusals
// shown with the service's words, the privacy budget, and a full-page screenshot. All the
// while the page may make no request outside the service's origin and log no error.
func TestWebPage(t *testing.T) {
	chromium, err := chromiumPath()
	if err != nil {
		servicetest.Unavailable(t, "chromium", err)
	}
	start := time.Now()
	f := newFixture(t, data(time.Now().UTC()))
	addRelease(t, f)
	p := openPage(t, chromium, f.srv.URL)
	t.Logf("fixture and browser ready in %s", time.Since(start).Round(time.Millisecond))

	p.do("load the page", chromedp.Navigate(f.srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	if title := run(p, "title", chromedp.Title()); !strings.Contains(title, "Shukei") {
		t.Errorf("title %q", title)
	}

	// Sign in as pm: the token is kept in sessionStorage, never in the address.
	p.signIn(f.tokens["pm"], "pm")
	if got := eval[string](p, `sessionStorage.getItem("shukei.token")`); got != f.tokens["pm"] {
		t.Errorf("sessionStorage holds %q, want pm's token", got)
	}
	var who whoami
	f.getJSON("pm", "/v1/whoami", nil, &who)
	if got := eval[[]string](p, `Array.from(document.querySelectorAll("#purposes [data-purpose]"), b => b.dataset.purpose)`); !slices.Equal(got, who.Purposes) || len(got) != 4 {
		t.Errorf("purpose picker %v, want pm's purposes %v", got, who.Purposes)
	}
	if n := eval[int](p, `document.querySelectorAll("#reports [data-report]").length`); n != 0 {
		t.Errorf("%d reports shown before a purpose is picked", n)
	}

	// service_improvement: the feature ranking runs at once with its defaults, then again for
	// the fixture's week.
	p.pick("service_improvement", "feature_ranking")
	if got := p.sections(); !slices.Equal(got, []string{"feature_ranking", "active_tenants"}) {
		t.Errorf("service_improvement shows %v", got)
	}
	period := p.setPeriod(f, "pm", "service_improvement", "feature_ranking")
	bars := p.bars("feature_ranking")
	api := f.apiReport("pm", "feature_ranking", "purpose", "service_improvement", period, "2026-11-20")
	p.sameBars("feature_ranking", bars, api)
	if !hasBar(bars, "board", "professional", 6) || !hasBar(bars, "chat", "professional", 6) || !hasBar(bars, "export", "standard", 5) {
		t.Errorf("feature ranking bars %v: want board and chat of professional at 6 tenants, export of standard at 5", bars)
	}
	if slices.ContainsFunc(bars, func(b bar) bool { return b.Series == "standard" && b.Label == "board" }) {
		t.Errorf("a bar of one tenant was drawn: %v", bars)
	}
	if got := p.legend("feature_ranking"); !slices.Equal(got, []string{"professional", "standard"}) {
		t.Errorf("legend %v", got)
	}
	p.oneColourPerSeries("feature_ranking")
	if n := eval[int](p, `document.querySelectorAll("#report-feature_ranking table.data tbody tr").length`); n != len(api.Rows) {
		t.Errorf("table has %d rows, the API %d", n, len(api.Rows))
	}

	// Parameters: one ranking over all editions, professional only.
	p.rerun("feature_ranking",
		chromedp.Click(chromedp.ID("p-feature_ranking-by_edition")),
		chromedp.SetValue(chromedp.ID("p-feature_ranking-edition"), "professional"))
	bars = p.bars("feature_ranking")
	p.sameBars("feature_ranking", bars, f.apiReport("pm", "feature_ranking", "purpose", "service_improvement", period, "2026-11-20",
		"by_edition", "false", "edition", "professional"))
	if !hasBar(bars, "board", "all", 6) || slices.ContainsFunc(bars, func(b bar) bool { return b.Series != "all" }) {
		t.Errorf("by_edition=false bars %v: want one series, all, with board at 6", bars)
	}

	// A parameter the service refuses: its error is shown, and no stale chart stays.
	p.rerun("feature_ranking", chromedp.SetValue(chromedp.ID("p-feature_ranking-edition"), "Not An Edition"))
	p.wantError("feature_ranking", 400, "parameter edition")
	if n := len(p.bars("feature_ranking")); n != 0 {
		t.Errorf("%d bars left after a refused run", n)
	}

	// marketing: contracted vs trial.
	p.pick("marketing", "contract_comparison")
	if got := p.sections(); !slices.Equal(got, []string{"contract_comparison", "status_activity"}) {
		t.Errorf("marketing shows %v", got)
	}
	if got := eval[[]string](p, `Array.from(document.querySelectorAll('#purposes [aria-pressed="true"]'), b => b.dataset.purpose)`); !slices.Equal(got, []string{"marketing"}) {
		t.Errorf("pressed purposes %v", got)
	}
	period = p.setPeriod(f, "pm", "marketing", "contract_comparison")
	bars = p.bars("contract_comparison")
	p.sameBars("contract_comparison", bars, f.apiReport("pm", "contract_comparison", "purpose", "marketing", period, "2026-11-20"))
	// Weekly atoms: contracted p1..p6 (s1 is alone in its segment), trial t1..t5 (d1 is alone
	// in its week): every contracted tenant used board, every trial tenant of the week export.
	for _, w := range []bar{{Label: "*", Series: "contracted", Value: 100}, {Label: "*", Series: "trial", Value: 100},
		{Label: "board", Series: "contracted", Value: 100}, {Label: "export", Series: "trial", Value: 100}} {
		if !hasBar(bars, w.Label, w.Series, w.Value) {
			t.Errorf("contract comparison: no bar %+v in %v", w, bars)
		}
	}
	if slices.ContainsFunc(bars, func(b bar) bool { return b.Series == "trial" && b.Label == "board" }) {
		t.Errorf("trial board (one tenant) drawn: %v", bars)
	}
	p.oneColourPerSeries("contract_comparison")
	p.screenshot("pm-marketing.png")

	// A reload keeps the session (sessionStorage); signing out forgets the token.
	p.do("reload", chromedp.Reload())
	p.waitFor("signed in again after a reload", `document.getElementById("who-principal").textContent === "pm" && !document.getElementById("app").hidden`)
	p.signOut()

	// A wrong token: 401 with the service's reason, nothing kept.
	p.do("sign in with a wrong token", chromedp.SendKeys(chromedp.ID("token"), "shq_not-a-real-token"), chromedp.Click(chromedp.ID("signin-button")))
	p.waitFor("the sign-in error", `!document.getElementById("signin-error").hidden`)
	if msg := text(p, "#signin-error"); !strings.Contains(msg, "401") || !strings.Contains(msg, "unknown token") {
		t.Errorf("wrong token: error %q", msg)
	}
	if eval[bool](p, `!document.getElementById("app").hidden || sessionStorage.getItem("shukei.token") !== null`) {
		t.Error("a wrong token opened the reports or was kept")
	}

	// partner: the DP releases with their 95% intervals, and the budget, prominently.
	p.signIn(f.tokens["partner"], "partner")
	if got := eval[[]string](p, `Array.from(document.querySelectorAll("#purposes [data-purpose]"), b => b.dataset.purpose)`); !slices.Equal(got, []string{"external_aggregate"}) {
		t.Errorf("partner's purpose picker %v", got)
	}
	p.pick("external_aggregate", "dp_releases", "dp_budget")
	if got := p.sections(); !slices.Equal(got, []string{"dp_budget", "dp_releases"}) {
		t.Errorf("external_aggregate shows %v: want the budget first", got)
	}
	bars = p.bars("dp_releases")
	rel := f.apiReport("partner", "dp_releases", "purpose", "external_aggregate")
	p.sameBars("dp_releases", bars, rel)
	if len(bars) != 1 || bars[0].Label != "feature=board,status=contracted" || bars[0].Series != "feature_adoption" || bars[0].Value != 41 ||
		bars[0].Low == nil || *bars[0].Low != 38.2 || bars[0].High == nil || *bars[0].High != 43.8 {
		t.Errorf("dp_releases bars %v", bars)
	}
	// The error bar spans low..high around the bar's end.
	type span struct {
		Low    float64 `json:"low"`
		High   float64 `json:"high"`
		X1     float64 `json:"x1"`
		X2     float64 `json:"x2"`
		BarEnd float64 `json:"barEnd"`
	}
	errBars := eval[[]span](p, `Array.from(document.querySelectorAll("#report-dp_releases g.err"), g => {
		const l = g.querySelector("line"), r = document.querySelector('#report-dp_releases rect.bar[data-row="' + g.dataset.row + '"]');
		return {low: Number(g.dataset.low), high: Number(g.dataset.high), x1: Number(l.getAttribute("x1")), x2: Number(l.getAttribute("x2")),
			barEnd: Number(r.getAttribute("x")) + Number(r.getAttribute("width"))};
	})`)
	if len(errBars) != 1 || errBars[0].Low != 38.2 || errBars[0].High != 43.8 || !(errBars[0].X1 < errBars[0].BarEnd && errBars[0].BarEnd < errBars[0].X2) {
		t.Errorf("error bars %+v: want one from 38.2 to 43.8 around the bar's end", errBars)
	}
	var bud struct {
		Rows []map[string]any `json:"rows"`
	}
	f.getJSON("partner", "/v1/reports/dp_budget", url.Values{"purpose": {"external_aggregate"}}, &bud)
	if len(bud.Rows) != 1 || n(bud.Rows[0]["epsilon_left"]) != 26 {
		t.Fatalf("budget from the API: %v", bud.Rows)
	}
	budget := eval[map[string]string](p, `Object.assign({}, document.querySelector("#report-dp_budget .budget").dataset)`)
	if budget["epsilonLeft"] != "26" || budget["epsilonBudget"] != "31" || budget["epsilonSpent"] != "5" || budget["month"] != time.Now().UTC().Format("2006-01") {
		t.Errorf("budget shown %v, want 26 of 31 left (5 spent) this month", budget)
	}
	if left, of := text(p, "#report-dp_budget .budget-left"), text(p, "#report-dp_budget .budget-of"); left != "26" || !strings.Contains(of, "31") {
		t.Errorf("budget figure %q %q", left, of)
	}
	p.screenshot("partner-external_aggregate.png")
	p.signOut()

	// support: the trace waits for a tenant and a ticket; without an open ticket it is refused.
	p.signIn(f.tokens["helpdesk"], "helpdesk")
	p.do("pick support", chromedp.Click(chromedp.CSS(`#purposes [data-purpose="support"]`)))
	p.waitFor("the support form", `document.querySelector('#report-support_trace[data-state="idle"] form.params') !== null`)
	if eval[bool](p, `document.querySelector("#report-support_trace").dataset.run !== "0" || document.querySelector("#report-support_trace table") !== null`) {
		t.Error("support_trace ran without a tenant and a ticket")
	}
	p.rerun("support_trace",
		chromedp.SendKeys(chromedp.ID("p-support_trace-tenant"), "acme"),
		chromedp.SendKeys(chromedp.ID("p-support_trace-ticket"), "T-404"))
	p.wantError("support_trace", 403, "has no ticket T-404")
	if _, err := f.reg.OpenTicket(context.Background(), "acme", "T-1", time.Hour, "helpdesk"); err != nil {
		t.Fatal(err)
	}
	p.rerun("support_trace",
		chromedp.SetValue(chromedp.ID("p-support_trace-ticket"), "T-1"),
		chromedp.SetValue(chromedp.ID("p-support_trace-around_minutes"), "120"))
	p.wantState("support_trace", "ready")
	if n := eval[int](p, `document.querySelectorAll("#report-support_trace table.data tbody tr").length`); n != 3 {
		t.Errorf("support trace table has %d rows, want acme's 3", n)
	}

	// Nothing left the origin, no token was in an address, nothing was logged as an error.
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.requests {
		for who, tok := range f.tokens {
			if strings.Contains(u, tok) {
				t.Errorf("%s's token in a requested address: %s", who, u)
			}
		}
	}
	for _, want := range []string{"/app.js", "/style.css", "/v1/whoami", "/v1/reports/feature_ranking?"} {
		if !slices.ContainsFunc(p.requests, func(u string) bool { return strings.Contains(u, want) }) {
			t.Errorf("no request for %s among %d", want, len(p.requests))
		}
	}
	for _, problem := range p.problems {
		t.Error(problem)
	}
	t.Logf("%d requests checked against %s, %d problems; took %s", len(p.requests), f.srv.URL, len(p.problems), time.Since(start).Round(time.Millisecond))
}

// chromiumPath finds the browser: Debian's chromium (scripts/services.sh installs it).
func chromiumPath() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium, chromium-browser or google-chrome on PATH (scripts/services.sh up installs Debian's chromium)")
}

// addRelease publishes one DP release and charges its ε to this month's ledger.
func addRelease(t *testing.T, f *fixture) {
	t.Helper()
	ctx := context.Background()
	w := time.Date(2026, 11, 18, 0, 0, 0, 0, time.UTC)
	batch, err := f.conn.PrepareBatch(ctx, "INSERT INTO "+f.db+"_external_aggregate.releases (release_id, plan_hash, window_start, window_end, metric, unit, dims, dim_names, dim_values, value, stddev, ci95_low, ci95_high, epsilon, delta, selected, selection_epsilon, selection_delta, l0, linf, mechanism, policy_version, released_at)")
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append("r1", "plan", w, w.Add(24*time.Hour), "feature_adoption", "tenants", "feature=board,status=contracted",
		[]string{"feature", "status"}, []string{"board", "contracted"}, int64(41), 1.41, 38.2, 43.8, 1.0, 0.0, uint8(0), 0.0, 0.0, int64(12), int64(1), "laplace", uint16(1), w.Add(26*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	month := time.Now().UTC().Format("2006-01")
	if _, _, err := ledger.New(f.conn, f.db).Charge(ctx, ledger.Entry{ReleaseID: "r1", Purpose: "external_aggregate", Period: month, Epsilon: 5, Delta: 1e-8,
		L0: 12, LInf: 1, WindowStart: w, WindowEnd: w.Add(24 * time.Hour), QueryHash: "q", PolicyVersion: 1}, ledger.Budget{Epsilon: 31, Delta: 1e-6}); err != nil {
		t.Fatal(err)
	}
}

// getJSON requests path as who and decodes the 200 answer into v.
func (f *fixture) getJSON(who, path string, q url.Values, v any) {
	f.t.Helper()
	status, body, _ := f.get(who, path, q)
	if status != 200 {
		f.t.Fatalf("%s %s: %d %s", who, path, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		f.t.Fatalf("%s: %v", path, err)
	}
}

// chartReport is a report's answer as the page draws it.
type chartReport struct {
	Chart struct {
		Kind   string `json:"kind"`
		Label  string `json:"label"`
		Value  string `json:"value"`
		Series string `json:"series"`
		Low    string `json:"low"`
		High   string `json:"high"`
	} `json:"chart"`
	Rows []map[string]any `json:"rows"`
}

func (f *fixture) apiReport(who, name string, kv ...string) chartReport {
	f.t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	var r chartReport
	f.getJSON(who, "/v1/reports/"+name, q, &r)
	if r.Chart.Kind != "bar" {
		f.t.Fatalf("%s: chart %+v is not a bar chart", name, r.Chart)
	}
	return r
}

// bar is one bar of a chart as the page's data attributes describe it.
type bar struct {
	Label  string   `json:"label"`
	Series string   `json:"series"`
	Value  float64  `json:"value"`
	Low    *float64 `json:"low"`
	High   *float64 `json:"high"`
}

func (b bar) String() string {
	s := fmt.Sprintf("%s/%s=%v", b.Label, b.Series, b.Value)
	if b.Low != nil && b.High != nil {
		s += fmt.Sprintf("[%v,%v]", *b.Low, *b.High)
	}
	return s
}

func hasBar(bars []bar, label, series string, value float64) bool {
	return slices.ContainsFunc(bars, func(b bar) bool { return b.Label == label && b.Series == series && b.Value == value })
}

// expectedBars are the bars the API's rows call for: one a row.
func expectedBars(r chartReport) []bar {
	var out []bar
	num := func(v any) *float64 {
		if f, ok := v.(float64); ok {
			return &f
		}
		return nil
	}
	for _, row := range r.Rows {
		b := bar{Label: fmt.Sprint(row[r.Chart.Label]), Value: n(row[r.Chart.Value])}
		if r.Chart.Series != "" {
			b.Series = fmt.Sprint(row[r.Chart.Series])
		}
		if r.Chart.Low != "" {
			b.Low, b.High = num(row[r.Chart.Low]), num(row[r.Chart.High])
		}
		out = append(out, b)
	}
	return out
}

func sortedStrings(bars []bar) []string {
	out := make([]string, len(bars))
	for i, b := range bars {
		out[i] = b.String()
	}
	slices.Sort(out)
	return out
}

// page is one browser tab on the service, with what it requested and any problem it showed.
type page struct {
	t        *testing.T
	ctx      context.Context
	origin   string
	mu       sync.Mutex
	requests []string
	problems []string
}

func openPage(t *testing.T, chromium, origin string) *page {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // the tests may run as root, where Chromium's sandbox cannot start
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	p := &page{t: t, ctx: ctx, origin: origin}
	// The first Do starts the browser; it has no timeout, as the browser lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		servicetest.Unavailable(t, "chromium at "+chromium, err)
	}
	if err := chromedp.Listen(ctx, p.observe); err != nil {
		t.Fatal(err)
	}
	return p
}

// observe runs in the tab's event loop: it only records.
func (p *page) observe(ev any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		u := ev.Request.URL
		p.requests = append(p.requests, u)
		// data: addresses are not fetched from anywhere (Chromium draws the date picker's icon
		// with one); everything else must come from the service.
		if !strings.HasPrefix(u, p.origin+"/") && !strings.HasPrefix(u, "data:") {
			p.problems = append(p.problems, "request outside the service's origin: "+u)
		}
	case *network.EventResponseReceived:
		// The API refuses on purpose in this test; the page's own files must all be there.
		if r := ev.Response; r.Status >= 400 && !strings.HasPrefix(r.URL, p.origin+"/v1/") {
			p.problems = append(p.problems, fmt.Sprintf("%s answered %d", r.URL, r.Status))
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			p.problems = append(p.problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		p.problems = append(p.problems, fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, msg))
	case *log.EventEntryAdded:
		e := ev.Entry
		// A refused API request is logged by the browser as a failed load; that is expected
		// here. Anything else at error level (a CSP violation, a missing file) is not.
		if e.Level == log.EntryLevelError && !(e.Source == log.EntrySourceNetwork && strings.HasPrefix(e.URL, p.origin+"/v1/")) {
			p.problems = append(p.problems, fmt.Sprintf("browser log (%s): %s %s", e.Source, e.Text, e.URL))
		}
	}
}

const stepTimeout = 20 * time.Second

func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v%s", what, err, p.problemNote())
	}
}

func run[T any](p *page, what string, a chromedp.Action[T]) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		p.t.Fatalf("%s: %v%s", what, err, p.problemNote())
	}
	return v
}

func eval[T any](p *page, expr string) T {
	p.t.Helper()
	return run(p, expr, chromedp.Evaluate[T](expr))
}

func text(p *page, sel string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel))
}

func (p *page) problemNote() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.problems) == 0 {
		return ""
	}
	return "\npage problems so far:\n  " + strings.Join(p.problems, "\n  ")
}

// waitFor evaluates expr until it is true. An evaluation that fails (the document being
// replaced by a reload) is tried again until the deadline. (chromedp.Poll would build its
// predicate with new Function, which the page's Content-Security-Policy rightly forbids.)
func (p *page) waitFor(what, expr string) {
	p.t.Helper()
	deadline := time.Now().Add(stepTimeout)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			html := eval[string](p, `document.getElementById("reports") ? document.getElementById("reports").outerHTML.slice(0, 3000) : ""`)
			p.t.Fatalf("timed out waiting for %s (%s; last error %v)%s\nreports: %s", what, expr, err, p.problemNote(), html)
		}
		time.Sleep(40 * time.Millisecond)
	}
}

func (p *page) signIn(token, principal string) {
	p.t.Helper()
	p.do("sign in as "+principal, chromedp.WaitVisible(chromedp.ID("token")), chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("signin-button")))
	p.waitFor("signed in as "+principal, fmt.Sprintf(`document.getElementById("who-principal").textContent === %q && !document.getElementById("app").hidden`, principal))
	if u := eval[string](p, `location.href`); strings.Contains(u, token) || u != p.origin+"/" {
		p.t.Errorf("address after sign-in: %s", u)
	}
}

func (p *page) signOut() {
	p.t.Helper()
	p.do("sign out", chromedp.Click(chromedp.ID("signout")))
	p.waitFor("the sign-in form", `!document.getElementById("signin").hidden && document.getElementById("app").hidden`)
	if eval[bool](p, `sessionStorage.getItem("shukei.token") !== null || document.getElementById("token").value !== ""`) {
		p.t.Error("the token outlived signing out")
	}
}

// pick clicks a purpose and waits until each named report has finished its first run.
func (p *page) pick(purpose string, reports ...string) {
	p.t.Helper()
	p.do("pick "+purpose, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#purposes [data-purpose=%q]`, purpose))))
	for _, r := range reports {
		p.waitFor(r+"'s first run", fmt.Sprintf(`Number((document.getElementById(%q) || {dataset: {}}).dataset.run) >= 1`, "report-"+r))
		p.wantState(r, "ready")
	}
}

func (p *page) sections() []string {
	p.t.Helper()
	return eval[[]string](p, `Array.from(document.querySelectorAll("#reports section[data-report]"), s => s.dataset.report)`)
}

// rerun applies the steps to a report's form, presses Run and waits for the answer.
func (p *page) rerun(report string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	before := eval[string](p, fmt.Sprintf(`document.getElementById(%q).dataset.run`, "report-"+report))
	steps = append(steps, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#report-%s button.run`, report))))
	p.do("re-run "+report, steps...)
	p.waitFor(report+" re-run", fmt.Sprintf(`document.getElementById(%q).dataset.run !== %q`, "report-"+report, before))
}

func (p *page) wantState(report, want string) {
	p.t.Helper()
	if got := eval[string](p, fmt.Sprintf(`document.getElementById(%q).dataset.state`, "report-"+report)); got != want {
		p.t.Fatalf("%s: state %q, want %q; error shown: %q", report, got, want, text(p, "#report-"+report+" .error"))
	}
}

func (p *page) wantError(report string, status int, words string) {
	p.t.Helper()
	p.wantState(report, "error")
	sel := "#report-" + report + " .error"
	if eval[bool](p, fmt.Sprintf(`document.querySelector(%q).hidden`, sel)) {
		p.t.Errorf("%s: the error is hidden", report)
	}
	msg := text(p, sel)
	if !strings.Contains(msg, fmt.Sprint(status)) || !strings.Contains(msg, words) || !strings.Contains(msg, "audit record #") {
		p.t.Errorf("%s: error %q, want %d, %q and its audit record", report, msg, status, words)
	}
}

// setPeriod moves a report's period (its first date parameter: as_of or week) from the
// default to the fixture's week and re-runs it. Before, the field must show the date the
// service resolved the default to. It returns the parameter's name.
func (p *page) setPeriod(f *fixture, who, purpose, report string) string {
	p.t.Helper()
	var me whoami
	f.getJSON(who, "/v1/whoami", nil, &me)
	name := ""
	for _, r := range me.Reports {
		for _, prm := range r.Params {
			if r.Name == report && prm.Kind == "date" && name == "" {
				name = prm.Name
			}
		}
	}
	if name == "" {
		p.t.Fatalf("%s has no date parameter", report)
	}
	var def struct {
		Params map[string]any `json:"params"`
	}
	f.getJSON(who, "/v1/reports/"+report, url.Values{"purpose": {purpose}}, &def)
	id := "p-" + report + "-" + name
	if v := eval[string](p, fmt.Sprintf(`document.getElementById(%q).value`, id)); v != def.Params[name] {
		p.t.Errorf("%s: %s shows %q after the first run, the service used %v", report, name, v, def.Params[name])
	}
	p.rerun(report, chromedp.SetValue(chromedp.ID(id), asOf.Format(time.DateOnly)))
	p.wantState(report, "ready")
	return name
}

type whoami struct {
	Purposes []string `json:"purposes"`
	Reports  []struct {
		Name   string `json:"name"`
		Params []struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"params"`
	} `json:"reports"`
}

func (p *page) bars(report string) []bar {
	p.t.Helper()
	return eval[[]bar](p, fmt.Sprintf(`Array.from(document.querySelectorAll("#report-%s svg.bars rect.bar"), b => ({
		label: b.dataset.label, series: b.dataset.series || "", value: Number(b.dataset.value),
		low: b.dataset.low === undefined ? null : Number(b.dataset.low),
		high: b.dataset.high === undefined ? null : Number(b.dataset.high)}))`, report))
}

// sameBars checks that the chart shows exactly the API's rows: one bar a row, same data.
func (p *page) sameBars(report string, got []bar, api chartReport) {
	p.t.Helper()
	want := expectedBars(api)
	if len(want) == 0 {
		p.t.Fatalf("%s: the API has no rows to compare with", report)
	}
	if g, w := sortedStrings(got), sortedStrings(want); !slices.Equal(g, w) {
		p.t.Errorf("%s: chart bars\n  %v\nAPI rows\n  %v", report, g, w)
	}
}

func (p *page) legend(report string) []string {
	p.t.Helper()
	return eval[[]string](p, fmt.Sprintf(`Array.from(document.querySelectorAll("#report-%s .legend li[data-series]"), l => l.dataset.series)`, report))
}

// oneColourPerSeries checks the bars' painted colours: one per series, different series apart.
func (p *page) oneColourPerSeries(report string) {
	p.t.Helper()
	fills := eval[map[string][]string](p, fmt.Sprintf(`(() => {
		const m = {};
		for (const b of document.querySelectorAll("#report-%s svg.bars rect.bar")) {
			const f = getComputedStyle(b).fill;
			m[b.dataset.series] = m[b.dataset.series] || [];
			if (!m[b.dataset.series].includes(f)) m[b.dataset.series].push(f);
		}
		return m;
	})()`, report))
	seen := map[string]string{}
	for s, fs := range fills {
		if len(fs) != 1 || fs[0] == "" || fs[0] == "none" {
			p.t.Errorf("%s: series %s painted %v", report, s, fs)
			continue
		}
		if other, ok := seen[fs[0]]; ok {
			p.t.Errorf("%s: series %s and %s share the colour %s", report, s, other, fs[0])
		}
		seen[fs[0]] = s
	}
}

// screenshot takes a full-page PNG, checks it and keeps it (in SHUKEI_TEST_ARTIFACTS too, if set).
func (p *page) screenshot(name string) {
	p.t.Helper()
	buf := run(p, "screenshot", chromedp.FullScreenshot(100))
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		p.t.Fatalf("screenshot %s is not a PNG: %v", name, err)
	}
	b := img.Bounds()
	if b.Dx() < 800 || b.Dx() > 4000 || b.Dy() < 600 || b.Dy() > 30000 {
		p.t.Errorf("screenshot %s is %dx%d", name, b.Dx(), b.Dy())
	}
	// The background is the commonest colour; the page must draw on a good part of it, and
	// the first series colour (a bar) must be there.
	counts := map[color.RGBA]int{}
	total, barPixels := 0, 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			counts[c]++
			total++
			if near(c, color.RGBA{0x4e, 0x79, 0xa7, 0xff}) || near(c, color.RGBA{0x3b, 0x7d, 0x3f, 0xff}) {
				barPixels++
			}
		}
	}
	var bg color.RGBA
	for c, k := range counts {
		if k > counts[bg] {
			bg = c
		}
	}
	other := 0
	for c, k := range counts {
		if !near(c, bg) {
			other += k
		}
	}
	if share := float64(other) / float64(total); share < 0.08 {
		p.t.Errorf("screenshot %s looks blank: %.1f%% of it differs from the background %v", name, 100*share, bg)
	}
	if barPixels < 200 {
		p.t.Errorf("screenshot %s shows no bar (%d pixels of a bar colour)", name, barPixels)
	}
	path := filepath.Join(p.t.TempDir(), name)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		p.t.Fatal(err)
	}
	if dir := os.Getenv("SHUKEI_TEST_ARTIFACTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			p.t.Fatal(err)
		}
		path = filepath.Join(dir, name)
		if err := os.WriteFile(path, buf, 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
	p.t.Logf("screenshot %s: %dx%d, %d bytes, %d bar pixels (sampled): %s", name, b.Dx(), b.Dy(), len(buf), barPixels, path)
}

func near(a, b color.RGBA) bool {
	d := func(x, y uint8) float64 { return math.Abs(float64(x) - float64(y)) }
	return d(a.R, b.R)+d(a.G, b.G)+d(a.B, b.B) < 24
}
