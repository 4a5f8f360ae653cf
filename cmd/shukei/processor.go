package main

import (
	"context"
	"errors"
	"time"

	"github.com/oklog/run"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/pipeline/processor"
	"github.com/shukei/shukei/registry"
	"github.com/shukei/shukei/schemas/policy"
)

func newProcessorCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "processor",
		Short: "Load usage events from Kafka into ClickHouse, exactly once, tagged with their purposes",
		Long: `processor joins the processor consumer group on the raw topic. For every message it runs the
event decision (decode, validate, input-data guard, pseudonymise, tag purposes under the policy
version in force and the tenant's status and consents), then writes batches to the event store
(which fills the purpose marts) and rejections, with their reasons, to the rejections table and
the DLQ topic. Offsets are committed only after ClickHouse holds the batch; on start and after a
rebalance it resumes from the store's high-water marks, so nothing is stored twice.

While ClickHouse or Kafka is down it stops reading, retries with backoff and resumes by itself
(shukei_processor_backpressure shows it). SIGTERM abandons the current batch without
committing it. Needs the master key (anonymizer.master_key_file or
SHUKEI_ANONYMIZER_MASTER_KEY). Serves /metrics, /healthz and /readyz on processor.listen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			master, err := masterKey(a.cfg.Anonymizer)
			if err != nil {
				return err
			}
			versions, err := policy.Embedded()
			if err != nil {
				return err
			}
			conn, err := openClickHouse(ctx, a.cfg.ClickHouse)
			if err != nil {
				return err
			}
			defer conn.Close()
			keyring := pseudonym.NewKeyring(master)
			cache := registry.NewCache(registry.New(conn, a.cfg.ClickHouse.Database, master), keyring, a.cfg.Processor.RegistryRefresh, a.log)
			cache.Follow(versions) // policy activations take effect with each registry refresh
			if err := cache.Refresh(ctx); err != nil {
				return err
			}
			reg := newRegistry()
			p := processor.New(a.cfg, processor.Deps{
				Conn: conn, Database: a.cfg.ClickHouse.Database, Cache: cache, Keyring: keyring,
				Policy: decision.NewPolicyTagger(versions), HashKey: master.Derive("dlq"),
				Registry: reg, Log: a.log,
			})
			a.log.Info("processor starting", "topic", a.cfg.Kafka.RawTopic, "group", a.cfg.Processor.GroupID, "tenants", len(cache.Snapshot().Tenants))

			// The roles of this process run together and stop together (oklog/run).
			var g run.Group
			runCtx, cancel := context.WithCancel(ctx)
			g.Add(func() error { return p.Run(runCtx) }, func(error) { cancel() })
			g.Add(func() error { return cache.Run(runCtx) }, func(error) { cancel() })
			g.Add(func() error {
				return serveOps(runCtx, a.cfg.Processor.Listen, reg, func() error {
					if time.Since(cache.Snapshot().Loaded) > 10*a.cfg.Processor.RegistryRefresh {
						return errors.New("tenant registry is stale")
					}
					return nil
				})
			}, func(error) { cancel() })
			return g.Run()
		},
	}
}
