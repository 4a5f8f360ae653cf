package query

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/query/breakglass"
	"github.com/shukei/shukei/registry"
)

// The reports users need first (docs/DESIGN.md §5), one purpose each.
var reports = []*Report{
	featureRanking(),
	activeTenants(),
	contractComparison(),
	statusActivity(),
	tenantSignals(),
	interviewCandidates(),
	supportTrace(),
	dpReleases(),
	dpBudget(),
}

func init() {
	for _, r := range reports {
		switch {
		case r.Threshold != (r.build != nil):
			panic("report " + r.Name + ": an aggregate report (Threshold) is built from atoms (build), and only it")
		case r.build != nil && (r.run != nil || r.weeks == nil):
			panic("report " + r.Name + ": a report built from atoms has weeks and no run of its own")
		case r.build != nil:
			r.run = gated(r.weeks, r.build)
		}
	}
}

// gated is the run of every aggregate report: it reads the sealed atoms of the weeks asked
// for through gate.Read — the one place k is applied — and hands them to build, which sees
// no ClickHouse connection, so nothing it returns can come from anything but whole atoms of
// at least k tenants.
func gated(weeks func(Args) (from, to time.Time), build func(Args, gate.Atoms) ([][]any, error)) func(context.Context, *Env, Args) ([][]any, error) {
	return func(ctx context.Context, e *Env, a Args) ([][]any, error) {
		from, to := weeks(a)
		at, err := gate.Read(ctx, e.Conn, e.DB+"_gated", from, to, e.K)
		var ns *gate.ErrNotSealed
		if errors.As(err, &ns) {
			return nil, badf("%v", err)
		}
		if err != nil {
			return nil, err
		}
		return build(a, at)
	}
}

// sums are whole atoms added up.
type sums struct{ tenants, users, uses uint64 }

// cellKey is where an atom is added: its week (zero unless by week), status, edition ("all"
// unless by edition) and feature.
type cellKey struct {
	week                     time.Time
	status, edition, feature string
}

// sumAtoms adds up every atom the request's filters keep (edition, and status when the report
// has it; keep decides the rest) into the cell key names: the one way an aggregate report
// combines atoms, whole.
func sumAtoms(a Args, at gate.Atoms, keep func(gate.Atom) bool, key func(gate.Atom) cellKey) map[cellKey]*sums {
	editions, statuses := a.List("edition"), a.List("status")
	_, hasStatus := a["status"]
	cells := map[cellKey]*sums{}
	for _, k := range at.List {
		if !keep(k) || len(editions) > 0 && !slices.Contains(editions, k.Edition) || hasStatus && !slices.Contains(statuses, k.Status) {
			continue
		}
		c := key(k)
		if !a.Bool("by_edition") {
			c.edition = "all"
		}
		if cells[c] == nil {
			cells[c] = &sums{}
		}
		cells[c].tenants += k.Tenants
		cells[c].users += k.Users
		cells[c].uses += k.Uses
	}
	return cells
}

// Reports returns every report, in catalogue order.
func Reports() []*Report { return reports }

func lookup(name string) (*Report, bool) {
	for _, r := range reports {
		if r.Name == name {
			return r, true
		}
	}
	return nil, false
}

// Parameters several reports share.
var (
	pAsOf = Param{Name: "as_of", Kind: Date, Default: "today",
		Doc: "last day (UTC) read: the period is whole ISO weeks ending with as_of's week, this week up to as_of"}
	pWeek = Param{Name: "week", Kind: Date, Default: "last_week",
		Doc: "any day of the ISO week (Monday to Sunday, UTC) reported; default the last complete week; a week not sealed yet is refused (400)"}
	pEditions = Param{Name: "edition", Kind: Ident, Multi: true,
		Doc: "only these editions (comma-separated); default: every edition"}
	pStatuses = Param{Name: "status", Kind: Enum, Multi: true, Values: []string{"trial", "beta", "contracted"},
		Doc: "only these contract statuses (comma-separated)"}
	pSizeBands = Param{Name: "size_band", Kind: Ident, Multi: true,
		Doc: "only these size bands (comma-separated); default: every size band"}
	pCategory = Param{Name: "category", Kind: Enum, Values: []string{"feature_use", "app_access"}, Default: "feature_use",
		Doc: "rank features (feature_use) or applications (app_access)"}
)

func day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// --- service_improvement -------------------------------------------------------------------

func featureRanking() *Report {
	return &Report{
		Name: "feature_ranking", Purpose: "service_improvement", Threshold: true,
		Title: "Feature ranking",
		Description: "Features (or applications) ranked by the distinct tenants that used them in one ISO week (Monday to Sunday), " +
			"with distinct users, uses, and the change in tenants from the week before; by edition or over all editions. " +
			"Built only from sealed atoms (feature × edition × week) of at least k tenants; a week is readable once sealed, some time " +
			"after it ends (aggregator.seal_after), and never changes afterwards. " +
			"Clause 3(1)-2: compare feature frequencies to decide what to improve.",
		Params: []Param{pWeek, pCategory, pEditions,
			{Name: "by_edition", Kind: Bool, Default: "true", Doc: "one ranking per edition (true) or one over all editions (false)"},
			{Name: "limit", Kind: Int, Min: 1, Max: 500, Default: "50", Doc: "features per ranking"}},
		Columns: []Column{
			{"edition", "string", "edition, or 'all'"},
			{"rank", "integer", "1 = used by the most tenants"},
			{"feature", "string", "feature id (or application id)"},
			{"tenants", "integer", "distinct tenants in the week"},
			{"users", "integer", "distinct users (pseudonymous, approximate) in the week"},
			{"uses", "integer", "uses (feature_use counts, or accesses)"},
			{"tenants_prev_week", "integer", "distinct tenants in the week before; null when no segment reached k"},
			{"trend_pct", "number", "week-over-week change in tenants, percent; null without a previous week"},
		},
		Chart: Chart{Kind: "bar", Label: "feature", Value: "tenants", Series: "edition"},
		weeks: featureWeeks,
		build: buildFeatureRanking,
	}
}

// featureWeeks: the week reported and the week before (its trend).
func featureWeeks(a Args) (from, to time.Time) {
	cur := gate.Monday(a.Time("week"))
	return cur.AddDate(0, 0, -7), cur
}

// buildFeatureRanking ranks the features of one week from its atoms, (feature, edition) of at
// least k tenants each (gate.Read); a cell over all editions sums whole atoms, so any cell —
// and any difference of two cells — is built from whole atoms of ≥ k.
func buildFeatureRanking(a Args, at gate.Atoms) ([][]any, error) {
	type cell struct{ edition, feature string }
	now, before := map[cell]*sums{}, map[cell]*sums{}
	for c, v := range sumAtoms(a, at, func(k gate.Atom) bool { return k.Category == a.Str("category") },
		func(k gate.Atom) cellKey { return cellKey{week: k.Week, edition: k.Edition, feature: k.Feature} }) {
		m := before
		if c.week.Equal(at.To) {
			m = now
		}
		m[cell{c.edition, c.feature}] = v
	}
	keys := make([]cell, 0, len(now))
	for k := range now {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		x, y := keys[i], keys[j]
		if x.edition != y.edition {
			return x.edition < y.edition
		}
		if now[x].tenants != now[y].tenants {
			return now[x].tenants > now[y].tenants
		}
		if now[x].users != now[y].users {
			return now[x].users > now[y].users
		}
		return x.feature < y.feature
	})
	var out [][]any
	rank, edition := 0, ""
	for _, k := range keys {
		if k.edition != edition {
			rank, edition = 0, k.edition
		}
		rank++
		if rank > a.Int("limit") {
			continue
		}
		c := now[k]
		var prevT, trend any
		if p := before[k]; p != nil {
			prevT = p.tenants
			trend = round1(100 * (float64(c.tenants) - float64(p.tenants)) / float64(p.tenants))
		}
		out = append(out, []any{k.edition, rank, k.feature, c.tenants, c.users, c.uses, prevT, trend})
	}
	return out, nil
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// activeTenants is the weekly activity of service_improvement: the dashboards' trend.
func activeTenants() *Report {
	return &Report{
		Name: "active_tenants", Purpose: "service_improvement", Threshold: true,
		Title: "Active tenants by week",
		Description: "Per ISO week, the distinct tenants that used any feature or application, their distinct users and " +
			"events; over all editions or by edition. Built only from sealed atoms (edition × week) of at least k tenants: an " +
			"edition below k in a week is left out of that week, never shown on its own. Clause 3(1)-2.",
		Params: []Param{pWeek, pWeeks(8, 26), pEditions,
			{Name: "by_edition", Kind: Bool, Default: "false", Doc: "one row per edition (true) or one over all editions (false)"}},
		Columns: activityColumns(Column{"edition", "string", "edition, or 'all'"}),
		Chart:   Chart{Kind: "bar", Label: "week", Value: "tenants", Series: "edition"},
		weeks:   periodWeeks,
		build:   func(a Args, at gate.Atoms) ([][]any, error) { return buildActivity(a, at, false) },
	}
}

// activityColumns are the weekly activity reports' columns: the week, the segment, and what
// its tenants did.
func activityColumns(segment ...Column) []Column {
	return append(append([]Column{{"week", "date", "the ISO week's Monday (UTC)"}}, segment...),
		Column{"tenants", "integer", "distinct active tenants in the week"},
		Column{"users", "integer", "distinct users in the week (pseudonymous; each tenant's own)"},
		Column{"events", "integer", "events in the week"})
}

// periodWeeks: the weeks of the period, ending with week.
func periodWeeks(a Args) (from, to time.Time) {
	to = gate.Monday(a.Time("week"))
	return to.AddDate(0, 0, -7*(a.Int("weeks")-1)), to
}

func pWeeks(def, most int) Param {
	return Param{Name: "weeks", Kind: Int, Min: 1, Max: most, Default: fmt.Sprint(def), Doc: "length of the period in weeks, ending with week"}
}

// buildActivity sums the all-activity atoms of each week (by status for marketing): whole
// atoms of at least k tenants, one segment per tenant and week, so a sum over editions (or
// statuses) counts each tenant once.
func buildActivity(a Args, at gate.Atoms, byStatus bool) ([][]any, error) {
	type key = cellKey
	cells := sumAtoms(a, at, func(k gate.Atom) bool { return k.Feature == gate.All },
		func(k gate.Atom) cellKey { return cellKey{week: k.Week, status: k.Status, edition: k.Edition} })
	keys := make([]key, 0, len(cells))
	for k := range cells {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		x, y := keys[i], keys[j]
		if !x.week.Equal(y.week) {
			return x.week.Before(y.week)
		}
		if x.status != y.status {
			return statusOrder(x.status) < statusOrder(y.status)
		}
		return x.edition < y.edition
	})
	out := make([][]any, 0, len(keys))
	for _, k := range keys {
		c := cells[k]
		if byStatus {
			out = append(out, []any{k.week, k.status, k.edition, c.tenants, c.users, c.uses})
		} else {
			out = append(out, []any{k.week, k.edition, c.tenants, c.users, c.uses})
		}
	}
	return out, nil
}

// --- marketing -----------------------------------------------------------------------------

// statusActivity is the weekly activity of marketing by contract status: the dashboards' trend.
func statusActivity() *Report {
	return &Report{
		Name: "status_activity", Purpose: "marketing", Threshold: true,
		Title: "Active tenants by status and week",
		Description: "Per ISO week and contract status, the distinct active tenants, their distinct users and events; over all " +
			"editions or by edition. Built only from sealed atoms (status × edition × week) of at least k tenants, each tenant in its " +
			"latest status and edition of the week. Clause 3(1)-3.",
		Params: []Param{pWeek, pWeeks(8, 26), pEditions,
			{Name: "status", Kind: Enum, Multi: true, Values: []string{"trial", "beta", "contracted"}, Default: "trial,beta,contracted",
				Doc: "contract statuses shown"},
			{Name: "by_edition", Kind: Bool, Default: "false", Doc: "split each status by edition"}},
		Columns: activityColumns(Column{"status", "string", "contract status (each tenant's latest in the week)"},
			Column{"edition", "string", "edition, or 'all'"}),
		Chart: Chart{Kind: "bar", Label: "week", Value: "tenants", Series: "status"},
		weeks: periodWeeks,
		build: func(a Args, at gate.Atoms) ([][]any, error) { return buildActivity(a, at, true) },
	}
}

func contractComparison() *Report {
	return &Report{
		Name: "contract_comparison", Purpose: "marketing", Threshold: true,
		Title: "Contracted vs trial",
		Description: "Adoption and activity of contracted, trial and beta tenants, per feature (or application) and " +
			"overall (feature '*'), over whole ISO weeks ending with week: weekly means of tenants and users, total uses. " +
			"Built only from sealed atoms (status × edition × feature × week) of at least k tenants, each tenant in its latest status " +
			"and edition of each week; every week of the period must be sealed. Clause 3(1)-3: compare contracted with not-contracted customers.",
		Params: []Param{pWeek,
			{Name: "weeks", Kind: Int, Min: 1, Max: 13, Default: "4", Doc: "length of the period in weeks, ending with week"},
			pCategory, pEditions,
			{Name: "status", Kind: Enum, Multi: true, Values: []string{"trial", "beta", "contracted"}, Default: "trial,beta,contracted",
				Doc: "contract statuses compared"},
			{Name: "by_edition", Kind: Bool, Default: "false", Doc: "split each status by edition"},
			{Name: "limit", Kind: Int, Min: 1, Max: 500, Default: "20", Doc: "features shown (those adopted by the most tenants)"}},
		Columns: []Column{
			{"status", "string", "contract status (each tenant's latest in each week)"},
			{"edition", "string", "edition, or 'all'"},
			{"feature", "string", "feature id, or '*' for all activity"},
			{"tenants", "number", "distinct tenants a week that used the feature, mean over the period's weeks (for '*': active tenants)"},
			{"active_tenants", "number", "distinct active tenants of the segment a week, mean over the weeks"},
			{"adoption_pct", "number", "tenants / active_tenants, percent (of tenant-weeks)"},
			{"users", "number", "distinct users a week (pseudonymous), mean over the weeks"},
			{"uses", "integer", "uses over the period (for '*': events)"},
			{"uses_per_tenant", "number", "uses per tenant and week"},
		},
		Chart: Chart{Kind: "bar", Label: "feature", Value: "adoption_pct", Series: "status"},
		weeks: periodWeeks,
		build: buildContractComparison,
	}
}

// buildContractComparison compares the segments over the period from its atoms, (status,
// edition, feature) × week of at least k tenants each (gate.Read): every figure sums whole
// atoms, and a period selects whole weeks, so (week w, 2 weeks) − (week w−1, 1 week) is week
// w's atoms — each of ≥ k tenants — never one tenant's usage. Counts of tenants and users are
// per week (a tenant active in three weeks counts in each), so the period's figures are the
// weekly means.
func buildContractComparison(a Args, at gate.Atoms) ([][]any, error) {
	type key struct{ status, edition, feature string }
	cells := map[key]*sums{}
	for c, v := range sumAtoms(a, at, func(k gate.Atom) bool { return k.Feature == gate.All || k.Category == a.Str("category") },
		func(k gate.Atom) cellKey { return cellKey{status: k.Status, edition: k.Edition, feature: k.Feature} }) {
		cells[key{c.status, c.edition, c.feature}] = v
	}
	// The features shown: those adopted by the most tenant-weeks over every segment shown.
	total := map[string]uint64{}
	for k, c := range cells {
		if k.feature != gate.All {
			total[k.feature] += c.tenants
		}
	}
	features := make([]string, 0, len(total))
	for f := range total {
		features = append(features, f)
	}
	sort.Slice(features, func(i, j int) bool {
		if total[features[i]] != total[features[j]] {
			return total[features[i]] > total[features[j]]
		}
		return features[i] < features[j]
	})
	if len(features) > a.Int("limit") {
		features = features[:a.Int("limit")]
	}
	features = append([]string{gate.All}, features...)
	var segs []key
	for k := range cells {
		if k.feature == gate.All {
			segs = append(segs, k)
		}
	}
	sort.Slice(segs, func(i, j int) bool {
		if segs[i].status != segs[j].status {
			return statusOrder(segs[i].status) < statusOrder(segs[j].status)
		}
		return segs[i].edition < segs[j].edition
	})
	weeks := float64(at.Weeks())
	var out [][]any
	for _, f := range features {
		for _, s := range segs {
			c := cells[key{s.status, s.edition, f}]
			if c == nil {
				continue
			}
			active := cells[s].tenants
			out = append(out, []any{s.status, s.edition, f, round1(float64(c.tenants) / weeks), round1(float64(active) / weeks),
				round1(100 * float64(c.tenants) / float64(active)), round1(float64(c.users) / weeks), c.uses,
				round1(float64(c.uses) / float64(c.tenants))})
		}
	}
	return out, nil
}

func statusOrder(s string) int {
	return slices.Index([]string{"contracted", "trial", "beta", "terminated"}, s)
}

// --- follow_up -----------------------------------------------------------------------------

func tenantSignals() *Report {
	return &Report{
		Name: "tenant_signals", Purpose: "follow_up",
		Title: "Follow-up signals",
		Description: "One row per trial or contracted tenant: last activity, active days, features adopted and users over the four " +
			"ISO weeks up to as_of, the events of as_of's week against the week before (per day, so a week in progress compares " +
			"fairly), and the signal and channel that follow. No per-user rows. Clause 3(1)-4: choose the channel, content " +
			"and timing of follow-up.",
		Params: []Param{pAsOf,
			{Name: "status", Kind: Enum, Multi: true, Values: []string{"trial", "beta", "contracted"}, Default: "trial,contracted",
				Doc: "contract statuses followed up"},
			pEditions, pSizeBands,
			{Name: "signal", Kind: Enum, Multi: true, Values: signals, Doc: "only tenants with these signals"},
			{Name: "limit", Kind: Int, Min: 1, Max: 5000, Default: "100", Doc: "tenants returned (most urgent first)"}},
		Columns: []Column{
			{"tenant_id", "string", "tenant"},
			{"status", "string", "contract status now (the registry), not at event time"},
			{"edition", "string", "edition"},
			{"size_band", "string", "size band"},
			{"last_active", "time", "last event in the four weeks"},
			{"active_days", "integer", "days with activity in the four weeks"},
			{"features_adopted", "integer", "distinct features used in the four weeks"},
			{"users", "integer", "distinct users in the four weeks (approximate)"},
			{"events_this_week", "integer", "events in as_of's week up to as_of"},
			{"events_last_week", "integer", "events in the week before"},
			{"trend_pct", "number", "change of events per day, this week over last; null when last week was empty"},
			{"signal", "string", "dormant (nothing in the last 7 days), declining, new (first seen this week), rising or steady"},
			{"suggestion", "string", "channel and content that fit the signal and status"},
		},
		Chart: Chart{Kind: "table"},
		run:   runTenantSignals,
	}
}

var signals = []string{"dormant", "declining", "new", "rising", "steady"}

func suggestion(status, signal string) string {
	switch {
	case signal == "dormant" && status == "trial":
		return "email: getting-started guide for the features similar tenants adopt first"
	case signal == "dormant":
		return "customer-success call: ask what stopped them"
	case signal == "declining" && status == "trial":
		return "in-app message: offer an onboarding session this week"
	case signal == "declining":
		return "customer-success check-in within a week"
	case signal == "rising" && status == "trial":
		return "sales call: propose the contract before the trial ends"
	case signal == "rising":
		return "newsletter: the next edition's features"
	case signal == "new":
		return "welcome email with the first three steps"
	}
	return "newsletter"
}

// tenantFilters renders the per-tenant reports' filters as HAVING conditions. The status is
// not among them: it is each tenant's current one (currentStatus), not the one at event time.
func tenantFilters(a Args) (having []string, args []any) {
	having, args = []string{"1"}, []any{}
	if l := a.List("edition"); len(l) > 0 {
		having, args = append(having, "has(?, edition)"), append(args, l)
	}
	if l := a.List("size_band"); len(l) > 0 {
		having, args = append(having, "has(?, size_band)"), append(args, l)
	}
	return having, args
}

// currentStatus returns every registered tenant's contract status now (the registry): a
// tenant terminated today is not offered to sales or interviews tomorrow, whatever its events
// said, and a deleted tenant is not offered at all.
func currentStatus(ctx context.Context, e *Env) (map[string]string, error) {
	if e.Tickets == nil {
		return nil, errors.New("the per-tenant reports need the registry (each tenant's current status), which this service does not have")
	}
	ts, err := e.Tickets.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the tenants' current status: %w", err)
	}
	out := make(map[string]string, len(ts))
	for _, t := range ts {
		out[t.ID] = string(t.Status)
	}
	return out, nil
}

func runTenantSignals(ctx context.Context, e *Env, a Args) ([][]any, error) {
	asOf := a.Time("as_of")
	this := gate.Monday(asOf)
	last, from := this.AddDate(0, 0, -7), this.AddDate(0, 0, -21)
	elapsed := asOf.Sub(this).Hours()/24 + 1 // days of this week up to as_of
	having, args := tenantFilters(a)
	current, err := currentStatus(ctx, e)
	if err != nil {
		return nil, err
	}
	rows, err := e.Conn.Query(ctx, `
SELECT tenant_id, argMaxMerge(contract_status) AS status, argMaxMerge(edition) AS edition, argMaxMerge(size_band) AS size_band,
       maxMerge(last_seen) AS last_active, uniqExactMerge(active_days) AS days,
       length(arrayFilter(x -> x != '', groupUniqArrayMerge(features))) AS features,
       uniqMerge(users) AS users,
       sumMergeIf(events, week = toDate(?)) AS events_this,
       sumMergeIf(events, week = toDate(?)) AS events_last,
       sumMergeIf(events, week < toDate(?)) AS events_before
FROM `+e.Mart("tenant_weekly")+`
WHERE week >= toDate(?) AND week <= toDate(?)
GROUP BY tenant_id
HAVING `+strings.Join(having, " AND "),
		append([]any{day(this), day(last), day(this), day(from), day(this)}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	type row struct {
		vals    []any
		urgency int
		change  float64
	}
	var all []row
	want := a.List("signal")
	for rows.Next() {
		var id, status, edition, band string
		var lastActive time.Time
		var days, features, users, evThis, evLast, evBefore uint64
		if err := rows.Scan(&id, &status, &edition, &band, &lastActive, &days, &features, &users, &evThis, &evLast, &evBefore); err != nil {
			return nil, err
		}
		var ok bool
		if status, ok = current[id]; !ok || !slices.Contains(a.List("status"), status) {
			continue
		}
		var trend any
		change := 0.0
		if evLast > 0 {
			change = 100 * (float64(evThis)/elapsed/(float64(evLast)/7) - 1)
			trend = round1(change)
		}
		signal := "steady"
		switch {
		case lastActive.Before(asOf.Add(24*time.Hour).AddDate(0, 0, -7)):
			signal = "dormant"
		case evBefore == 0:
			signal = "new"
		case evLast > 0 && change <= -25:
			signal = "declining"
		case evLast == 0 || change >= 25:
			signal = "rising"
		}
		if len(want) > 0 && !slices.Contains(want, signal) {
			continue
		}
		all = append(all, row{
			vals: []any{id, status, edition, band, lastActive.UTC(), days, features, users, evThis, evLast, trend, signal,
				suggestion(status, signal)},
			urgency: slices.Index(signals, signal), change: change})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Most urgent first: dormant, then declining (steepest drop first), new, rising, steady.
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].urgency != all[j].urgency {
			return all[i].urgency < all[j].urgency
		}
		if all[i].change != all[j].change {
			return all[i].change < all[j].change
		}
		return all[i].vals[0].(string) < all[j].vals[0].(string)
	})
	out := make([][]any, 0, min(len(all), a.Int("limit")))
	for i := 0; i < len(all) && i < a.Int("limit"); i++ {
		out = append(out, all[i].vals)
	}
	return out, nil
}

// --- interview_selection -------------------------------------------------------------------

func interviewCandidates() *Report {
	return &Report{
		Name: "interview_candidates", Purpose: "interview_selection",
		Title: "Interview candidates",
		Description: "Tenants ranked by usage profile over whole ISO weeks up to as_of: breadth (features used), depth (active " +
			"users) and regularity (active days). Filters narrow by edition, size band, status and features used. No per-user " +
			"rows. Clause 3(1)-5: pick the customers to interview.",
		Params: []Param{pAsOf,
			{Name: "weeks", Kind: Int, Min: 1, Max: 13, Default: "4", Doc: "length of the period in weeks, ending with as_of's week"},
			pEditions, pSizeBands,
			{Name: "status", Kind: Enum, Multi: true, Values: []string{"trial", "beta", "contracted"}, Default: "trial,beta,contracted",
				Doc: "contract statuses considered"},
			{Name: "feature", Kind: Ident, Multi: true, Doc: "only tenants that used every one of these features"},
			{Name: "limit", Kind: Int, Min: 1, Max: 1000, Default: "20", Doc: "candidates returned"}},
		Columns: []Column{
			{"rank", "integer", "1 = best fit"},
			{"tenant_id", "string", "tenant"},
			{"status", "string", "contract status now (the registry), not at event time"},
			{"edition", "string", "edition"},
			{"size_band", "string", "size band"},
			{"features_used", "integer", "distinct features used"},
			{"active_users", "integer", "distinct users (approximate)"},
			{"active_days", "integer", "days with activity"},
			{"events", "integer", "events"},
			{"customizations", "integer", "most customisations reported"},
			{"score", "number", "features_used × log2(1 + active_users) × active_days / days in the period"},
		},
		Chart: Chart{Kind: "bar", Label: "tenant_id", Value: "score", Series: "edition"},
		run:   runInterviewCandidates,
	}
}

func runInterviewCandidates(ctx context.Context, e *Env, a Args) ([][]any, error) {
	asOf := a.Time("as_of")
	to := gate.Monday(asOf)
	from := to.AddDate(0, 0, -7*(a.Int("weeks")-1))
	days := asOf.Sub(from).Hours()/24 + 1
	having, args := tenantFilters(a)
	if l := a.List("feature"); len(l) > 0 {
		having, args = append(having, "hasAll(used, ?)"), append(args, l)
	}
	current, err := currentStatus(ctx, e)
	if err != nil {
		return nil, err
	}
	rows, err := e.Conn.Query(ctx, `
SELECT tenant_id, argMaxMerge(contract_status) AS status, argMaxMerge(edition) AS edition, argMaxMerge(size_band) AS size_band,
       groupUniqArrayMerge(features) AS used, length(arrayFilter(x -> x != '', used)) AS features_used,
       uniqMerge(users) AS active_users, uniqExactMerge(active_days) AS days, sumMerge(events) AS events,
       maxMerge(customizations) AS customizations
FROM `+e.Mart("tenant_weekly")+`
WHERE week >= toDate(?) AND week <= toDate(?)
GROUP BY tenant_id
HAVING `+strings.Join(having, " AND "), append([]any{day(from), day(to)}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	type cand struct {
		vals  []any
		score float64
	}
	var all []cand
	for rows.Next() {
		var id, status, edition, band string
		var used []string
		var features, users, active, events uint64
		var custom uint32
		if err := rows.Scan(&id, &status, &edition, &band, &used, &features, &users, &active, &events, &custom); err != nil {
			return nil, err
		}
		var ok bool
		if status, ok = current[id]; !ok || !slices.Contains(a.List("status"), status) {
			continue
		}
		score := round3(float64(features) * math.Log2(1+float64(users)) * float64(active) / days)
		all = append(all, cand{vals: []any{id, status, edition, band, features, users, active, events, custom, score}, score: score})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].score != all[j].score {
			return all[i].score > all[j].score
		}
		return all[i].vals[0].(string) < all[j].vals[0].(string)
	})
	var out [][]any
	for i := 0; i < len(all) && i < a.Int("limit"); i++ {
		out = append(out, append([]any{i + 1}, all[i].vals...))
	}
	return out, nil
}

// --- support -------------------------------------------------------------------------------

func supportTrace() *Report {
	return &Report{
		Name: "support_trace", Purpose: "support",
		Title: "Support trace",
		Description: "The event trace of one tenant around a time (operations with their result codes, application access, " +
			"client environment), with pseudonymous users, only while a support ticket of that tenant is open and only " +
			"from a bounded time before the ticket was opened. Clause 3(1)-1: find the operation that caused a failure.",
		Params: []Param{
			{Name: "tenant", Kind: Ident, Required: true, Doc: "the tenant whose ticket is open"},
			{Name: "ticket", Kind: Ticket, Doc: "the open support ticket of that tenant (required: without one the request is refused, 403)"},
			{Name: "breakglass", Kind: Ticket, Doc: "instead of a ticket: an approved, open break-glass grant of this principal for that tenant (clause 3(2)-5..7)"},
			{Name: "at", Kind: Time, Default: "now", Doc: "centre of the trace (RFC 3339)"},
			{Name: "around_minutes", Kind: Int, Min: 1, Max: 1440, Default: "60", Doc: "minutes before and after at"},
			{Name: "category", Kind: Enum, Multi: true, Values: []string{"operation", "app_access", "client_env"}, Doc: "only these categories"},
			{Name: "limit", Kind: Int, Min: 1, Max: 5000, Default: "1000", Doc: "events returned (earliest first)"}},
		Columns: []Column{
			{"occurred_at", "time", "when the event happened"},
			{"category", "string", "event category"},
			{"user", "string", "pseudonymous user (hex)"},
			{"os", "string", "OS"},
			{"os_major", "integer", "OS major version"},
			{"device_kind", "string", "device kind"},
			{"app_id", "string", "application"},
			{"action", "string", "action"},
			{"operation_id", "string", "operation"},
			{"result_code", "string", "result code"},
			{"request_id", "string", "request id"},
			{"event_id", "string", "event id"},
		},
		Chart:     Chart{Kind: "table"},
		authorize: authorizeSupport,
		run:       runSupportTrace,
	}
}

// authorizeSupport admits a trace only of a tenant with an open ticket, and only of the time
// from Lookback before the ticket was opened until now.
func authorizeSupport(ctx context.Context, e *Env, a Args) error {
	tenant, id := a.Str("tenant"), a.Str("ticket")
	if bg := a.Str("breakglass"); bg != "" {
		e.ticketID = bg
		if id != "" {
			return badf("give ticket or breakglass, not both")
		}
		if e.BreakGlass == nil {
			return &Forbidden{Msg: "this service has no break-glass store"}
		}
		g, err := e.BreakGlass.Check(ctx, bg, e.Principal, tenant, e.Now)
		if errors.Is(err, breakglass.ErrNotOpen) || errors.Is(err, breakglass.ErrNotFound) {
			return &Forbidden{Msg: err.Error()}
		}
		if err != nil {
			return err
		}
		if from, _ := traceRange(a); from.Before(g.ApprovedAt.Add(-e.Lookback)) || from.After(e.Now) {
			return &Forbidden{Msg: fmt.Sprintf("the trace from %s reaches outside break-glass %s's window: from %s until now",
				from.Format(time.RFC3339), bg, g.ApprovedAt.Add(-e.Lookback).UTC().Format(time.RFC3339))}
		}
		return nil
	}
	e.ticketID = id
	if id == "" {
		return &Forbidden{Msg: "support reads a tenant's trace only with an open ticket of that tenant: give ticket=<id> (clause 3(1)-1)"}
	}
	if e.Tickets == nil {
		return &Forbidden{Msg: "support traces need the ticket registry, which this service does not have"}
	}
	k, err := e.Tickets.Ticket(ctx, tenant, id)
	if errors.Is(err, registry.ErrNoTicket) {
		return &Forbidden{Msg: fmt.Sprintf("tenant %s has no ticket %s: support reads a tenant's trace only while its ticket is open (clause 3(1)-1)", tenant, id)}
	}
	if err != nil {
		return err
	}
	if !k.OpenAt(e.Now) {
		return &Forbidden{Msg: fmt.Sprintf("ticket %s of %s is closed or expired (open %s to %s): support access ended with it",
			id, tenant, k.OpenedAt.UTC().Format(time.RFC3339), closeTime(k).Format(time.RFC3339))}
	}
	from, _ := traceRange(a)
	earliest := k.OpenedAt.Add(-e.Lookback)
	if from.Before(earliest) || from.After(e.Now) {
		return &Forbidden{Msg: fmt.Sprintf("the trace from %s reaches outside ticket %s's window: from %s (%s before it was opened) until now",
			from.Format(time.RFC3339), id, earliest.UTC().Format(time.RFC3339), e.Lookback)}
	}
	return nil
}

func closeTime(k registry.Ticket) time.Time {
	if !k.ClosedAt.IsZero() && k.ClosedAt.Before(k.ExpiresAt) {
		return k.ClosedAt.UTC()
	}
	return k.ExpiresAt.UTC()
}

func traceRange(a Args) (from, to time.Time) {
	d := time.Duration(a.Int("around_minutes")) * time.Minute
	return a.Time("at").Add(-d), a.Time("at").Add(d)
}

func runSupportTrace(ctx context.Context, e *Env, a Args) ([][]any, error) {
	from, to := traceRange(a)
	if to.After(e.Now) {
		to = e.Now
	}
	where, args := "tenant_id = ? AND occurred_at >= ? AND occurred_at <= ?", []any{a.Str("tenant"), from, to}
	if l := a.List("category"); len(l) > 0 {
		where, args = where+" AND has(?, category)", append(args, l)
	}
	rows, err := e.Conn.Query(ctx, `
SELECT occurred_at, category, lower(hex(user_pseudonym)), os, os_major, device_kind, app_id, action, operation_id,
       result_code, request_id, toString(event_id)
FROM `+e.Mart("trace")+`
WHERE `+where+`
ORDER BY occurred_at, event_id
LIMIT ?`, append(args, uint64(a.Int("limit")))...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		var at time.Time
		var cat, user, os, dev, app, action, op, code, req, id string
		var major uint16
		if err := rows.Scan(&at, &cat, &user, &os, &major, &dev, &app, &action, &op, &code, &req, &id); err != nil {
			return nil, err
		}
		out = append(out, []any{at.UTC(), cat, user, os, major, dev, app, action, op, code, req, id})
	}
	return out, rows.Err()
}

// --- external_aggregate --------------------------------------------------------------------

var releaseMetrics = []string{"feature_adoption", "feature_active_users", "client_users", "setting_customisation", "app_access"}

func dpReleases() *Report {
	return &Report{
		Name: "dp_releases", Purpose: "external_aggregate",
		Title: "Differentially private releases",
		Description: "Published releases: each cell's noisy value with the noise's standard deviation and 95% interval, and " +
			"the ε, δ, L0, Linf and mechanism that produced it, for a window (a week, a month, or a base window). " +
			"The privacy unit is the tenant: each release is (ε, δ)-differentially private for datasets that differ by one tenant's " +
			"whole usage in the window, added or removed; a tenant adds to at most L0 cells of a metric, at most Linf to each. " +
			"Values are clamped at 0 (a count is never negative). Reading them spends no budget (post-processing). " +
			"Clause 3(2)-4: aggregates shared outside, so that no one customer's usage can be inferred.",
		Params: []Param{
			{Name: "metric", Kind: Enum, Multi: true, Values: releaseMetrics, Doc: "only these metrics"},
			{Name: "from", Kind: Date, Doc: "first window start (default: 30 days before to)"},
			{Name: "to", Kind: Date, Default: "today", Doc: "last window start"},
			{Name: "limit", Kind: Int, Min: 1, Max: 10000, Default: "1000", Doc: "cells returned (newest windows first)"}},
		Columns: []Column{
			{"window_start", "time", "start of the release window"},
			{"metric", "string", "metric"},
			{"cell", "string", "the cell's dimensions, name=value, comma-separated"},
			{"value", "integer", "noisy value"},
			{"stddev", "number", "standard deviation of the noise"},
			{"ci95_low", "number", "95% interval, low"},
			{"ci95_high", "number", "95% interval, high"},
			{"unit", "string", "what value counts"},
			{"epsilon", "number", "ε of the metric's release"},
			{"delta", "number", "δ of the metric's release"},
			{"l0", "integer", "cells one tenant may add to"},
			{"linf", "integer", "most one tenant adds to a cell"},
			{"mechanism", "string", "laplace or gaussian"},
			{"released_at", "time", "when it was released"},
			{"window_end", "time", "end of the release window (exclusive)"},
			{"period", "string", "week (ISO, Monday to Monday UTC), month (calendar, UTC), or window (a base window)"},
			{"privacy_unit", "string", "what one neighbouring dataset adds or removes: one tenant's whole usage in the window"},
		},
		Chart: Chart{Kind: "bar", Label: "cell", Value: "value", Series: "metric", Low: "ci95_low", High: "ci95_high"},
		run:   runDPReleases,
	}
}

func runDPReleases(ctx context.Context, e *Env, a Args) ([][]any, error) {
	to := a.Time("to")
	from := a.Time("from")
	if from.IsZero() {
		from = to.AddDate(0, 0, -30)
	}
	if from.After(to) {
		return nil, badf("parameter from (%s) is after to (%s)", day(from), day(to))
	}
	where, args := "window_start >= ? AND window_start < ?", []any{from, to.AddDate(0, 0, 1)}
	if l := a.List("metric"); len(l) > 0 {
		where, args = where+" AND has(?, metric)", append(args, l)
	}
	rows, err := e.Conn.Query(ctx, `
SELECT window_start, metric, dims, value, stddev, ci95_low, ci95_high, unit, epsilon, delta, l0, linf, mechanism, released_at, window_end
FROM `+e.DB+`.releases
WHERE `+where+`
ORDER BY window_start DESC, metric, value DESC, dims
LIMIT 1 BY window_start, window_end, metric, dims
LIMIT ?`, append(args, uint64(a.Int("limit")))...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		var ws, rel, we time.Time
		var metric, dims, unit, mech string
		var value, l0, linf int64
		var sd, lo, hi, eps, delta float64
		if err := rows.Scan(&ws, &metric, &dims, &value, &sd, &lo, &hi, &unit, &eps, &delta, &l0, &linf, &mech, &rel, &we); err != nil {
			return nil, err
		}
		out = append(out, []any{ws.UTC(), metric, dims, value, round3(sd), round3(lo), round3(hi), unit, eps, delta, l0, linf, mech, rel.UTC(),
			we.UTC(), periodOf(ws, we), "tenant"})
	}
	return out, rows.Err()
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// periodOf names a release window by its span.
func periodOf(start, end time.Time) string {
	switch {
	case end.Sub(start) == 7*24*time.Hour && start.UTC().Weekday() == time.Monday:
		return "week"
	case start.UTC().Day() == 1 && start.UTC().AddDate(0, 1, 0).Equal(end.UTC()):
		return "month"
	}
	return "window"
}

func dpBudget() *Report {
	return &Report{
		Name: "dp_budget", Purpose: "external_aggregate",
		Title: "Privacy budget",
		Description: "external_aggregate's privacy budget for a month from the ledger: allowance, spent by the releases, and left; " +
			"and the rolling year's (any 365 days of windows). The unit is the tenant: each release is differentially private for " +
			"datasets that differ by one tenant's whole usage in its window. " +
			"A release that would overdraw is refused by the aggregator.",
		Params: []Param{{Name: "month", Kind: Month, Default: "current", Doc: "the month (YYYY-MM or current)"}},
		Columns: []Column{
			{"month", "string", "YYYY-MM"},
			{"epsilon_budget", "number", "ε allowed in the month"},
			{"epsilon_spent", "number", "ε spent"},
			{"epsilon_left", "number", "ε left"},
			{"delta_budget", "number", "δ allowed"},
			{"delta_spent", "number", "δ spent"},
			{"delta_left", "number", "δ left"},
			{"epsilon_year_budget", "number", "ε allowed over any 365 days of windows (the rolling year)"},
			{"epsilon_year_spent", "number", "ε spent by the windows starting in the 365 days that end with the month"},
			{"delta_year_budget", "number", "δ allowed over any 365 days"},
			{"delta_year_spent", "number", "δ spent in the 365 days that end with the month"},
			{"privacy_unit", "string", "what one neighbouring dataset adds or removes: one tenant's whole usage in a window"},
		},
		Chart: Chart{Kind: "bar", Label: "month", Value: "epsilon_left"},
		run: func(ctx context.Context, e *Env, a Args) ([][]any, error) {
			entries, err := ledger.New(e.Conn, e.Prefix).Entries(ctx, "external_aggregate")
			if err != nil {
				return nil, err
			}
			month, err := time.Parse("2006-01", a.Str("month"))
			if err != nil {
				return nil, badf("parameter month: %v", err)
			}
			end := month.AddDate(0, 1, 0)
			var spent, year ledger.Budget
			for _, en := range entries {
				if en.Period == a.Str("month") {
					spent.Epsilon += en.Epsilon
					spent.Delta += en.Delta
				}
				if !en.WindowStart.Before(end.Add(-365*24*time.Hour)) && en.WindowStart.Before(end) {
					year.Epsilon += en.Epsilon
					year.Delta += en.Delta
				}
			}
			b, y := e.Budget, e.YearBudget
			return [][]any{{a.Str("month"), b.Epsilon, round3(spent.Epsilon), round3(max(b.Epsilon-spent.Epsilon, 0)),
				b.Delta, spent.Delta, max(b.Delta-spent.Delta, 0), y.Epsilon, round3(year.Epsilon), y.Delta, year.Delta, "tenant"}}, nil
		},
	}
}
