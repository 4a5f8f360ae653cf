package main

import (
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/demo"
)

func newDemoCmd(a *app) *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run Shukei's main job end to end and print what it found",
		Long: `demo is the main job: it prepares the services, runs every role on synthetic usage of many
tenants, and prints what each kind of user of Shukei gets. Run it through 'make demo', which
starts Kafka and ClickHouse first.

This build has the platform, the ingest door, the processor and the aggregator: demo migrates
ClickHouse, creates the Kafka topics, registers demo tenants, runs the collector, sends usage
events through the Go SDK together with events that carry customer content, writes the last
three days of a synthetic customer base of 300 tenants to the raw topic, runs the processor until
every message is accounted for, shows what each purpose's mart received, then runs the
aggregator until the closed days are released with differential privacy and shows the releases
and the privacy budget. Then it starts the query service, signs in as the product team, a
research agency under contract and a statistics partner, prints what each reads (feature ranking,
contracted vs trial, follow-up and interview candidates, a DP release and the budget), a refused
request and the verified audit chain, and keeps the web page up until Ctrl-C (--exit: stop after
printing). --fresh first drops the configured database (with its purpose databases) and
deletes its topics, so every run starts from nothing: for a demo sandbox only ('make demo'
passes it).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Log = a.log
			return demo.Run(cmd.Context(), cmd.OutOrStdout(), a.cfg, o)
		},
	}
	cmd.Flags().BoolVar(&o.Exit, "exit", false, "exit after printing instead of serving the web page until Ctrl-C")
	cmd.Flags().BoolVar(&o.Fresh, "fresh", false, "drop the configured database, its purpose databases and its topics first (a demo sandbox only)")
	cmd.Flags().IntVar(&o.Events, "events", 1_000_000, "synthetic events the load generator sends over the last 14 days")
	return cmd
}
