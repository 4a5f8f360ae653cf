package dashboards

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/query"
	"github.com/shukei/shukei/query/breakglass"
	"github.com/shukei/shukei/query/principal"
	"github.com/shukei/shukei/registry"
)

// Grafana reads Shukei's data only through the query service (promise 10): the Infinity data
// source (yesoreyeram-infinity-datasource 2.11.4, whose query model — type, source, parser,
// url, url_options, root_selector, columns — and settings — auth_method, allowedHosts,
// secureJsonData.bearerToken — the checks below follow: pkg/models/query.go and settings.go of
// the plugin at that tag) signs in as the principal grafana with a bearer token and runs named
// reports, like any other reader.
const (
	infinityType    = "yesoreyeram-infinity-datasource"
	infinityVersion = "2.11.4" // supports Grafana >= 9.5.15 (plugin.json); 3.x needs newer Grafanas
	reportsUID      = "shukei-reports"
	// queryBase is where Grafana reaches the query service in the Compose stack: the service
	// name and the port of its public listener (query.listen).
	queryBase = "http://query:8081"
	// grafanaPrincipal is the principal the grafana-token one-shot registers.
	grafanaPrincipal = "grafana"
	// reportsPath is the one API path a dashboard may call: a named report.
	reportsPath = "/v1/reports/"
)

// grafanaPurposes are the only purposes the dashboards' principal may be granted: the
// aggregate ones, whose reports hold no tenant id and no figure from fewer than k tenants.
var grafanaPurposes = []string{policy.ServiceImprovement.String(), policy.Marketing.String(), policy.ExternalAggregate.String()}

// infinityTarget is an Infinity query, as stored in a panel.
type infinityTarget struct {
	Type       string `json:"type"`
	Source     string `json:"source"`
	Parser     string `json:"parser"`
	Format     string `json:"format"`
	URL        string `json:"url"`
	URLOptions struct {
		Method  string     `json:"method"`
		Params  []keyValue `json:"params"`
		Headers []keyValue `json:"headers"`
		Data    string     `json:"data"`
	} `json:"url_options"`
	RootSelector    string           `json:"root_selector"`
	Columns         []infinityColumn `json:"columns"`
	ComputedColumns []infinityColumn `json:"computed_columns"`
	Filters         []any            `json:"filters"`
	FilterExpr      string           `json:"filterExpression"`
	SummarizeExpr   string           `json:"summarizeExpression"`
	UQL             string           `json:"uql"`
	GROQ            string           `json:"groq"`
}

type keyValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type infinityColumn struct {
	Selector string `json:"selector"`
	Text     string `json:"text"`
	Type     string `json:"type"` // string, number, timestamp, timestamp_epoch, timestamp_epoch_s, boolean
}

// reportQuery is one Infinity query of a dashboard, with the report it names.
type reportQuery struct {
	key    string // dashboard uid / panel title / refId
	d      dashboard
	p      panel
	tg     target
	report *query.Report
}

// reportsByName is the query service's catalogue: query.Reports(), which /openapi.json and
// GET /v1/reports also describe.
func reportsByName() map[string]*query.Report {
	out := map[string]*query.Report{}
	for _, r := range query.Reports() {
		out[r.Name] = r
	}
	return out
}

// requestURL is the URL Infinity requests for tg, with Grafana's variables still in it: the data
// source's URL in front of the query's unless the query's starts with it, then url_options'
// params added to the query string (pkg/infinity/request.go GetQueryURL).
func requestURL(base string, tg target) (*url.URL, error) {
	s := tg.URL
	if !strings.HasPrefix(s, base) {
		s = base + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	for _, p := range tg.URLOptions.Params {
		q.Add(p.Key, p.Value)
	}
	u.RawQuery = q.Encode()
	return u, nil
}

// checkInfinityTarget lists what is wrong with an Infinity query without running it: it must
// GET one named report of an aggregate purpose from the query service, as JSON, and read the
// answer's rows with columns that report has.
func checkInfinityTarget(d dashboard, p panel, tg target) (*query.Report, []string) {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if tg.Type != "json" {
		bad("type %q, want \"json\" (the query service answers JSON)", tg.Type)
	}
	if tg.Source != "url" {
		bad("source %q, want \"url\"", tg.Source)
	}
	if tg.Parser != "backend" {
		bad("parser %q, want \"backend\" (the plugin's backend reads the answer; root_selector and columns as checked here)", tg.Parser)
	}
	if tg.Format != "table" && tg.Format != "timeseries" {
		bad("format %q, want \"table\" or \"timeseries\"", tg.Format)
	}
	if m := strings.ToUpper(tg.URLOptions.Method); m != "" && m != http.MethodGet {
		bad("method %s: the reports are GET", tg.URLOptions.Method)
	}
	if len(tg.URLOptions.Headers) > 0 || tg.URLOptions.Data != "" {
		bad("headers or a body: the data source sends the grafana principal's token, and nothing else is needed")
	}
	if tg.UQL != "" || tg.GROQ != "" {
		bad("uql or groq set: read the rows with root_selector and columns")
	}
	if tg.RootSelector != "rows" {
		bad("root_selector %q, want \"rows\" (the report's answer: {report, columns, rows: [{column: value}], ...})", tg.RootSelector)
	}

	u, err := requestURL(queryBase, tg)
	if err != nil {
		return nil, append(probs, fmt.Sprintf("url %q: %v", tg.URL, err))
	}
	if u.Scheme+"://"+u.Host != queryBase || !strings.HasPrefix(u.Path, reportsPath) {
		return nil, append(probs, fmt.Sprintf("requests %s://%s%s: a dashboard reads only %s%s{report}", u.Scheme, u.Host, u.Path, queryBase, reportsPath))
	}
	name := strings.TrimPrefix(u.Path, reportsPath)
	rep, ok := reportsByName()[name]
	if !ok {
		return nil, append(probs, fmt.Sprintf("report %q is not one the query service has (query.Reports())", name))
	}
	q := u.Query()
	switch purposes := q["purpose"]; {
	case len(purposes) != 1:
		bad("purpose given %d times: declare exactly one", len(purposes))
	case !slices.Contains(grafanaPurposes, purposes[0]):
		bad("purpose %q: a dashboard reads only %s", purposes[0], strings.Join(grafanaPurposes, ", "))
	case purposes[0] != rep.Purpose:
		bad("purpose %q, but report %s serves %s", purposes[0], rep.Name, rep.Purpose)
	}
	if !slices.Contains(grafanaPurposes, rep.Purpose) {
		bad("report %s serves %s: a dashboard reads only reports of %s", rep.Name, rep.Purpose, strings.Join(grafanaPurposes, ", "))
	}
	params := map[string]bool{"purpose": true}
	for _, prm := range rep.Params {
		params[prm.Name] = true
	}
	for _, k := range sortedKeys(q) {
		if !params[k] {
			bad("parameter %q is not one of report %s (format, too, must stay JSON)", k, rep.Name)
		}
		if len(q[k]) > 1 && k != "purpose" {
			bad("parameter %q given %d times", k, len(q[k]))
		}
	}
	now := time.Date(2025, 6, 15, 12, 0, 0, 0, time.UTC)
	if from, to, err := panelRange(d, p, now); err != nil {
		bad("%v", err)
	} else if _, err := expandTarget(tg, from, to); err != nil {
		bad("%v", err)
	}

	cols := map[string]query.Column{}
	for _, c := range rep.Columns {
		cols[c.Name] = c
	}
	if len(tg.Columns) == 0 {
		bad("no columns: select the report's columns the panel shows")
	}
	for _, c := range append(slices.Clone(tg.Columns), tg.ComputedColumns...) {
		rc, ok := cols[c.Selector]
		if !ok {
			bad("column %q is not a column of report %s", c.Selector, rep.Name)
			continue
		}
		if want := infinityColumnType(rc.Type); c.Type != want {
			bad("column %s has type %q, want %q (the report's column is %s)", c.Selector, c.Type, want, rc.Type)
		}
	}
	if len(tg.ComputedColumns) > 0 || len(tg.Filters) > 0 || tg.FilterExpr != "" || tg.SummarizeExpr != "" {
		bad("computed columns, filters or a summary: show what the report answers; a new figure belongs in a report")
	}
	return rep, probs
}

// infinityColumnType is the Infinity column type that reads a report column of type t.
func infinityColumnType(t string) string {
	switch t {
	case "integer", "number":
		return "number"
	case "date", "time":
		return "timestamp"
	}
	return "string"
}

// reportQueries returns every Infinity query of every dashboard.
func reportQueries(t *testing.T) []reportQuery {
	t.Helper()
	dsType := map[string]string{}
	for _, d := range loadDatasources(t) {
		dsType[d.UID] = d.Type
		if d.IsDefault {
			dsType[""] = d.Type
		}
	}
	var out []reportQuery
	for _, file := range dashboardFiles(t) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				src := tg.Datasource
				if src == nil {
					src = p.Datasource
				}
				uid, _, err := datasourceRef(src)
				if err != nil || dsType[uid] != infinityType {
					continue // TestDashboards reports references that do not resolve
				}
				rep, _ := checkInfinityTarget(d, p, tg) // TestDashboards reports the problems
				out = append(out, reportQuery{key: d.UID + " / " + p.Title + " / " + tg.RefID, d: d, p: p, tg: tg, report: rep})
			}
		}
	}
	return out
}

// panelRange is the time range a panel queries at now: the dashboard's, or the panel's own
// relative time, moved back by its time shift.
func panelRange(d dashboard, p panel, now time.Time) (from, to time.Time, err error) {
	from, err = relativeTime(d.Time.From, now)
	if err == nil {
		to, err = relativeTime(d.Time.To, now)
	}
	if err == nil && p.TimeFrom != "" {
		to = now
		from, err = relativeTime("now-"+p.TimeFrom, now)
	}
	if err == nil && p.TimeShift != "" {
		var back time.Time
		if back, err = relativeTime("now-"+p.TimeShift, now); err == nil {
			from, to = from.Add(back.Sub(now)), to.Add(back.Sub(now))
		}
	}
	if err != nil {
		return from, to, fmt.Errorf("time range: %w", err)
	}
	if !from.Before(to) {
		return from, to, fmt.Errorf("time range %s to %s is empty", from, to)
	}
	return from, to, nil
}

// relativeTime reads the forms of Grafana's relative times these dashboards use: now and
// now-<n><unit>.
func relativeTime(s string, now time.Time) (time.Time, error) {
	if s == "now" {
		return now, nil
	}
	m := regexp.MustCompile(`^now-(\d+)([smhdw])$`).FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, fmt.Errorf("relative time %q: this test reads only now and now-<n><s|m|h|d|w>; extend relativeTime", s)
	}
	n, _ := strconv.Atoi(m[1])
	unit := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
	return now.Add(-time.Duration(n) * unit), nil
}

var (
	grafanaTimeVar = regexp.MustCompile(`\$\{(__from|__to)(?::([^}]*))?\}|\$(__from|__to)\b`)
	// leftover is whatever still looks like a Grafana variable after expansion.
	leftover = regexp.MustCompile(`\$\{[^}]*\}|\$\w+|\[\[\w+\]\]`)
)

// expandGrafanaVars replaces Grafana's global time variables as the browser does before the
// query reaches the plugin (the dashboards' timezone is UTC): ${__from} and ${__to} in
// milliseconds, and the :date formats (iso, seconds, or a moment.js pattern of YYYY, MM, DD,
// HH, mm, ss). Anything left that looks like a variable is an error: it would reach the query
// service as is (and be refused there, 400).
func expandGrafanaVars(s string, from, to time.Time) (string, error) {
	var bad error
	s = grafanaTimeVar.ReplaceAllStringFunc(s, func(m string) string {
		sm := grafanaTimeVar.FindStringSubmatch(m)
		t := from
		if sm[1]+sm[3] == "__to" {
			t = to
		}
		t = t.UTC()
		switch format := sm[2]; {
		case format == "":
			return strconv.FormatInt(t.UnixMilli(), 10)
		case format == "date" || format == "date:iso":
			return t.Format("2006-01-02T15:04:05.000Z")
		case format == "date:seconds":
			return strconv.FormatInt(t.Unix(), 10)
		case strings.HasPrefix(format, "date:"):
			layout := strings.TrimPrefix(format, "date:")
			if !regexp.MustCompile(`^(YYYY|MM|DD|HH|mm|ss|[-:T ./])+$`).MatchString(layout) {
				bad = fmt.Errorf("%s: this test knows the moment.js tokens YYYY, MM, DD, HH, mm and ss only", m)
				return m
			}
			return t.Format(strings.NewReplacer("YYYY", "2006", "MM", "01", "DD", "02", "HH", "15", "mm", "04", "ss", "05").Replace(layout))
		default:
			bad = fmt.Errorf("%s: this test knows only the date formats", m)
			return m
		}
	})
	if bad != nil {
		return s, bad
	}
	if left := leftover.FindAllString(s, -1); len(left) > 0 {
		return s, fmt.Errorf("not expanded: %s (a dashboard variable or a macro; the reports take only literal values and Grafana's time range)", strings.Join(left, ", "))
	}
	return s, nil
}

// expandTarget replaces Grafana's variables where the plugin's frontend does before the query
// reaches its backend (src/interpolate.ts): in the URL and in each parameter's value.
func expandTarget(tg target, from, to time.Time) (target, error) {
	var err error
	if tg.URL, err = expandGrafanaVars(tg.URL, from, to); err != nil {
		return tg, err
	}
	params := make([]keyValue, len(tg.URLOptions.Params))
	for i, p := range tg.URLOptions.Params {
		if p.Value, err = expandGrafanaVars(p.Value, from, to); err != nil {
			return tg, fmt.Errorf("parameter %s: %w", p.Key, err)
		}
		params[i] = p
	}
	tg.URLOptions.Params = params
	return tg, nil
}

// TestExpandGrafanaVars pins the substitution the request test relies on.
func TestExpandGrafanaVars(t *testing.T) {
	from := time.Date(2014, 11, 12, 11, 45, 26, 371e6, time.UTC)
	to := time.Date(2015, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct{ in, want, err string }{
		{in: "from=${__from:date:YYYY-MM-DD}&to=${__to:date:YYYY-MM-DD}", want: "from=2014-11-12&to=2015-01-02"},
		{in: "a=${__from}&b=$__to", want: "a=1415792726371&b=1420167845000"},
		{in: "a=${__from:date:seconds}&b=${__to:date}", want: "a=1415792726&b=2015-01-02T03:04:05.000Z"},
		{in: "a=${__to:date:YYYY-MM-DD HH:mm:ss}", want: "a=2015-01-02 03:04:05"},
		{in: "edition=${edition}", err: "${edition}"},
		{in: "edition=$edition", err: "$edition"},
		{in: "a=${__from:date:X}", err: "moment.js"},
		{in: "a=${__from:text}", err: "date formats"},
	} {
		got, err := expandGrafanaVars(tc.in, from, to)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one about %s", tc.in, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.in, err)
		case tc.err == "" && got != tc.want:
			t.Errorf("%s: got %s, want %s", tc.in, got, tc.want)
		}
	}
}

// policyK is the k-tenants threshold: the largest k of the policy versions in policy,
// so a dashboard is right under any of them.
func policyK(t *testing.T) int {
	t.Helper()
	files, err := filepath.Glob("../policy/v*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("policy files: %v (found %d)", err, len(files))
	}
	k := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := policy.Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		k = max(k, p.K)
	}
	if k < 2 {
		t.Fatalf("policy k = %d", k)
	}
	return k
}

// result is what a panel receives: the columns it selects and each row's values, rendered as
// text (null for a JSON null).
type result struct {
	cols []string
	rows [][]string
}

func (r result) String() string {
	var b strings.Builder
	b.WriteString(strings.Join(r.cols, " | "))
	for _, row := range r.rows {
		b.WriteString("\n  " + strings.Join(row, " | "))
	}
	return b.String()
}

func (r result) equal(o result) bool {
	return slices.Equal(r.cols, o.cols) && slices.EqualFunc(r.rows, o.rows, slices.Equal[[]string])
}

// reportsFixture is a query service built in-process the way `shukei query` builds it, over a
// freshly migrated database on the real ClickHouse, with the grafana principal registered.
type reportsFixture struct {
	conn  driver.Conn
	db    string
	srv   *httptest.Server
	token string
}

// newReportsFixture migrates a database of the test's own, declares the purpose readers,
// stores the seeded data and seals its weeks, registers the tenants, registers the grafana
// principal by running the Compose one-shot's own command, and starts the service on loopback.
func newReportsFixture(t *testing.T, grant principal.Principal, budget ledger.Budget) (*reportsFixture, map[string]result) {
	t.Helper()
	conn, cfg := servicetest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	master, err := pseudonym.ParseMasterKey(pseudonym.NewMasterKeyText())
	if err != nil {
		t.Fatal(err)
	}
	readers := migrations.Readers(db, master.Derive("test-query"))
	path, err := migrations.WriteUsers(servicetest.UsersDir(t), db, migrations.ReaderUsers(readers), []string{"127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	conns := map[string]driver.Conn{}
	for _, r := range readers {
		rc, err := migrations.OpenReader(ctx, cfg.ClickHouse.Options(), r, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		conns[r.Purpose] = rc
	}

	now := time.Now().UTC().Truncate(time.Second)
	want, tenants := seed(t, ctx, conn, db, now, budget)

	reg := registry.New(conn, db, master)
	for _, tn := range tenants {
		if _, err := reg.Add(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	store := principal.New(conn, db)
	token := registerGrafana(t, db)
	got, err := store.Get(ctx, grant.ID)
	if err != nil {
		t.Fatalf("the one-shot registered no principal %s: %v", grant.ID, err)
	}
	if got.Kind != grant.Kind || !sameSet(got.Purposes, grant.Purposes) || len(got.Roles) > 0 || !got.Expires.IsZero() || got.Disabled {
		t.Fatalf("the one-shot registered %+v, want kind %s, purposes %q and nothing else", got, grant.Kind, grant.Purposes)
	}
	log := audit.New(conn, db)
	var qcfg config.Config // max_rows, timeout and support_lookback; the others New's defaults
	qcfg.Query = config.Query{MaxRows: 1000, Timeout: 20 * time.Second, SupportLookback: 7 * 24 * time.Hour}
	srv, err := query.New(qcfg, query.Deps{
		Principals: store, Audit: log, Tickets: reg, Readers: conns, Database: db,
		K: 5, Budget: budget, YearBudget: ledger.Budget{Epsilon: 12 * budget.Epsilon, Delta: 12 * budget.Delta},
		BreakGlass: breakglass.New(conn, db, store, log),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &reportsFixture{conn: conn, db: db, srv: ts, token: token}, want
}

// registerGrafana runs the Compose one-shot's own command with the real binary — its arguments
// as docker-compose.yml has them, the token file moved into a temporary folder — twice, as two
// `docker compose up` do, against database db, and returns the token it wrote: a file of mode
// 0600, which the second run (--exist-ok) leaves as it was.
func registerGrafana(t *testing.T, db string) string {
	t.Helper()
	s := loadCompose(t).Services[tokenService]
	bin := filepath.Join(t.TempDir(), "shukei")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/shukei").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	file := filepath.Join(t.TempDir(), "query.token")
	args := slices.Clone(s.Command)
	for i, a := range args {
		switch {
		case i > 0 && args[i-1] == "--token-file":
			args[i] = file
		case strings.HasPrefix(a, "--token-file="):
			args[i] = "--token-file=" + file
		}
	}
	run := func() {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "SHUKEI_CLICKHOUSE_DATABASE="+db, "SHUKEI_LOG_LEVEL=warn")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("shukei %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if strings.Contains(string(out), "token (shown once)") {
			t.Errorf("shukei %s printed the token:\n%s", strings.Join(args, " "), out)
		}
	}
	read := func() string {
		t.Helper()
		st, err := os.Stat(file)
		if err != nil {
			t.Fatalf("token file: %v", err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("token file mode %v, want 0600", st.Mode().Perm())
		}
		b, err := os.ReadFile(file)
		if err != nil || len(strings.TrimSpace(string(b))) == 0 {
			t.Fatalf("token file: %v, %d bytes", err, len(b))
		}
		return string(b)
	}
	run()
	token := read()
	run()
	if again := read(); again != token {
		t.Error("the second run (--exist-ok) changed the token file")
	}
	return token
}

// get requests u (on the query service base) with the grafana principal's token, as the
// Infinity data source does, and returns the status, the audit sequence and the body.
func (f *reportsFixture) get(t *testing.T, u string) (int, uint64, []byte) {
	t.Helper()
	u = strings.Replace(u, queryBase, f.srv.URL, 1)
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	if h := resp.Header.Get("X-Shukei-Audit-Seq"); h != "" {
		if seq, err = strconv.ParseUint(h, 10, 64); err != nil {
			t.Errorf("X-Shukei-Audit-Seq %q: %v", h, err)
		}
	} else {
		// A refusal carries its record's sequence in the body.
		var e struct {
			Audit uint64 `json:"audit_seq"`
		}
		_ = json.Unmarshal(body, &e)
		seq = e.Audit
	}
	return resp.StatusCode, seq, body
}

// auditRecord is what the audit log holds about one request.
type auditRecord struct {
	principal, kind, purpose, report, decision string
}

func (f *reportsFixture) audit(t *testing.T, seq uint64) (auditRecord, bool) {
	t.Helper()
	var r auditRecord
	rows, err := f.conn.Query(context.Background(), "SELECT principal_id, principal_kind, purpose, report, decision FROM "+f.db+"_audit.audit_log WHERE seq = ?", seq)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		if err := rows.Scan(&r.principal, &r.kind, &r.purpose, &r.report, &r.decision); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return r, n == 1
}

// TestReportPanelsOnQueryService runs every report panel of every dashboard against the real
// query service, built in-process over a freshly migrated database on the real ClickHouse that
// holds events inserted into the event store (the materialised views fill the purpose marts),
// sealed weeks, releases and ledger entries. Each request is the one Infinity sends — the
// panel's URL and parameters, Grafana's time variables expanded for the dashboard's 30-day range,
// the token of the principal grafana with exactly the grant the Compose one-shot gives — and
// must be answered 200, audited as allowed under principal grafana, and hold the rows the seeded
// data says, read the way the panel reads them (root_selector rows, its columns). Every panel
// needs its expected result here, so a request that returns nothing cannot pass. Then the same
// principal asks for every other purpose, and is refused.
func TestReportPanelsOnQueryService(t *testing.T) {
	queries := reportQueries(t)
	if len(queries) == 0 {
		t.Fatal("no dashboard reads the query service's reports")
	}
	if k := policyK(t); k != 5 {
		t.Fatalf("the seeded data is built for k = 5, the policy's is %d: adjust seed", k)
	}
	grant := composeGrant(t, loadCompose(t))
	f, want := newReportsFixture(t, grant, ledger.Budget{Epsilon: 4, Delta: 1e-5})
	now := time.Now().UTC()

	ran := map[string]bool{}
	for _, q := range queries {
		ran[q.key] = true
		t.Run(q.key, func(t *testing.T) {
			if q.report == nil {
				t.Fatal("names no report of the query service (TestDashboards says why)")
			}
			from, to, err := panelRange(q.d, q.p, now)
			if err != nil {
				t.Fatal(err)
			}
			tg, err := expandTarget(q.tg, from, to)
			if err != nil {
				t.Fatal(err)
			}
			u, err := requestURL(queryBase, tg)
			if err != nil {
				t.Fatal(err)
			}
			expanded := u.String()
			status, seq, body := f.get(t, expanded)
			if status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", expanded, status, body)
			}
			if seq == 0 {
				t.Errorf("GET %s: no X-Shukei-Audit-Seq header", expanded)
			} else if rec, ok := f.audit(t, seq); !ok {
				t.Errorf("no audit record %d", seq)
			} else if want := (auditRecord{grafanaPrincipal, grant.Kind, q.report.Purpose, q.report.Name, audit.Allowed}); rec != want {
				t.Errorf("audit record %d = %+v, want %+v", seq, rec, want)
			}
			got, err := panelRows(q, body)
			if err != nil {
				t.Fatalf("%v\n%s", err, body)
			}
			exp, ok := want[q.key]
			if !ok {
				t.Fatalf("no expected result in seed for %q; it returned:\n%s", q.key, got)
			}
			if !got.equal(exp) {
				t.Errorf("GET %s returned\n%s\nwant\n%s", expanded, got, exp)
			}
		})
	}
	for _, key := range sortedKeys(want) {
		if !ran[key] {
			t.Errorf("expected a report panel %q: was the panel renamed or removed?", key)
		}
	}

	// (c) The dashboards' principal reads the aggregate purposes only: every report of every
	// other purpose is refused (403), and so is a report asked for under another purpose than
	// its own; each refusal is audited as denied under principal grafana.
	t.Run("grafana is refused every other purpose", func(t *testing.T) {
		var others []string
		for _, p := range policy.Purposes() {
			if !slices.Contains(grant.Purposes, p.String()) {
				others = append(others, p.String())
			}
		}
		if w := []string{"support", "follow_up", "interview_selection", "external_consented"}; !sameSet(others, w) {
			t.Errorf("purposes outside the grant: %q, want %q", others, w)
		}
		type req struct{ report, purpose string }
		var reqs []req
		for _, p := range others {
			n := 0
			for _, r := range query.Reports() {
				if r.Purpose == p {
					reqs, n = append(reqs, req{r.Name, p}), n+1
				}
			}
			if n == 0 { // a purpose without a report of its own: ask for the dashboards' ones
				reqs = append(reqs, req{"dp_releases", p}, req{"feature_ranking", p})
			}
		}
		reqs = append(reqs, req{"feature_ranking", "marketing"}, req{"contract_comparison", "service_improvement"}, req{"dp_budget", "marketing"})
		for _, r := range reqs {
			u := queryBase + reportsPath + r.report + "?" + url.Values{"purpose": {r.purpose}, "tenant": {"c1"}}.Encode()
			status, seq, body := f.get(t, u)
			if status != http.StatusForbidden {
				t.Errorf("GET %s as grafana: %d %s, want 403", u, status, body)
				continue
			}
			if rec, ok := f.audit(t, seq); !ok || rec.principal != grafanaPrincipal || rec.decision != audit.Denied || rec.purpose != r.purpose {
				t.Errorf("GET %s: audit record %d = %+v (found: %v), want a denial of principal %s for purpose %s", u, seq, rec, ok, grafanaPrincipal, r.purpose)
			}
		}
	})
}

// panelRows reads a report's JSON answer the way the panel's Infinity query does — the array
// at root_selector, each of its columns by selector — and checks that every value is of the
// column's type as the plugin's backend reads it (a number or null; a string; a timestamp in
// RFC 3339 or YYYY-MM-DD).
func panelRows(q reportQuery, body []byte) (result, error) {
	var answer map[string]json.RawMessage
	if err := json.Unmarshal(body, &answer); err != nil {
		return result{}, fmt.Errorf("answer is not a JSON object: %w", err)
	}
	var meta struct {
		Report string `json:"report"`
		K      int    `json:"k"`
	}
	if err := json.Unmarshal(body, &meta); err != nil {
		return result{}, err
	}
	if meta.Report != q.report.Name {
		return result{}, fmt.Errorf("answer of report %q, want %q", meta.Report, q.report.Name)
	}
	if q.report.Threshold && meta.K != 5 {
		return result{}, fmt.Errorf("aggregate report answered with k = %d, want 5", meta.K)
	}
	var rows []map[string]any
	if err := json.Unmarshal(answer[q.tg.RootSelector], &rows); err != nil {
		return result{}, fmt.Errorf("root_selector %q: not an array of objects: %v", q.tg.RootSelector, err)
	}
	var r result
	for _, c := range q.tg.Columns {
		r.cols = append(r.cols, c.Selector)
	}
	for i, row := range rows {
		var out []string
		for _, c := range q.tg.Columns {
			v, ok := row[c.Selector]
			if !ok {
				return r, fmt.Errorf("row %d has no %q", i, c.Selector)
			}
			s, err := cellText(v, c.Type)
			if err != nil {
				return r, fmt.Errorf("row %d, column %s: %w", i, c.Selector, err)
			}
			out = append(out, s)
		}
		r.rows = append(r.rows, out)
	}
	return r, nil
}

func cellText(v any, typ string) (string, error) {
	if v == nil {
		return "null", nil
	}
	switch typ {
	case "number":
		if f, ok := v.(float64); ok {
			return strconv.FormatFloat(f, 'g', -1, 64), nil
		}
	case "string":
		if s, ok := v.(string); ok {
			return s, nil
		}
	case "timestamp":
		if s, ok := v.(string); ok {
			for _, layout := range []string{time.RFC3339, time.DateOnly} {
				if _, err := time.Parse(layout, s); err == nil {
					return s, nil
				}
			}
		}
	}
	return "", fmt.Errorf("%v (%T) is not a %s", v, v, typ)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// seed inserts the test data and returns what each report panel must show with it, by panel
// key, and the tenants to register. The data is relative to now, the time the panels' range
// ends.
//
// Tenants c1..c7 are contracted, r1..r6 on trial, all of one edition. On the Wednesday of the
// last complete ISO week (the latest sealed one):
//   - board.create, used by c1..c6 and r1..r5, two users each, 3 uses an event
//   - chat.send, used by c1..c4 and r1..r2 for service_improvement and marketing, and by c5
//     and c6 for service_improvement only: 8 tenants there, 4 contracted and 2 trial ones in
//     marketing
//   - report.export, used by c1..c4, and by c5 and c6 for support only: 4 tenants in the marts
//   - the app home, opened by r6 only
//
// and two weeks before, board.create by c7 alone. Every complete week is then sealed with
// k = 5, as the aggregator's release step does: cells of fewer than 5 tenants (report.export,
// home, c7's week, chat.send in marketing) exist in no atom, so no panel shows them.
func seed(t *testing.T, ctx context.Context, conn driver.Conn, db string, now time.Time, budget ledger.Budget) (map[string]result, []registry.Tenant) {
	t.Helper()
	const (
		support            = 1 << policy.Support
		serviceImprovement = 1 << policy.ServiceImprovement
		marketing          = 1 << policy.Marketing
	)
	today := now.Truncate(24 * time.Hour)
	week := gate.Monday(now).AddDate(0, 0, -7) // the last complete ISO week
	wednesday := week.AddDate(0, 0, 2)
	old := wednesday.AddDate(0, 0, -14)

	type ev struct {
		tenant, status, category, item string
		purposes                       uint16
		at                             time.Time
		user                           string
		uses                           uint32
	}
	var evs []ev
	status := func(tenant string) string { return map[byte]string{'c': "contracted", 'r': "trial"}[tenant[0]] }
	add := func(tenants []string, category, item string, purposes uint16, at time.Time, users int, uses uint32) {
		for _, tn := range tenants {
			for u := range users {
				evs = append(evs, ev{tn, status(tn), category, item, purposes, at.Add(12 * time.Hour), fmt.Sprintf("u%d", u), uses})
			}
		}
	}
	tenants := func(prefix string, lo, hi int) []string {
		var out []string
		for i := lo; i <= hi; i++ {
			out = append(out, fmt.Sprintf("%s%d", prefix, i))
		}
		return out
	}
	both := uint16(serviceImprovement | marketing)
	add(append(tenants("c", 1, 6), tenants("r", 1, 5)...), "feature_use", "board.create", both, wednesday, 2, 3)
	add(append(tenants("c", 1, 4), tenants("r", 1, 2)...), "feature_use", "chat.send", both, wednesday, 1, 1)
	add(tenants("c", 5, 6), "feature_use", "chat.send", serviceImprovement, wednesday, 1, 1)
	add(tenants("c", 1, 4), "feature_use", "report.export", both, wednesday, 1, 1)
	add(tenants("c", 5, 6), "feature_use", "report.export", support, wednesday, 1, 1)
	add([]string{"r6"}, "app_access", "home", both, wednesday, 1, 0)
	add([]string{"c7"}, "feature_use", "board.create", both, old, 1, 3)

	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".events (event_id, tenant_id, occurred_at, ingested_at, category, schema_version, source, user_pseudonym, contract_status, edition, size_band, purposes, policy_version, app_id, feature_id, use_count, user_count)")
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		var app, feature string
		if e.category == "app_access" {
			app = e.item
		} else {
			feature = e.item
		}
		pseudonym := fmt.Sprintf("%-16.16s", e.tenant+":"+e.user)
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1)
		if err := b.Append(id, e.tenant, e.at, now, e.category, uint8(1), "dashboards-test", pseudonym, e.status, "standard", "m",
			e.purposes, uint16(1), app, feature, e.uses, uint32(0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatalf("insert events: %v", err)
	}
	var registered []registry.Tenant
	for _, tn := range append(tenants("c", 1, 7), tenants("r", 1, 6)...) {
		registered = append(registered, registry.Tenant{ID: tn, Status: status(tn), Edition: "standard", SizeBand: "m"})
	}

	// Seal every complete week as the release step does (week is the last of them).
	servicetest.SealWeeks(t, conn, db, 5)

	// Releases: one whose window starts in the range, one long before it.
	b, err = conn.PrepareBatch(ctx, "INSERT INTO "+db+"_external_aggregate.releases (release_id, plan_hash, window_start, window_end, metric, unit, dims, dim_names, dim_values, value, stddev, ci95_low, ci95_high, epsilon, delta, selected, selection_epsilon, selection_delta, l0, linf, mechanism, policy_version, released_at)")
	if err != nil {
		t.Fatal(err)
	}
	inRange, outOfRange := today.AddDate(0, 0, -2), today.AddDate(0, 0, -60)
	for _, w := range []time.Time{inRange, outOfRange} {
		if err := b.Append("rel-"+w.Format("20060102"), "plan", w, w.Add(24*time.Hour), "feature_adoption", "tenants", "feature=board.create",
			[]string{"feature"}, []string{"board.create"}, int64(11), 1.5, 8.06, 13.94, 0.5, 0.0, uint8(0), 0.0, 0.0, int64(4), int64(1), "laplace", uint16(1), w.Add(25*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatalf("insert releases: %v", err)
	}

	// Ledger: one charge last month, two this month, chained as the aggregator appends them.
	thisMonth := now.Format("2006-01")
	lastMonth := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -1).Format("2006-01")
	var entries []ledger.Entry
	for i, c := range []struct {
		period string
		eps    float64
	}{{lastMonth, 0.75}, {thisMonth, 0.5}, {thisMonth, 0.25}} {
		entries = append(entries, ledger.Entry{ReleaseID: fmt.Sprintf("rel-%d", i), Purpose: "external_aggregate", Period: c.period, Epsilon: c.eps, Delta: 1e-6,
			L0: 4, LInf: 1, WindowStart: today, WindowEnd: today.Add(24 * time.Hour), QueryHash: fmt.Sprintf("q%d", i), PolicyVersion: 1, At: now})
	}
	if _, err := ledger.New(conn, db).Append(ctx, "external_aggregate", entries); err != nil {
		t.Fatalf("append ledger: %v", err)
	}

	date := func(t time.Time) string { return t.Format(time.DateOnly) }
	return map[string]result{
		// The latest sealed week: board.create by 11 tenants (2 users, 2 events of 3 uses each),
		// chat.send by 8 (c5 and c6 count here, for service_improvement); report.export (4
		// tenants) and home (1) are under k. The week before holds no atom: no trend.
		"shukei-purposes / Feature ranking by distinct tenants (latest sealed week) / A": {
			cols: []string{"rank", "feature", "tenants", "users", "uses", "tenants_prev_week", "trend_pct"},
			rows: [][]string{
				{"1", "board.create", "11", "22", "66", "null", "null"},
				{"2", "chat.send", "8", "8", "8", "null", "null"},
			},
		},
		// 12 tenants active in the latest sealed week (c1..c6, r1..r6); c7's week has one
		// tenant, so no atom and no bar; the other weeks of the 8 are empty.
		"shukei-purposes / Weekly active tenants / A": {
			cols: []string{"week", "tenants"},
			rows: [][]string{{date(week), "12"}},
		},
		// Marketing over the 4 sealed weeks up to the latest: each figure a weekly mean (one
		// week with data: /4). Contracted c1..c6 (12 users; 20 events: c1..c4 four each, c5
		// and c6 two), trial r1..r6 (11 users; 13 events). board.create: 6 contracted, 5 trial
		// tenants. chat.send (4 contracted, 2 trial tenants in marketing), report.export (4)
		// and home (1) are under k.
		"shukei-purposes / Contracted vs trial adoption / A": {
			cols: []string{"feature", "status", "tenants", "active_tenants", "adoption_pct", "users", "uses", "uses_per_tenant"},
			rows: [][]string{
				{"*", "contracted", "1.5", "1.5", "100", "3", "20", "3.3"},
				{"*", "trial", "1.5", "1.5", "100", "2.8", "13", "2.2"},
				{"board.create", "contracted", "1.5", "1.5", "100", "3", "36", "6"},
				{"board.create", "trial", "1.3", "1.5", "83.3", "2.5", "30", "6"},
			},
		},
		"shukei-purposes / Weekly active tenants: contracted vs trial / A": {
			cols: []string{"week", "status", "tenants"},
			rows: [][]string{{date(week), "contracted", "6"}, {date(week), "trial", "6"}},
		},
		// The release whose window starts in the 30 days; not the one 60 days back.
		"shukei-purposes / Differentially private releases / A": {
			cols: []string{"window_start", "window_end", "period", "metric", "cell", "value", "ci95_low", "ci95_high", "stddev", "unit", "epsilon", "delta", "mechanism"},
			rows: [][]string{{date(inRange), date(inRange.Add(24 * time.Hour)), "window", "feature_adoption", "feature=board.create", "11", "8.06", "13.94", "1.5", "tenants", "0.5", "0", "laplace"}},
		},
		// This month's two charges, not last month's.
		"shukei-purposes / Privacy budget spent this month / A": {
			cols: []string{"month", "epsilon_spent", "delta_spent", "epsilon_left"},
			rows: [][]string{{thisMonth, "0.75", "2e-06", strconv.FormatFloat(budget.Epsilon-0.75, 'g', -1, 64)}},
		},
	}, registered
}
