package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/loadgen"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/collector"
	"github.com/shukei/shukei/registry"
)

// The synthetic customer base the demo drives: its tenants and its seed.
const (
	demoPopulationSize = 300
	demoSeed           = 2026
)

// demoDays is how many days of history the demo sends: from the first day of the previous
// month to today, so the partner sees a whole month, its weeks and the weeks since.
func demoDays(now time.Time) int {
	now = now.UTC()
	first := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, -1, 0)
	return int(now.Sub(first).Hours()/24) + 1
}

// demoStats are what the demo measured, for its closing table.
type demoStats struct {
	events                                int
	collectorRate, processorRate, aggRate float64
	e2eP50, e2eP95                        time.Duration
	accepted, refusedAtDoor               int
}

// demoLoad registers the synthetic customers and sends their last demoPastDays days of usage
// through a collector, as their browsers and apps would have: the load generator's events,
// with its share of bad ones refused at the door.
func demoLoad(ctx context.Context, out io.Writer, cfg config.Config, master *pseudonym.MasterKey, events int, st *demoStats) error {
	days := demoDays(time.Now())
	g, err := loadgen.New(loadgen.Config{Tenants: demoPopulationSize, Seed: demoSeed, Events: events, Days: days, BadShare: 0.01, Prefix: "pop-"})
	if err != nil {
		return err
	}
	conn, err := ops.OpenClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	reg := registry.New(conn, cfg.ClickHouse.Database, master).Placing(cfg.ClickHouse.Cluster)
	// Tokens of this run only, given to the demo's collector directly.
	tokens := map[string]string{}
	for _, t := range g.Tenants() {
		if _, err := reg.Add(ctx, t); err != nil && !errors.Is(err, registry.ErrExists) {
			return err
		}
		var b [12]byte
		_, _ = rand.Read(b[:])
		tokens[t.ID] = "shk_demo_" + hex.EncodeToString(b[:])
		cfg.Collector.IngestTokens = append(cfg.Collector.IngestTokens, collector.TokenHash(t.ID, tokens[t.ID]))
	}
	url, stop, err := demoCollector(ctx, cfg, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(out, "\n-- Load: %d synthetic tenants (≈ 60%% contracted, 30%% trial, 10%% beta), %d events over their last %d days, through the collector\n",
		demoPopulationSize, events, days)
	res, err := loadgen.SendHTTP(ctx, url, tokens, g, loadgen.Options{Batch: 500, Workers: 4, Progress: os.Stderr})
	if err != nil {
		return err
	}
	refused, reasons := res.Refused()
	st.events, st.accepted, st.refusedAtDoor, st.collectorRate = res.Sent, res.Accepted, refused, res.Rate()
	fmt.Fprintf(out, "   sent %d in %s (%.0f events/s): accepted %d, refused at the door %d (%s)\n",
		res.Sent, res.Elapsed.Round(time.Millisecond), res.Rate(), res.Accepted, refused, reasons)
	return nil
}

// demoAggregate runs the aggregator until the past days are released (or finds them released
// by an earlier run), then shows the releases and the budget.
func demoAggregate(ctx context.Context, out io.Writer, cfg config.Config, master *pseudonym.MasterKey, st *demoStats) error {
	conn, err := ops.OpenClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	keyring := pseudonym.NewKeyring(master)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cache := registry.NewCache(registry.New(conn, cfg.ClickHouse.Database, master), keyring, cfg.Registry.Refresh, quiet)
	aggCfg := cfg
	aggCfg.Aggregator.ReleaseInterval = 500 * time.Millisecond
	aggCfg.Aggregator.Features, aggCfg.Aggregator.Settings = population.Features, population.Settings
	// The product's catalogues are complete: ids outside them are released as "other", and
	// each metric's whole ε goes to the noise.
	aggCfg.Aggregator.ClosedCatalogues = true
	// The load is a month of history sent in a few minutes, each tenant's events in batches
	// spanning up to a day of event time (loadgen.Options.MaxSpan): a day and a bit of allowed
	// lateness keeps all of it in its windows.
	aggCfg.Aggregator.AllowedLateness = 26 * time.Hour
	cfg.Aggregator.AllowedLateness = aggCfg.Aggregator.AllowedLateness
	metrics := prometheus.NewRegistry()
	agg, err := aggregator.Wire(ctx, aggCfg, quiet, cache, keyring, master, func(d *aggregator.Deps) { d.Conn, d.Registry = conn, metrics })
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	through := aggregator.WindowOf(now.Add(-cfg.Aggregator.AllowedLateness), cfg.Aggregator.Window).Start
	// The load covers the demoDays days before now: every window of every released kind (base
	// windows, weeks, months) from the one holding the first day on that has closed by now.
	var periods []aggregator.Period
	if cfg.Aggregator.Epsilon > 0 {
		periods = append(periods, aggregator.PeriodWindow)
	}
	periods = append(periods, aggregator.PeriodsOf(cfg.Aggregator)...)
	var want []aggregator.Window
	first := now.AddDate(0, 0, -demoDays(now)+1)
	for _, p := range periods {
		for w := p.Of(first, cfg.Aggregator.Window); !w.End.After(through); w = p.Of(w.End, cfg.Aggregator.Window) {
			want = append(want, w)
		}
	}
	fmt.Fprintf(out, "\n-- Aggregator: DP releases for external_aggregate (%v; %d windows closed by now)\n", periods, len(want))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- agg.Run(runCtx) }()
	defer func() { stop(); <-done }()
	go func() { _ = cache.Run(runCtx) }()

	start := time.Now()
	var rels []aggregator.StoredRelease
	read, readChanged := -1.0, time.Now()
	for {
		rels, err = aggregator.Releases(ctx, conn, cfg.ClickHouse.Database, "")
		refused := counterValue(metrics, "shukei_aggregator_release_refusals_total")
		if err == nil && countWindows(rels, want)+int(refused) >= len(want) {
			if refused > 0 {
				fmt.Fprintf(out, "   %.0f windows REFUSED: they would overdraw the month's privacy budget (the ledger says how much is spent)\n", refused)
			}
			break
		}
		// Caught up without every window: an earlier run on this database closed those days
		// before these events arrived; they are counted late, never added to a closed window.
		if n := counterValue(metrics, "shukei_aggregator_events_total"); n != read {
			read, readChanged = n, time.Now()
		} else if n > 0 && time.Since(readChanged) > 15*time.Second {
			fmt.Fprintf(out, "   caught up: %d windows have no release of this plan — an earlier run closed those days before these events came (%.0f events counted late, never added)\n",
				len(want)-countWindows(rels, want)-int(refused), counterValue(metrics, "shukei_aggregator_late_events_total"))
			break
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("the aggregator released %d of %d windows in 5 minutes (is the budget spent? see shukei_aggregator_release_refusals_total)", countWindows(rels, want), len(want))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	el := time.Since(start)
	st.aggRate = float64(st.events) / el.Seconds()
	// The aggregate reports read sealed weeks only; the demo's history is all in: seal every
	// complete week now (the release step would, aggregator.seal_after after each week ends).
	sealed, err := aggregator.SealEveryWeek(ctx, aggCfg, conn, quiet)
	if err != nil {
		return err
	}
	atoms, k := 0, 0
	for _, s := range sealed {
		atoms, k = atoms+len(s.Atoms), s.K
	}
	fmt.Fprintf(out, "   %d purpose-weeks sealed: %d gated atoms of at least k=%d tenants (all the aggregate reports and dashboards read)\n", len(sealed), atoms, k)
	fmt.Fprintf(out, "   %d of %d windows released (or found released by an earlier run: a window is released once) in %s\n",
		countWindows(rels, want), len(want), el.Round(time.Millisecond))
	if countWindows(rels, want) == 0 {
		return nil
	}
	if err := demoPartnerView(ctx, out, conn, aggCfg, rels, want); err != nil {
		return err
	}
	var last aggregator.Window
	for _, w := range want {
		if countWindows(rels, []aggregator.Window{w}) == 1 && w.End.After(last.End) {
			last = w
		}
	}
	l := ledger.New(conn, cfg.ClickHouse.Database)
	period := last.Start.Format("2006-01")
	spent, err := l.Spent(ctx, aggregator.Purpose, period)
	if err != nil {
		return err
	}
	chain := "verified"
	if err := l.Verify(ctx, aggregator.Purpose); err != nil {
		chain = err.Error()
	}
	budget, _ := ops.AggregatorBudget(cfg.Aggregator, ops.MustPolicy())
	fmt.Fprintf(out, "\n   privacy budget of external_aggregate in %s: spent ε=%.3g δ=%.3g of ε=%.3g δ=%.3g; ledger hash chain %s\n",
		period, spent.Epsilon, spent.Delta, budget.Epsilon, budget.Delta, chain)
	return nil
}

// counterValue sums a counter family of the registry.
func counterValue(g prometheus.Gatherer, name string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

func countWindows(rels []aggregator.StoredRelease, want []aggregator.Window) int {
	n := 0
	for _, w := range want {
		if slices.ContainsFunc(rels, func(r aggregator.StoredRelease) bool { return r.WindowStart.Equal(w.Start) && r.WindowEnd.Equal(w.End) }) {
			n++
		}
	}
	return n
}
