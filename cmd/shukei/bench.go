package main

import (
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/bench"
)

func newBenchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Shukei on this machine",
		Args:  cobra.NoArgs,
	}
	var o bench.ReportsOptions
	reports := &cobra.Command{
		Use:   "reports",
		Short: "Report latency (p50, p95) of the query service over millions of stored events",
		Long: `bench reports fills a database of its own (<database>_bench) with synthetic usage of many
tenants over the 28 days before today — --events rows in the event store, from which ClickHouse's
materialised views fill every purpose mart — unless it already holds that many. Then it runs the
query service on loopback with the purpose readers and requests every report --requests times
(after a warm-up), measuring the time to the full answer at the client (authentication and the
audit append included). It prints p50 and p95 per report and writes them as JSON.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Log = a.log
			return bench.Reports(cmd.Context(), cmd.OutOrStdout(), a.cfg, o)
		},
	}
	reports.Flags().IntVar(&o.Events, "events", 10_000_000, "events in the store")
	reports.Flags().IntVar(&o.Tenants, "tenants", 2000, "tenants the events belong to")
	reports.Flags().IntVar(&o.Requests, "requests", 40, "timed requests per report")
	reports.Flags().BoolVar(&o.Reload, "reload", false, "drop and refill the bench database even if it holds enough events")
	reports.Flags().StringVar(&o.Out, "out", "bench/results/reports.json", "where to write the results (empty: nowhere)")
	cmd.AddCommand(reports, newBenchPipelineCmd(a))
	return cmd
}

func newBenchPipelineCmd(a *app) *cobra.Command {
	var o bench.PipelineOptions
	cmd := &cobra.Command{
		Use:   "pipeline",
		Short: "Throughput, memory and CPU of every role, against a raw-copy and a ClickHouse Kafka-engine baseline",
		Long: `bench pipeline runs each role as a child process against a database and topics of its own:
the load generator posts --events events to the collector; the processor then stores them; the
same consumer and batch insert without the event decision copies them raw (the baseline, same
run); ClickHouse's own Kafka table engine ingests the same topic into a plain table (the peer
baseline a user would reach for); the aggregator reads them into its windows. With the collector
and the processor running, probe events measure the end-to-end latency (collector
acknowledgement → queryable). For each role it reads the peak resident memory and the CPU time
from /proc. It merges bench/results/reports.json (from 'bench reports') and writes everything to
--out.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.Pipeline(cmd.Context(), cmd.OutOrStdout(), a.cfg, o)
		},
	}
	cmd.Flags().IntVar(&o.Events, "events", 500_000, "events the load generator sends")
	cmd.Flags().StringVar(&o.Out, "out", "bench/results/latest.json", "where to write the results")
	return cmd
}
