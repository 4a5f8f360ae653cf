package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/oklog/run"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/collector"
	"github.com/shukei/shukei/registry"
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
			reg := ops.NewRegistry()
			w := collector.NewKafkaWriter(a.cfg.Kafka, a.cfg.Collector)
			defer w.Close()
			c, err := collector.New(a.cfg.Collector, a.cfg.Events, w, reg, a.log)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			// Tokens issued by 'shukei tenants' live in the registry; without ClickHouse the
			// collector still serves the configured ones. With none configured it waits for
			// the registry (a collector started while ClickHouse restarts).
			open := ops.OpenClickHouse
			if len(a.cfg.Collector.IngestTokens) == 0 {
				open = func(ctx context.Context, c config.ClickHouse) (driver.Conn, error) {
					return ops.AwaitClickHouse(ctx, c, a.log)
				}
			}
			// It reads tokens only: its user may read the registry and nothing else (promise 16).
			chc, err := ops.RoleClickHouse(a.cfg, "collector", "", a.log)
			if err != nil {
				return err
			}
			var cache *registry.Cache
			if conn, err := open(ctx, chc); err == nil {
				defer conn.Close()
				cache = registry.NewCache(registry.New(conn, a.cfg.ClickHouse.Database, nil), nil, a.cfg.Processor.RegistryRefresh, a.log)
				if err := cache.Refresh(ctx); err != nil {
					return fmt.Errorf("read the tenant registry (run 'shukei migrate' first?): %w", err)
				}
				c.UseRegistry(cache)
			} else if len(a.cfg.Collector.IngestTokens) == 0 {
				return fmt.Errorf("no ingest tokens configured and the tenant registry is unreachable: %w", err)
			} else {
				a.log.Warn("tenant registry unreachable; only configured ingest tokens are accepted", "err", err)
			}
			a.log.Info("collector listening", "addr", a.cfg.Collector.Listen, "topic", a.cfg.Kafka.RawTopic)
			var g run.Group
			runCtx, cancel := context.WithCancel(ctx)
			g.Add(func() error { return c.Run(runCtx) }, func(error) { cancel() })
			g.Add(func() error { return ops.ServeOps(runCtx, a.cfg.Collector.OpsListen, reg, c.Ready) }, func(error) { cancel() })
			if cache != nil {
				g.Add(func() error { return cache.Run(runCtx) }, func(error) { cancel() })
			}
			return g.Run()
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
			var b [24]byte
			if _, err := rand.Read(b[:]); err != nil {
				return err
			}
			tok := "shk_" + base64.RawURLEncoding.EncodeToString(b[:])
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "token: %s\n", tok)
			fmt.Fprintf(out, "ingest_tokens entry: %s\n", collector.TokenHash(tenant, tok))
			return nil
		},
	}
	token.Flags().StringVar(&tenant, "tenant", "", "tenant id the token speaks for")
	_ = token.MarkFlagRequired("tenant")
	cmd.AddCommand(token)
	return cmd
}
