package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

func newAggregatorCmd(a *app) *cobra.Command {
	var (
		report     bool
		reportEps  float64
		tenants    []int
		minTenants int
		draws      int
	)
	cmd := &cobra.Command{
		Use:   "aggregator",
		Short: "Release differentially private cross-tenant aggregates (external_aggregate)",
		Long: `aggregator joins the aggregator consumer group on the raw topic and runs the same event decision
as the processor, keeping the events the policy tags external_aggregate. It accumulates them in
event-time windows (aggregator.window, daily by default) per Kafka partition; when a partition's
watermark passes a window's end by aggregator.allowed_lateness, it bounds every tenant (at most L0
cells a metric, sampled; at most LInf a cell, clamped) and stores un-noised partial aggregates with
the partition's progress. Later events of a closed window are counted in
shukei_aggregator_late_events_total, never added.

The instance holding partition 0 is the release step: once every partition has closed a window,
it charges the window's (ε, δ) to the external_aggregate budget ledger (refusing a release that
would overdraw the month's budget), merges the partials, keeps data-derived cells only if private
partition selection does, adds the noise once and stores the releases with their standard
deviation, 95% confidence interval, ε, δ, L0, LInf and mechanism. A window is released once:
restarts, replays and other instances find its release and change nothing.

--report prints the utility of the releases on the synthetic population instead of running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if report {
				lastMonth := time.Now().UTC().AddDate(0, -1, 0)
				var pops []*population.Population
				for _, n := range tenants {
					pops = append(pops, population.New(n, 1, "t"))
				}
				u, err := aggregator.UtilityReport(a.cfg.Aggregator, pops, lastMonth, reportEps, minTenants, draws)
				if err != nil {
					return err
				}
				u.Print(cmd.OutOrStdout())
				return nil
			}
			return runAggregator(cmd.Context(), a)
		},
	}
	cmd.Flags().BoolVar(&report, "report", false, "print the utility report (error, share released, interval coverage, top-20 rank correlation per metric for a day, a week and a month) and exit")
	cmd.Flags().Float64Var(&reportEps, "report-epsilon", 1, "ε per metric release for --report")
	cmd.Flags().IntSliceVar(&tenants, "report-tenants", []int{300, 2000, 10000}, "sizes of the synthetic populations for --report")
	cmd.Flags().IntVar(&minTenants, "report-min-tenants", 50, "cells with at least this many true tenants are measured by --report")
	cmd.Flags().IntVar(&draws, "report-draws", 50, "independent draws of each release for --report (error, coverage and rank correlation are over all draws)")
	return cmd
}

// newAggregator wires an aggregator from the configuration; the caller runs it. It makes cache
// follow the policy activations and refreshes it once.
func newAggregator(ctx context.Context, a *app, cache *registry.Cache, keyring *pseudonym.Keyring, master *pseudonym.MasterKey, deps func(*aggregator.Deps)) (*aggregator.Aggregator, error) {
	versions, err := policy.Embedded()
	if err != nil {
		return nil, err
	}
	cache.Follow(versions) // policy activations take effect with each registry refresh
	if err := cache.Refresh(ctx); err != nil {
		return nil, err
	}
	inForce := versions.InForce(time.Now())
	budget, err := ops.AggregatorBudget(a.cfg.Aggregator, inForce)
	if err != nil {
		return nil, err
	}
	plan, err := aggregator.NewPlan(a.cfg.Aggregator, inForce.Version)
	if err != nil {
		return nil, fmt.Errorf("aggregator plan: %w", err)
	}
	k, err := ops.QueryK(a.cfg.Query)
	if err != nil {
		return nil, err
	}
	lkey, err := ops.LedgerKey(a.cfg, a.log)
	if err != nil {
		return nil, err
	}
	d := aggregator.Deps{
		K:         k,
		LedgerKey: lkey,
		Database:  a.cfg.ClickHouse.Database, Cache: cache, Keyring: keyring,
		Policy: decision.NewPolicyTagger(versions), HashKey: master.Derive("dlq"),
		SampleKey: master.Derive("aggregator-sampling"), Plan: plan, Budget: budget, Log: a.log,
		YearBudget: ledger.Budget{Epsilon: a.cfg.Aggregator.BudgetEpsilonYear, Delta: a.cfg.Aggregator.BudgetDeltaYear},
	}
	deps(&d)
	return aggregator.New(a.cfg, d)
}

func runAggregator(ctx context.Context, a *app) error {
	master, err := ops.MasterKey(a.cfg.Anonymizer)
	if err != nil {
		return err
	}
	// Its own users (promise 16): one writes its state, the releases, the ledger and the gated
	// atoms; one reads the registry, the wrapped keys and the marts atoms are computed from.
	writer, err := ops.RoleClickHouse(a.cfg, "aggregator", "", a.log)
	if err != nil {
		return err
	}
	reader, err := ops.RoleClickHouse(a.cfg, "aggregator", "_read", a.log)
	if err != nil {
		return err
	}
	conn, err := ops.AwaitClickHouse(ctx, writer, a.log)
	if err != nil {
		return err
	}
	defer conn.Close()
	rconn, err := ops.AwaitClickHouse(ctx, reader, a.log)
	if err != nil {
		return err
	}
	defer rconn.Close()
	keyring := pseudonym.NewKeyring(master)
	cache := registry.NewCache(registry.New(rconn, a.cfg.ClickHouse.Database, master), keyring, a.cfg.Processor.RegistryRefresh, a.log)
	reg := ops.NewRegistry()
	agg, err := newAggregator(ctx, a, cache, keyring, master, func(d *aggregator.Deps) { d.Conn, d.Marts, d.Registry = conn, rconn, reg })
	if err != nil {
		return err
	}
	if a.cfg.Ledger.AnchorEvery > 0 {
		lkey, err := ops.LedgerKey(a.cfg, nil)
		if err != nil {
			return err
		}
		l := ledger.New(conn, a.cfg.ClickHouse.Database).WithKey(lkey)
		go ops.AnchorLoop(ctx, "budget ledger", a.cfg.Ledger.AnchorFile, a.cfg.Ledger.AnchorEvery,
			func(ctx context.Context) (chain.Anchor, error) { return l.Anchor(ctx, a.cfg.ClickHouse.Database) }, a.log)
	}
	a.log.Info("aggregator starting", "topic", a.cfg.Kafka.RawTopic, "group", a.cfg.Aggregator.GroupID, "window", a.cfg.Aggregator.Window, "plan", agg.PlanHash())
	return ops.RunRole(ctx, ops.Role{Listen: a.cfg.Aggregator.Listen, Metrics: reg, Cache: cache, Refresh: a.cfg.Processor.RegistryRefresh}, agg.Run)
}
