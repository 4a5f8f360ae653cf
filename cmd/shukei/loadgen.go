package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/loadgen"
	"github.com/shukei/shukei/ops"
)

func newLoadgenCmd(a *app) *cobra.Command {
	var (
		cfg        loadgen.Config
		opts       loadgen.Options
		direct     bool
		url        string
		tokensFile string
	)
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
			out := cmd.OutOrStdout()
			if url == "" {
				url = "http://" + a.cfg.Collector.Listen
			}
			opts.Progress = cmd.ErrOrStderr()
			st, err := runLoadgen(cmd.Context(), out, a.cfg, cfg, opts, direct, url, tokensFile)
			if err != nil {
				return err
			}
			printLoadStats(out, st, direct)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Tenants, "tenants", 300, "tenants")
	f.IntVar(&cfg.Events, "events", 100000, "events to send (bad ones included)")
	f.IntVar(&cfg.Days, "days", 7, "days of history the events are spread over, ending today")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed: the same seed sends the same events")
	f.Float64Var(&cfg.BadShare, "bad-share", 0.01, "share of bad events (0 to 0.5)")
	f.StringVar(&cfg.Prefix, "prefix", "lg-", "tenant id prefix")
	f.Float64Var(&opts.Rate, "rate", 0, "events per second; 0: as fast as possible")
	f.IntVar(&opts.Batch, "batch", 500, "events per request")
	f.IntVar(&opts.Workers, "workers", 4, "concurrent requests")
	f.BoolVar(&direct, "direct", false, "write straight to the raw Kafka topic instead of the collector")
	f.StringVar(&url, "collector", "", "collector base URL (default http://<collector.listen>)")
	f.StringVar(&tokensFile, "tokens-file", filepath.Join(".services", "loadgen-tokens.json"), "where the tenants' ingest tokens are kept between runs")
	return cmd
}

// runLoadgen registers the generator's tenants (with ingest tokens) and sends its events.
func runLoadgen(ctx context.Context, out io.Writer, c config.Config, lc loadgen.Config, opts loadgen.Options, direct bool, url, tokensFile string) (loadgen.Stats, error) {
	g, err := loadgen.New(lc)
	if err != nil {
		return loadgen.Stats{}, err
	}
	master, err := ops.MasterKey(c.Anonymizer)
	if err != nil {
		return loadgen.Stats{}, err
	}
	tokens, added, err := loadgen.RegisterTenants(ctx, c, master, g.Tenants(), tokensFile)
	if err != nil {
		return loadgen.Stats{}, err
	}
	fmt.Fprintf(out, "tenants: %d (%d newly registered), events: %d over %d days, bad share %.1f%%\n", len(tokens), added, lc.Events, max(lc.Days, 1), 100*lc.BadShare)
	if direct {
		return loadgen.SendKafka(ctx, c.Kafka.Brokers, c.Kafka.RawTopic, g, opts)
	}
	if added > 0 {
		// A running collector learns new tokens at its next registry refresh.
		select {
		case <-ctx.Done():
			return loadgen.Stats{}, ctx.Err()
		case <-time.After(c.Registry.Refresh + time.Second):
		}
	}
	return loadgen.SendHTTP(ctx, url, tokens, g, opts)
}

func printLoadStats(out io.Writer, st loadgen.Stats, direct bool) {
	where := "the collector"
	if direct {
		where = "Kafka"
	}
	refused, reasons := st.Refused()
	fmt.Fprintf(out, "sent %d events to %s in %s (%.0f events/s): accepted %d, refused %d", st.Sent, where, st.Elapsed.Round(time.Millisecond), st.Rate(), st.Accepted, refused)
	if reasons != "" {
		fmt.Fprintf(out, " (%s)", reasons)
	}
	if st.Retried > 0 {
		fmt.Fprintf(out, "; %d requests retried after 503", st.Retried)
	}
	fmt.Fprintln(out)
}
