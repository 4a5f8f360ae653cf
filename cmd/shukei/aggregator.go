package main

import (
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/ops"
)

func newAggregatorCmd(a *app) *cobra.Command {
	var report bool
	var o aggregator.UtilityOptions
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
				return aggregator.PrintUtility(cmd.OutOrStdout(), a.cfg.Aggregator, o)
			}
			return ops.OpenAndRun(cmd.Context(), a.cfg, a.log, aggregator.Open)
		},
	}
	cmd.Flags().BoolVar(&report, "report", false, "print the utility report (error, share released, interval coverage, top-20 rank correlation per metric for a day, a week and a month) and exit")
	cmd.Flags().Float64Var(&o.Epsilon, "report-epsilon", 1, "ε per metric release for --report")
	cmd.Flags().IntSliceVar(&o.Tenants, "report-tenants", []int{300, 2000, 10000}, "sizes of the synthetic populations for --report")
	cmd.Flags().IntVar(&o.MinTenants, "report-min-tenants", 50, "cells with at least this many true tenants are measured by --report")
	cmd.Flags().IntVar(&o.Draws, "report-draws", 50, "independent draws of each release for --report (error, coverage and rank correlation are over all draws)")
	return cmd
}
