package main

import (
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/collector"
)

func newCollectorCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "collector",
		Short: "Run the HTTP ingest API (POST /v1/events → Kafka usage.raw)",
		Long: `collector serves POST /v1/events: a JSON array or NDJSON of up to collector.max_events
events (gzip accepted), authenticated by a tenant's ingest token ('Authorization: Bearer ...').
Each event runs through the same decision the processor uses (decode, validate, input-data
guard); accepted events are written to Kafka keyed by tenant and acknowledged by all in-sync
replicas before the reply, which gives every event its outcome: accepted, rejected (with a
reason; do not resend) or retry (resend with the same event_id). Past collector.max_in_flight
requests, or while Kafka is unavailable, it answers 503 with Retry-After.

Also serves /healthz, /readyz and /metrics.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ops.OpenAndRun(cmd.Context(), a.cfg, a.log, collector.Open)
		},
	}
	var tenant string
	token := &cobra.Command{
		Use:   "token",
		Short: "Make a new ingest token for a tenant and print its config line",
		Long: `token prints a new random ingest token (give it to the tenant's collectors; it is shown
once) and the line to add to collector.ingest_tokens, which holds only its SHA-256.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return collector.PrintNewToken(cmd.OutOrStdout(), tenant)
		},
	}
	token.Flags().StringVar(&tenant, "tenant", "", "tenant id the token speaks for")
	_ = token.MarkFlagRequired("tenant")
	cmd.AddCommand(token)
	return cmd
}
