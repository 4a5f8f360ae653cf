package dashboards

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/internal/servicetest"
	chm "github.com/shukei/shukei/schemas/clickhouse"
	"github.com/shukei/shukei/schemas/policy"
)

// clickHouseType is the data source type of the official ClickHouse plugin, whose v4 query
// model (editorType, queryType, format, rawSql) and macros the checks below follow.
const clickHouseType = "grafana-clickhouse-datasource"

// dbVariable is the dashboard variable that names the Shukei database; the purpose databases
// are <db>_<purpose>.
const dbVariable = "db"

// dashboardDatabases are the databases a dashboard may read (promise 10): the gated atoms of
// the aggregate purposes, which hold no tenant id and no row of fewer than k tenants, and the
// differentially private releases with their ledger. Never a purpose's own database (per-tenant
// rows), nor the internal one: those are served only by the query service, which checks each
// principal's grant and audits every read (DESIGN.md §5); Grafana does neither.
var dashboardDatabases = []string{"service_improvement_gated", "marketing_gated", "external_aggregate"}

var (
	// tableRef is what follows FROM or JOIN, unless it is a subquery.
	tableRef = regexp.MustCompile(`(?i)\b(?:FROM|JOIN)\s+([^\s(),][^\s(),]*)`)
	// leftover is whatever still looks like a Grafana variable or macro after expansion.
	leftover = regexp.MustCompile(`\$\{[^}]*\}|\$\w+|\[\[\w+\]\]`)
)

// checkClickHouseTarget lists what is wrong with a ClickHouse query without running it: the
// query model the plugin expects, macros and variables that expand, the databases read and
// the k-tenants threshold.
func checkClickHouseTarget(d dashboard, p panel, tg target, k int) []string {
	var probs []string
	if tg.EditorType != "sql" {
		probs = append(probs, fmt.Sprintf("editorType %q, want \"sql\" (raw SQL, which these tests run)", tg.EditorType))
	}
	if major, _, _ := strings.Cut(tg.PluginVersion, "."); atoi(major) < 4 {
		probs = append(probs, fmt.Sprintf("pluginVersion %q: set a v4 version, or the plugin migrates the query as a v3 one", tg.PluginVersion))
	}
	switch {
	case tg.Format == nil:
		probs = append(probs, "no format (0 time series, 1 table)")
	case *tg.Format == 0 && tg.QueryType != "timeseries", *tg.Format == 1 && tg.QueryType != "table":
		probs = append(probs, fmt.Sprintf("format %d with queryType %q: use 0 with \"timeseries\" or 1 with \"table\"", *tg.Format, tg.QueryType))
	case *tg.Format != 0 && *tg.Format != 1:
		probs = append(probs, fmt.Sprintf("format %d: use 0 (time series) or 1 (table)", *tg.Format))
	}
	sql := tg.RawSQL
	if strings.TrimSpace(sql) == "" {
		return append(probs, "empty rawSql")
	}
	if strings.Contains(sql, ";") {
		probs = append(probs, "';' in rawSql: one statement a query")
	}
	now := time.Date(2025, 6, 15, 12, 0, 0, 0, time.UTC)
	if from, to, err := panelRange(d, p, now); err != nil {
		probs = append(probs, err.Error())
	} else if _, err := expandSQL(sql, dashboardVars(d), from, to, time.Hour); err != nil {
		probs = append(probs, err.Error())
	}

	allowed := regexp.MustCompile(`^\$\{` + dbVariable + `\}_(` + strings.Join(dashboardDatabases, "|") + `)\.[a-z_]+$`)
	for _, m := range tableRef.FindAllStringSubmatch(sql, -1) {
		if !allowed.MatchString(m[1]) {
			probs = append(probs, fmt.Sprintf("reads %s: a dashboard reads only ${%s}_<database>.<table> of %s", m[1], dbVariable, strings.Join(dashboardDatabases, ", ")))
		}
	}
	if strings.Contains(strings.ToLower(sql), "tenant_id") {
		probs = append(probs, "names tenant_id: a dashboard reads no per-tenant row; the gated atoms already hold only segments of at least k tenants")
	}
	_ = k
	return probs
}

// checkDatabaseVariable: a dashboard that queries ClickHouse names the Shukei database through
// a constant variable (a constant cannot be set from the URL), whose value is the one the
// data source and the roles default to.
func checkDatabaseVariable(t *testing.T, d dashboard, ds []provisionedDatasource) {
	t.Helper()
	var v *variable
	for i := range d.Templating.List {
		if d.Templating.List[i].Name == dbVariable {
			v = &d.Templating.List[i]
		}
	}
	if v == nil {
		t.Errorf("queries ClickHouse but has no %q variable: name databases as ${%s}_<purpose>", dbVariable, dbVariable)
		return
	}
	if v.Type != "constant" {
		t.Errorf("variable %q is a %s; make it a constant, which viewers cannot change from the URL", dbVariable, v.Type)
	}
	value := dashboardVars(d)[dbVariable]
	if want := config.Default().ClickHouse.Database; value != want {
		t.Errorf("variable %q = %q, want %q (config's clickhouse.database default)", dbVariable, value, want)
	}
	for _, s := range ds {
		if s.Type == clickHouseType {
			if db, _ := s.JSONData["defaultDatabase"].(string); db != value {
				t.Errorf("variable %q = %q, but data source %s has defaultDatabase %q", dbVariable, value, s.UID, db)
			}
		}
	}
}

// dashboardVars returns each variable's default value, as a viewer who opens the dashboard
// gets it.
func dashboardVars(d dashboard) map[string]string {
	out := map[string]string{}
	for _, v := range d.Templating.List {
		switch {
		case v.Type == "constant" || v.Type == "textbox" && v.Current.Value == nil:
			if s, ok := v.Query.(string); ok {
				out[v.Name] = s
			}
		default:
			if s, ok := v.Current.Value.(string); ok {
				out[v.Name] = s
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

// expandSQL turns a query as stored in a dashboard into the SQL ClickHouse receives, in the
// two steps Grafana takes: the browser replaces dashboard variables (and the global $__from,
// $__to, $__interval, $__interval_ms), then the plugin's backend replaces its macros
// (grafana-clickhouse-datasource v4.14.1, pkg/macros, on top of the SDK's sqlutil defaults).
// Anything left that looks like a variable or macro is an error: it would reach ClickHouse
// as is.
func expandSQL(sql string, vars map[string]string, from, to time.Time, interval time.Duration) (string, error) {
	from, to = from.UTC(), to.UTC()
	global := map[string]string{
		"__from":        strconv.FormatInt(from.UnixMilli(), 10),
		"__to":          strconv.FormatInt(to.UnixMilli(), 10),
		"__interval":    formatInterval(interval),
		"__interval_ms": strconv.FormatInt(interval.Milliseconds(), 10),
	}
	var badFormat error
	sql = regexp.MustCompile(`\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)\]\]`).ReplaceAllStringFunc(sql, func(m string) string {
		sm := regexp.MustCompile(`^(?:\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)\]\])$`).FindStringSubmatch(m)
		name := sm[1] + sm[3] + sm[4]
		v, ok := vars[name]
		if !ok {
			v, ok = global[name]
		}
		if !ok {
			return m // not a variable: a macro, or an error reported below
		}
		if sm[2] != "" && sm[2] != "raw" {
			badFormat = fmt.Errorf("%s: this test knows only the raw format", m)
		}
		return v
	})
	if badFormat != nil {
		return sql, badFormat
	}

	seconds := func(d time.Duration) int64 { return int64(math.Max(d.Seconds(), 1)) }
	dateTime := func(t time.Time) string { return fmt.Sprintf("toDateTime(%d)", t.Unix()) }
	dateTime64 := func(t time.Time) string { return fmt.Sprintf("fromUnixTimestamp64Milli(%d)", t.UnixMilli()) }
	date := func(t time.Time) string { return fmt.Sprintf("toDate('%s')", t.Format("2006-01-02")) }
	between := func(col, lo, hi string) string { return fmt.Sprintf("%s >= %s AND %s <= %s", col, lo, col, hi) }
	type macro struct {
		args int // -1: any
		f    func(a []string) string
	}
	dateAndTime := func(a []string) string {
		return "(" + between(a[0], date(from), date(to)) + ") AND (" + between(a[1], dateTime(from), dateTime(to)) + ")"
	}
	timeInterval := func(a []string) string {
		return fmt.Sprintf("toStartOfInterval(toDateTime(%s), INTERVAL %d second)", a[0], seconds(interval))
	}
	timeIntervalMs := func(a []string) string {
		return fmt.Sprintf("toStartOfInterval(toDateTime64(%s, 3), INTERVAL %d millisecond)", a[0], max(interval.Milliseconds(), 1))
	}
	macros := map[string]macro{
		"fromTime":        {-1, func([]string) string { return dateTime(from) }},
		"toTime":          {-1, func([]string) string { return dateTime(to) }},
		"fromTime_ms":     {-1, func([]string) string { return dateTime64(from) }},
		"toTime_ms":       {-1, func([]string) string { return dateTime64(to) }},
		"timeFilter":      {1, func(a []string) string { return between(a[0], dateTime(from), dateTime(to)) }},
		"timeFilter_ms":   {1, func(a []string) string { return between(a[0], dateTime64(from), dateTime64(to)) }},
		"dateFilter":      {1, func(a []string) string { return between(a[0], date(from), date(to)) }},
		"dateTimeFilter":  {2, dateAndTime},
		"dt":              {2, dateAndTime},
		"timeInterval":    {1, timeInterval},
		"timeInterval_ms": {1, timeIntervalMs},
		"interval_s":      {-1, func([]string) string { return strconv.FormatInt(seconds(interval), 10) }},
		// The SDK's defaults the plugin does not replace.
		"interval":    {-1, func([]string) string { return formatInterval(interval) }},
		"interval_ms": {-1, func([]string) string { return strconv.FormatInt(interval.Milliseconds(), 10) }},
		"timeFrom":    {1, func(a []string) string { return fmt.Sprintf("%s >= '%s'", a[0], from.Format(time.RFC3339)) }},
		"timeTo":      {1, func(a []string) string { return fmt.Sprintf("%s <= '%s'", a[0], to.Format(time.RFC3339)) }},
	}
	names := make([]string, 0, len(macros))
	for n := range macros {
		names = append(names, n)
	}
	// Longer names first, as the SDK does, so $__timeFilter_ms is not read as $__timeFilter.
	sort.Slice(names, func(i, j int) bool {
		if len(names[i]) != len(names[j]) {
			return len(names[i]) > len(names[j])
		}
		return names[i] < names[j]
	})
	for _, name := range names {
		re := regexp.MustCompile(`\$__` + name + `\b`)
		for {
			loc := re.FindStringIndex(sql)
			if loc == nil {
				break
			}
			args, n, ok := macroArgs(sql[loc[1]:])
			if !ok {
				return sql, fmt.Errorf("$__%s: no closing bracket", name)
			}
			if m := macros[name]; m.args >= 0 && len(args) != m.args {
				return sql, fmt.Errorf("$__%s: %d arguments, want %d", name, len(args), m.args)
			}
			sql = sql[:loc[0]] + macros[name].f(args) + sql[loc[1]+n:]
		}
	}
	if left := leftover.FindAllString(sql, -1); len(left) > 0 {
		return sql, fmt.Errorf("not expanded: %s (an undefined variable, or a macro that grafana-clickhouse-datasource v4 does not have)", strings.Join(left, ", "))
	}
	return sql, nil
}

// macroArgs reads a bracketed, comma-separated argument list at the start of s, the way the
// plugin SDK does: it returns the trimmed arguments and the length read.
func macroArgs(s string) ([]string, int, bool) {
	if !strings.HasPrefix(s, "(") {
		return nil, 0, true
	}
	var args []string
	depth, start := 0, 1
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return append(args, strings.TrimSpace(s[start:i])), i + 1, true
			}
		case ',':
			if depth == 1 {
				args = append(args, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return nil, 0, false
}

// atoi is strconv.Atoi, with -1 for anything that is not a number.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// formatInterval renders a duration as Grafana's $__interval does: 30s, 5m, 1h, 1d.
func formatInterval(d time.Duration) string {
	for _, u := range []struct {
		unit string
		d    time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if d >= u.d {
			return fmt.Sprintf("%d%s", d/u.d, u.unit)
		}
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

// policyK is the k-tenants threshold: the largest k of the policy versions in schemas/policy,
// so a dashboard is right under any of them.
func policyK(t *testing.T) int {
	t.Helper()
	files, err := filepath.Glob("../schemas/policy/v*.yaml")
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

// chQuery is one ClickHouse query of a dashboard.
type chQuery struct {
	key string // dashboard uid / panel title / refId
	d   dashboard
	p   panel
	tg  target
}

// clickHouseQueries returns every query of every dashboard whose data source is ClickHouse.
func clickHouseQueries(t *testing.T) []chQuery {
	t.Helper()
	dsType := map[string]string{}
	for _, d := range loadDatasources(t) {
		dsType[d.UID] = d.Type
		if d.IsDefault {
			dsType[""] = d.Type
		}
	}
	var out []chQuery
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
				if err != nil || dsType[uid] != clickHouseType {
					continue // TestDashboards reports references that do not resolve
				}
				out = append(out, chQuery{key: d.UID + " / " + p.Title + " / " + tg.RefID, d: d, p: p, tg: tg})
			}
		}
	}
	return out
}

// TestExpandSQL pins the expansion to what grafana-clickhouse-datasource v4.14.1 sends.
func TestExpandSQL(t *testing.T) {
	from := time.Date(2014, 11, 12, 11, 45, 26, 371e6, time.UTC)
	to := time.Date(2015, 11, 12, 11, 45, 26, 371e6, time.UTC)
	vars := map[string]string{"db": "shukei", "edition": "pro"}
	for _, tc := range []struct{ in, want, err string }{
		{in: "SELECT 1 FROM ${db}_marketing.activity_daily WHERE edition = '$edition'",
			want: "SELECT 1 FROM shukei_marketing.activity_daily WHERE edition = 'pro'"},
		{in: "WHERE $__timeFilter(at)", want: "WHERE at >= toDateTime(1415792726) AND at <= toDateTime(1447328726)"},
		{in: "WHERE $__timeFilter_ms(at)", want: "WHERE at >= fromUnixTimestamp64Milli(1415792726371) AND at <= fromUnixTimestamp64Milli(1447328726371)"},
		{in: "WHERE $__dateFilter(day)", want: "WHERE day >= toDate('2014-11-12') AND day <= toDate('2015-11-12')"},
		{in: "WHERE $__dt(day, at)", want: "WHERE (day >= toDate('2014-11-12') AND day <= toDate('2015-11-12')) AND (at >= toDateTime(1415792726) AND at <= toDateTime(1447328726))"},
		{in: "WHERE at BETWEEN $__fromTime AND $__toTime", want: "WHERE at BETWEEN toDateTime(1415792726) AND toDateTime(1447328726)"},
		{in: "SELECT $__timeInterval(at) AS t, $__interval_s", want: "SELECT toStartOfInterval(toDateTime(at), INTERVAL 3600 second) AS t, 3600"},
		{in: "WHERE at >= toDateTime(intDiv(${__from}, 1000)) AND x = '$__interval'", want: "WHERE at >= toDateTime(intDiv(1415792726371, 1000)) AND x = '1h'"},
		{in: "WHERE $__timeFilter(toDateTime(day, 'UTC'))", want: "WHERE toDateTime(day, 'UTC') >= toDateTime(1415792726) AND toDateTime(day, 'UTC') <= toDateTime(1447328726)"},
		{in: "FROM ${other}_marketing.x", err: "${other}"},
		{in: "FROM [[db]]_marketing.x WHERE $__timeGroup(at, day)", err: "$__timeGroup"},
		{in: "WHERE $__timeFilter(a, b)", err: "2 arguments"},
		{in: "WHERE $__timeFilter(a", err: "closing bracket"},
		{in: "WHERE x IN (${db:singlequote})", err: "raw format"},
	} {
		got, err := expandSQL(tc.in, vars, from, to, time.Hour)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one about %s", tc.in, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.in, err)
		case tc.err == "" && got != tc.want:
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

// result is what a query returns, every value rendered as text.
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

// TestClickHouseDashboardQueries runs every ClickHouse query of every dashboard, expanded as
// Grafana would, against a freshly migrated database on the real server, holding events
// inserted into the event store (the materialised views fill the purpose marts), releases and
// ledger entries, and compares what each returns with what the data says it must. Every
// query needs its expected result here, so a query that returns nothing (a Date compared with
// a DateTime, say: 18.16 compares their raw numbers) cannot pass.
func TestClickHouseDashboardQueries(t *testing.T) {
	queries := clickHouseQueries(t)
	if len(queries) == 0 {
		t.Fatal("no dashboard queries ClickHouse")
	}
	k := policyK(t)
	if k != 5 {
		t.Fatalf("the seeded data is built for k = 5, the policy's is %d: adjust seed", k)
	}
	conn, cfg := servicetest.ClickHouse(t)
	db := cfg.ClickHouse.Database
	ctx := context.Background()
	if _, err := chm.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	want := seed(t, ctx, conn, db, now)
	// Every query runs as the user Grafana signs in as: the dashboards' reader, which may read
	// the aggregate purpose databases only. A panel reading anything else fails here.
	master, err := pseudonym.ParseMasterKey(pseudonym.NewMasterKeyText())
	if err != nil {
		t.Fatal(err)
	}
	dash := chm.DashboardsReader(db, master)
	path, err := chm.WriteUsers(servicetest.UsersDir(t), db, []chm.Reader{dash}, []string{"127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	conn, err = chm.OpenReader(ctx, cfg.ClickHouse.Options(), dash, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// The dashboards' user reads no per-tenant table (promise 10): not a purpose's own
	// database, not the internal one.
	for _, table := range []string{db + "_service_improvement.feature_daily", db + "_marketing.activity_daily", db + "_follow_up.tenant_daily",
		db + ".events", db + ".audit_log", db + ".principals"} {
		if _, err := run(ctx, conn, "SELECT count() FROM "+table); err == nil {
			t.Errorf("the dashboards' user reads %s", table)
		}
	}
	ran := map[string]bool{}
	for _, q := range queries {
		ran[q.key] = true
		t.Run(q.key, func(t *testing.T) {
			from, to, err := panelRange(q.d, q.p, now)
			if err != nil {
				t.Fatal(err)
			}
			vars := dashboardVars(q.d)
			vars[dbVariable] = db
			sql, err := expandSQL(q.tg.RawSQL, vars, from, to, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			got, err := run(ctx, conn, sql)
			if err != nil {
				t.Fatalf("%v\n%s", err, sql)
			}
			exp, ok := want[q.key]
			if !ok {
				t.Fatalf("no expected result in seed for %q; it returned:\n%s", q.key, got)
			}
			if !reflect.DeepEqual(got, exp) {
				t.Errorf("returned\n%s\nwant\n%s\nSQL:\n%s", got, exp, sql)
			}
		})
	}
	for _, key := range sortedKeys(want) {
		if !ran[key] {
			t.Errorf("expected a ClickHouse query %q: was the panel renamed or removed?", key)
		}
	}
}

// run executes sql and renders every value as text.
func run(ctx context.Context, conn driver.Conn, sql string) (result, error) {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return result{}, err
	}
	defer rows.Close()
	var r result
	types := rows.ColumnTypes()
	for _, c := range types {
		r.cols = append(r.cols, c.Name())
	}
	for rows.Next() {
		dest := make([]any, len(types))
		for i, c := range types {
			dest[i] = reflect.New(c.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return r, err
		}
		row := make([]string, len(dest))
		for i, v := range dest {
			row[i] = render(reflect.ValueOf(v).Elem())
		}
		r.rows = append(r.rows, row)
	}
	return r, rows.Err()
}

func render(v reflect.Value) string {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "NULL"
		}
		v = v.Elem()
	}
	switch x := v.Interface().(type) {
	case time.Time:
		return x.UTC().Format(time.DateTime)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	default:
		return fmt.Sprint(x)
	}
}

// seed inserts the test data and returns what each dashboard query must return with it, by
// query key. The data is relative to now, the time the queries' ranges end.
//
// Tenants c1..c7 are contracted, r1..r6 on trial. On the Wednesday of the last complete ISO
// week (the latest sealed one, inside every panel's range):
//   - board.create, used by c1..c6 and r1..r5, two users each, 3 uses an event
//   - chat.send, used by c1..c4 and r1..r2 for service_improvement and marketing, and by c5
//     and c6 for service_improvement only: 8 tenants there, 4 contracted and 2 trial ones in
//     marketing
//   - report.export, used by c1..c4, and by c5 and c6 for support only: 4 tenants in the marts
//   - the app home, opened by r6 only
//
// and two weeks before (inside the 30-day range) board.create by c7.
func seed(t *testing.T, ctx context.Context, conn driver.Conn, db string, now time.Time) map[string]result {
	t.Helper()
	const (
		support            = 1 << policy.Support
		serviceImprovement = 1 << policy.ServiceImprovement
		marketing          = 1 << policy.Marketing
	)
	today := now.Truncate(24 * time.Hour)
	// Only sealed weeks are read: the data lies in the last complete ISO week (its Wednesday),
	// and c7's in the week two before it.
	wednesday := gate.Monday(now).AddDate(0, 0, -5)
	old := wednesday.AddDate(0, 0, -14)

	type ev struct {
		tenant, status, category, item string
		purposes                       uint16
		at                             time.Time
		user                           string
		uses                           uint32
	}
	var evs []ev
	add := func(tenants []string, category, item string, purposes uint16, at time.Time, users int, uses uint32) {
		for _, tn := range tenants {
			status := map[byte]string{'c': "contracted", 'r': "trial"}[tn[0]]
			for u := range users {
				evs = append(evs, ev{tn, status, category, item, purposes, at.Add(12 * time.Hour), fmt.Sprintf("u%d", u), uses})
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

	// Seal every complete week as the release step does (gate.Compute, then what the first
	// seal of a week writes).
	for _, p := range gate.Purposes {
		first, _, err := gate.FirstWeek(ctx, conn, db, p.String())
		if err != nil {
			t.Fatal(err)
		}
		for w := first; !w.After(gate.Monday(now).AddDate(0, 0, -7)); w = w.AddDate(0, 0, 7) {
			atoms, err := gate.Compute(ctx, conn, db, p.String(), w, 5)
			if err != nil {
				t.Fatal(err)
			}
			if err := gate.Materialise(ctx, conn, db, gate.Seal{Purpose: p.String(), Week: w, K: 5, ID: "test", At: now, Atoms: atoms}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Releases: one whose window starts in the range, one long before it.
	b, err = conn.PrepareBatch(ctx, "INSERT INTO "+db+"_external_aggregate.releases (release_id, plan_hash, window_start, window_end, metric, unit, dims, dim_names, dim_values, value, stddev, ci95_low, ci95_high, epsilon, delta, selected, selection_epsilon, selection_delta, l0, linf, mechanism, policy_version, released_at)")
	if err != nil {
		t.Fatal(err)
	}
	inRange, outOfRange := today.AddDate(0, 0, -2), today.AddDate(0, 0, -60)
	for _, w := range []time.Time{inRange, outOfRange} {
		if err := b.Append("rel-"+w.Format("20060102"), "plan", w, w.Add(24*time.Hour), "feature_tenants", "tenants", "feature=board.create",
			[]string{"feature"}, []string{"board.create"}, int64(11), 1.5, 8.06, 13.94, 0.5, 0.0, uint8(0), 0.0, 0.0, int64(4), int64(1), "laplace", uint16(1), w.Add(25*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatalf("insert releases: %v", err)
	}

	// Ledger: two charges this month, one last month.
	b, err = conn.PrepareBatch(ctx, "INSERT INTO "+db+"_external_aggregate.budget_ledger (release_id, purpose, period, epsilon, delta, l0, linf, window_start, window_end, query_hash, policy_version, at, seq, prev_hash, hash)")
	if err != nil {
		t.Fatal(err)
	}
	thisMonth := now.Format("2006-01")
	lastMonth := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -1).Format("2006-01")
	for i, c := range []struct {
		period string
		eps    float64
	}{{lastMonth, 0.75}, {thisMonth, 0.5}, {thisMonth, 0.25}} {
		if err := b.Append(fmt.Sprintf("rel-%d", i), "external_aggregate", c.period, c.eps, 1e-6, int64(4), int64(1), now, now, "q", uint16(1), now,
			uint64(i+1), "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatalf("insert ledger: %v", err)
	}

	monday := wednesday.AddDate(0, 0, -((int(wednesday.Weekday()) + 6) % 7)).Format(time.DateTime)
	dt := func(t time.Time) string { return t.Format(time.DateTime) }
	return map[string]result{
		// The latest sealed week: report.export (4 tenants) and home (1) are under k; c5 and
		// c6 count for chat.send, not for report.export (support).
		"shukei-purposes / Feature ranking by distinct tenants (latest sealed week) / A": {
			cols: []string{"feature", "category", "tenants", "users", "uses"},
			rows: [][]string{
				{"board.create", "feature_use", "11", "22", "66"},
				{"chat.send", "feature_use", "8", "8", "8"},
			},
		},
		// c7's week has one tenant: no atom.
		"shukei-purposes / Weekly active tenants / A": {
			cols: []string{"time", "active_tenants"},
			rows: [][]string{{monday, "12"}},
		},
		// Segments of the week: contracted c1..c6, trial r1..r6 (c7's week has one tenant).
		// chat.send has 4 contracted and 2 trial tenants in marketing, report.export 4, home 1:
		// none is shown.
		"shukei-purposes / Contracted vs trial adoption / A": {
			cols: []string{"feature", "category", "contract_status", "tenants", "adoption_pct", "users", "uses"},
			rows: [][]string{
				{"board.create", "feature_use", "contracted", "6", "100", "12", "36"},
				{"board.create", "feature_use", "trial", "5", "83.3", "10", "30"},
			},
		},
		"shukei-purposes / Weekly active tenants: contracted vs trial / A": {
			cols: []string{"time", "contract_status", "active_tenants"},
			rows: [][]string{{monday, "contracted", "6"}, {monday, "trial", "6"}},
		},
		"shukei-purposes / Differentially private releases / A": {
			cols: []string{"window_start", "window_end", "metric", "dims", "value", "ci95_low", "ci95_high", "stddev", "unit", "epsilon", "delta", "mechanism"},
			rows: [][]string{{dt(inRange), dt(inRange.Add(24 * time.Hour)), "feature_tenants", "feature=board.create", "11", "8.06", "13.94", "1.5", "tenants", "0.5", "0", "laplace"}},
		},
		"shukei-purposes / Privacy budget spent this month / A": {
			cols: []string{"epsilon_spent", "delta_spent", "charges"},
			rows: [][]string{{"0.75", "2e-06", "2"}},
		},
	}
}
