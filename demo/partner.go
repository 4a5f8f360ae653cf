package demo

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/ops"
)

// demoPartnerView prints what a statistics partner reads from the releases: the guarantee,
// the last released month's feature adoption by contract status with 95% intervals, the weeks
// of the top features, and — because the demo made the data — how far the released top-10 is
// from the truth the processor stored.
func demoPartnerView(ctx context.Context, out io.Writer, conn driver.Conn, cfg config.Config, rels []aggregator.StoredRelease, want []aggregator.Window) error {
	var month aggregator.Window
	var weeks []aggregator.Window
	for _, w := range want {
		if countWindows(rels, []aggregator.Window{w}) == 0 {
			continue
		}
		switch d := w.End.Sub(w.Start); {
		case d >= 28*24*time.Hour && w.End.After(month.End):
			month = w
		case d == 7*24*time.Hour:
			weeks = append(weeks, w)
		}
	}
	if month.End.IsZero() {
		fmt.Fprintln(out, "\n   (no month released yet: the partner view needs one)")
		return nil
	}
	type cell struct {
		v      int64
		lo, hi float64
	}
	// feature → status → cell, for the month; week → feature → contracted cell.
	byFeature := map[string]map[string]cell{}
	weekly := map[int64]map[string]cell{}
	var eps float64
	var l0, linf int64
	for _, r := range rels {
		if r.Metric != "feature_adoption" {
			continue
		}
		f, st := dimsOf(r.Dims)["feature"], dimsOf(r.Dims)["status"]
		c := cell{r.Value, r.CI95Low, r.CI95High}
		if r.WindowStart.Equal(month.Start) && r.WindowEnd.Equal(month.End) {
			if byFeature[f] == nil {
				byFeature[f] = map[string]cell{}
			}
			byFeature[f][st] = c
			eps, l0, linf = r.Epsilon, r.L0, r.LInf
		}
		if r.WindowEnd.Sub(r.WindowStart) == 7*24*time.Hour && st == "contracted" {
			if weekly[r.WindowStart.Unix()] == nil {
				weekly[r.WindowStart.Unix()] = map[string]cell{}
			}
			weekly[r.WindowStart.Unix()][f] = c
		}
	}
	total := func(f string) int64 {
		var t int64
		for _, c := range byFeature[f] {
			t += c.v
		}
		return t
	}
	feats := make([]string, 0, len(byFeature))
	for f := range byFeature {
		feats = append(feats, f)
	}
	slices.SortFunc(feats, func(a, b string) int { return cmp.Or(cmp.Compare(total(b), total(a)), cmp.Compare(a, b)) })
	top := feats[:min(10, len(feats))]

	l := ledger.New(conn, cfg.ClickHouse.Database)
	entries, err := l.Entries(ctx, aggregator.Purpose)
	if err != nil {
		return err
	}
	var spentMonth, spentYear ledger.Budget
	for _, e := range entries {
		if e.Period == month.Start.Format("2006-01") {
			spentMonth.Epsilon += e.Epsilon
			spentMonth.Delta += e.Delta
		}
		if !e.WindowStart.Before(month.End.Add(-aggregator.Year)) && e.WindowStart.Before(month.End) {
			spentYear.Epsilon += e.Epsilon
			spentYear.Delta += e.Delta
		}
	}
	budget, _ := ops.AggregatorBudget(cfg.Aggregator, ops.MustPolicy())
	yearEps := cfg.Aggregator.BudgetEpsilonYear
	if yearEps == 0 {
		yearEps = 12 * budget.Epsilon
	}
	fmt.Fprintf(out, "\n-- Partner view: external_aggregate, month %s and its weeks\n", month.Start.Format("2006-01"))
	fmt.Fprintf(out, "   Guarantee: the unit is the tenant; neighbouring datasets differ by one tenant's whole usage in the period (added or removed).\n")
	fmt.Fprintf(out, "   Each tenant counts in at most L0=%d features, once each (LInf=%d), per period; ε=%g per metric for the month (%g of it on this noise), %g per week (Laplace, pure ε-DP).\n",
		l0, linf, cfg.Aggregator.MonthEpsilon, eps, cfg.Aggregator.WeekEpsilon)
	fmt.Fprintf(out, "   Spent by external_aggregate: %s ε=%.3g of %.3g; the 365 days to %s ε=%.3g of %g. Values are clamped at 0; status=terminated is never released (no such tenant contributes).\n",
		month.Start.Format("2006-01"), spentMonth.Epsilon, budget.Epsilon, month.End.AddDate(0, 0, -1).Format("2006-01-02"), spentYear.Epsilon, yearEps)
	fmt.Fprintf(out, "\n   feature adoption in %s: distinct tenants using the feature [95%% interval], top 10 by released total\n", month.Start.Format("2006-01"))
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   FEATURE\tCONTRACTED\tTRIAL\tBETA\t")
	show := func(c cell, ok bool) string {
		if !ok {
			return "-"
		}
		return fmt.Sprintf("%d [%.0f–%.0f]", c.v, c.lo, c.hi)
	}
	for _, f := range top {
		c, okc := byFeature[f]["contracted"]
		t, okt := byFeature[f]["trial"]
		b, okb := byFeature[f]["beta"]
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%s\t\n", f, show(c, okc), show(t, okt), show(b, okb))
	}
	_ = tw.Flush()

	slices.SortFunc(weeks, func(a, b aggregator.Window) int { return a.Start.Compare(b.Start) })
	if len(weeks) > 0 {
		fmt.Fprintf(out, "\n   weekly adoption among contracted tenants [95%% interval], ISO weeks (Monday to Monday, UTC):\n")
		tw = tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		head := "   WEEK"
		for _, f := range top[:min(4, len(top))] {
			head += "\t" + f
		}
		fmt.Fprintln(tw, head+"\t")
		for _, w := range weeks {
			line := "   " + w.Start.Format("2006-01-02")
			for _, f := range top[:min(4, len(top))] {
				c, ok := weekly[w.Start.Unix()][f]
				line += "\t" + show(c, ok)
			}
			fmt.Fprintln(tw, line+"\t")
		}
		_ = tw.Flush()
	}

	// How far from the truth: the processor's marketing mart holds, per day and tenant, what
	// each tenant used; the operator (not the partner) can count the month exactly.
	rows, err := conn.Query(ctx, "SELECT feature, uniqExact(tenant_id) FROM "+databases.Across(cfg.ClickHouse.Cluster, cfg.ClickHouse.Database+"_marketing.activity_daily")+" WHERE category = 'feature_use' AND contract_status != 'terminated' AND day >= toDate(?) AND day < toDate(?) GROUP BY feature",
		month.Start.Format("2006-01-02"), month.End.Format("2006-01-02"))
	if err != nil {
		return err
	}
	defer rows.Close()
	truth := map[string]float64{}
	for rows.Next() {
		var f string
		var n uint64
		if err := rows.Scan(&f, &n); err != nil {
			return err
		}
		truth[f] = float64(n)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	trueTop := make([]string, 0, len(truth))
	for f := range truth {
		trueTop = append(trueTop, f)
	}
	slices.SortFunc(trueTop, func(a, b string) int { return cmp.Or(cmp.Compare(truth[b], truth[a]), cmp.Compare(a, b)) })
	trueTop = trueTop[:min(10, len(trueTop))]
	common := 0
	var x, y, rel []float64
	for _, f := range top {
		if slices.Contains(trueTop, f) {
			common++
		}
		x, y = append(x, float64(total(f))), append(y, truth[f])
		if truth[f] > 0 {
			rel = append(rel, math.Abs(float64(total(f))-truth[f])/truth[f])
		}
	}
	slices.Sort(rel)
	med := math.NaN()
	if len(rel) > 0 {
		med = rel[len(rel)/2]
	}
	var spread string
	if len(trueTop) > 0 {
		spread = fmt.Sprintf(" (the true top-10 spans %.0f–%.0f tenants)", truth[trueTop[len(trueTop)-1]], truth[trueTop[0]])
	}
	fmt.Fprintf(out, "\n   Distance from the truth (the operator's exact count, never given to the partner): the released top-10 holds %d of the true top-10%s, Spearman ρ = %.2f over it, median relative error of its totals %.1f%%.\n",
		common, spread, aggregator.Spearman(x, y), 100*med)
	return nil
}

// dimsOf parses "name=value|name=value".
func dimsOf(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, "|") {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out
}
