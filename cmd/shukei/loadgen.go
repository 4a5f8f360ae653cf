package main

import (
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/shukei/shukei/loadgen"
)

func newLoadgenCmd(a *app) *cobra.Command {
	var j loadgen.Job
	cmd := &cobra.Command{
		Use:   "loadgen",
		Short: "Send realistic synthetic usage of many tenants through the collector (or straight to Kafka)",
		Long: `loadgen registers --tenants synthetic tenants (contract mix ≈ 60% contracted, 30% trial, 10%
beta; editions; heavy-tailed user counts) and sends --events usage events spread over the --days
before today, with daily and weekly cycles, Zipf-like feature popularity that differs by edition,
OS and device mixes, settings with customisations, and a --bad-share of bad events (e-mail
addresses, personal names and file names where usage belongs, malformed JSON, unknown tenants).
The same --seed gives the same events.

By default it posts to the collector's HTTP API with each tenant's ingest token (kept in
--tokens-file, so reruns reuse them); --direct writes to the raw Kafka topic instead, past the
collector's checks. --rate paces the send; 0 sends as fast as the collector takes it. A
progress bar with rate and ETA is shown on a terminal, plain lines otherwise. Events older than
events.max_age are refused as too old: raise it for more than 7 days of history.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			j.Options.Progress = cmd.ErrOrStderr()
			return loadgen.Run(cmd.Context(), cmd.OutOrStdout(), a.cfg, j)
		},
	}
	f := cmd.Flags()
	f.IntVar(&j.Config.Tenants, "tenants", 300, "tenants")
	f.IntVar(&j.Config.Events, "events", 100000, "events to send (bad ones included)")
	f.IntVar(&j.Config.Days, "days", 7, "days of history the events are spread over, ending today")
	f.Uint64Var(&j.Config.Seed, "seed", 1, "seed: the same seed sends the same events")
	f.Float64Var(&j.Config.BadShare, "bad-share", 0.01, "share of bad events (0 to 0.5)")
	f.StringVar(&j.Config.Prefix, "prefix", "lg-", "tenant id prefix")
	f.Float64Var(&j.Options.Rate, "rate", 0, "events per second; 0: as fast as possible")
	f.IntVar(&j.Options.Batch, "batch", 500, "events per request")
	f.IntVar(&j.Options.Workers, "workers", 4, "concurrent requests")
	f.BoolVar(&j.Direct, "direct", false, "write straight to the raw Kafka topic instead of the collector")
	f.StringVar(&j.URL, "collector", "", "collector base URL (default http://<collector.listen>)")
	f.StringVar(&j.TokensFile, "tokens-file", filepath.Join(".services", "loadgen-tokens.json"), "where the tenants' ingest tokens are kept between runs")
	return cmd
}
