package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/population"
	"github.com/shukei/shukei/registry"
)

// demoPopulationSize is the synthetic customer base whose past days the demo aggregates.
const (
	demoPopulationSize = 300
	demoPastDays       = 3
)

func demoPopulation() *population.Population { return population.New(demoPopulationSize, 2026, "pop-") }

// demoPastUsage registers the synthetic customers and writes their last full days of usage to
// the raw topic, as the collectors would have: the aggregator needs many tenants and closed
// windows to release anything.
func demoPastUsage(ctx context.Context, out io.Writer, cfg config.Config, master *pseudonym.MasterKey) error {
	conn, err := openClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	reg := registry.New(conn, cfg.ClickHouse.Database, master)
	pop := demoPopulation()
	for _, t := range pop.Registry() {
		if _, err := reg.Add(ctx, t); err != nil && !errors.Is(err, registry.ErrExists) {
			return err
		}
	}
	w := &kafka.Writer{Addr: kafka.TCP(cfg.Kafka.Brokers...), Topic: cfg.Kafka.RawTopic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchSize: 5000, BatchBytes: 16 << 20, BatchTimeout: 10 * time.Millisecond, Compression: kafka.Lz4}
	defer w.Close()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	total := 0
	for d := demoPastDays; d >= 1; d-- {
		evs := pop.Day(today.AddDate(0, 0, -d))
		msgs := make([]kafka.Message, len(evs))
		for i, ev := range evs {
			b, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			msgs[i] = kafka.Message{Key: []byte(ev.TenantID), Value: b}
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return fmt.Errorf("write past usage: %w", err)
		}
		total += len(evs)
	}
	fmt.Fprintf(out, "\n-- Synthetic customers: %d tenants registered, %d events of their last %d days written to %s\n",
		len(pop.Tenants), total, demoPastDays, cfg.Kafka.RawTopic)
	fmt.Fprintln(out, "   (a run on the same day writes the same events again: the processor drops them as duplicates,")
	fmt.Fprintln(out, "   the aggregator counts them as late for windows it has released)")
	return nil
}

// demoAggregate runs the aggregator until the past days are released (or finds them released
// by an earlier run), then shows the releases and the budget.
func demoAggregate(ctx context.Context, out io.Writer, a *app, master *pseudonym.MasterKey) error {
	cfg := a.cfg
	conn, err := openClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	keyring := pseudonym.NewKeyring(master)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cache := registry.NewCache(registry.New(conn, cfg.ClickHouse.Database, master), keyring, cfg.Processor.RegistryRefresh, quiet)
	if err := cache.Refresh(ctx); err != nil {
		return err
	}
	demo := *a
	demo.cfg.Aggregator.ReleaseInterval = 500 * time.Millisecond
	demo.cfg.Aggregator.Features, demo.cfg.Aggregator.Settings = population.Features, population.Settings
	// ε = 1 per metric release (five times the default) so that 300 tenants give readable
	// releases; the month's budget (ε = 31) then holds six daily windows.
	demo.cfg.Aggregator.Epsilon = 1
	demo.log = quiet
	metrics := prometheus.NewRegistry()
	agg, err := newAggregator(ctx, &demo, cache, keyring, master, func(d *aggregator.Deps) { d.Conn, d.Registry = conn, metrics })
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	through := aggregator.WindowOf(now.Add(-cfg.Aggregator.AllowedLateness), cfg.Aggregator.Window).Start
	var want []aggregator.Window
	for d := demoPastDays; d >= 1; d-- {
		day := now.Truncate(24*time.Hour).AddDate(0, 0, -d)
		for w := aggregator.WindowOf(day, cfg.Aggregator.Window); w.Start.Before(day.AddDate(0, 0, 1)); w = aggregator.WindowOf(w.End, cfg.Aggregator.Window) {
			if !w.End.After(through) {
				want = append(want, w)
			}
		}
	}
	fmt.Fprintf(out, "\n-- Aggregator: DP releases for external_aggregate (plan %s, %d windows of %s closed by now)\n", agg.PlanHash()[:12], len(want), cfg.Aggregator.Window)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- agg.Run(runCtx) }()
	defer func() { stop(); <-done }()
	go func() { _ = cache.Run(runCtx) }()

	start := time.Now()
	var rels []aggregator.StoredRelease
	for {
		rels, err = aggregator.Releases(ctx, conn, cfg.ClickHouse.Database, agg.PlanHash())
		refused := counterValue(metrics, "shukei_aggregator_release_refusals_total")
		if err == nil && countWindows(rels, want)+int(refused) >= len(want) {
			if refused > 0 {
				fmt.Fprintf(out, "   %.0f windows REFUSED: they would overdraw the month's privacy budget (the ledger says how much is spent)\n", refused)
			}
			break
		}
		if time.Since(start) > 3*time.Minute {
			return fmt.Errorf("the aggregator released %d of %d windows in 3 minutes (is the budget spent? see shukei_aggregator_release_refusals_total)", countWindows(rels, want), len(want))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	fmt.Fprintf(out, "   %d of %d windows released (or found released by an earlier run: a window is released once) in %s\n",
		countWindows(rels, want), len(want), time.Since(start).Round(time.Millisecond))
	if countWindows(rels, want) == 0 {
		return nil
	}
	var last aggregator.Window
	for _, w := range want {
		if countWindows(rels, []aggregator.Window{w}) == 1 {
			last = w
		}
	}
	fmt.Fprintf(out, "\n   top feature adoption among contracted tenants, window %s (distinct tenants, ±95%% CI):\n", last.Start.Format("2006-01-02"))
	var top []aggregator.StoredRelease
	for _, r := range rels {
		if r.WindowStart.Equal(last.Start) && r.Metric == "feature_adoption" && strings.HasSuffix(r.Dims, "status=contracted") {
			top = append(top, r)
		}
	}
	slices.SortFunc(top, func(x, y aggregator.StoredRelease) int { return int(y.Value - x.Value) })
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   CELL\tRELEASED\t95% CI\tSTDDEV\tε\tL0\tLINF\tMECHANISM\t")
	for _, r := range top[:min(8, len(top))] {
		fmt.Fprintf(tw, "   %s\t%d\t[%.0f, %.0f]\t%.1f\t%.3g\t%d\t%d\t%s\t\n", r.Dims, r.Value, r.CI95Low, r.CI95High, r.StdDev, r.Epsilon, r.L0, r.LInf, r.Mechanism)
	}
	_ = tw.Flush()
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
	budget, _ := aggregatorBudget(cfg.Aggregator, mustPolicy())
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
		if slices.ContainsFunc(rels, func(r aggregator.StoredRelease) bool { return r.WindowStart.Equal(w.Start) }) {
			n++
		}
	}
	return n
}
