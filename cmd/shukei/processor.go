package main

import (
	"context"
	"log/slog"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/pipeline/processor"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
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
			master, err := ops.MasterKey(a.cfg.Anonymizer)
			if err != nil {
				return err
			}
			// Its own users (promise 16): one writes the event store (and, through its views,
			// the purpose marts), one reads the registry and the wrapped keys.
			writer, err := ops.RoleClickHouse(a.cfg, "processor", "", a.log)
			if err != nil {
				return err
			}
			reader, err := ops.RoleClickHouse(a.cfg, "processor", "_read", a.log)
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
			reg := ops.NewRegistry()
			p, cache, err := newProcessor(ctx, conn, rconn, a.cfg, master, a.log, func(d *processor.Deps) { d.Registry = reg })
			if err != nil {
				return err
			}
			a.log.Info("processor starting", "topic", a.cfg.Kafka.RawTopic, "group", a.cfg.Processor.GroupID, "tenants", len(cache.Snapshot().Tenants))
			return ops.RunRole(ctx, ops.Role{Listen: a.cfg.Processor.Listen, Metrics: reg, Cache: cache, Refresh: a.cfg.Processor.RegistryRefresh}, p.Run)
		},
	}
}

// newProcessor wires a processor writing on conn and reading the registry on read: a registry cache that follows the recorded policy
// activations (refreshed once now, so the first batch is tagged right) and the processor. deps
// may adjust the dependencies (metrics registry, database, raw copy) before it is built.
func newProcessor(ctx context.Context, conn, read driver.Conn, cfg config.Config, master *pseudonym.MasterKey, log *slog.Logger, deps func(*processor.Deps)) (*processor.Processor, *registry.Cache, error) {
	versions, err := policy.Embedded()
	if err != nil {
		return nil, nil, err
	}
	keyring := pseudonym.NewKeyring(master)
	cache := registry.NewCache(registry.New(read, cfg.ClickHouse.Database, master), keyring, cfg.Processor.RegistryRefresh, log)
	cache.Follow(versions) // policy activations take effect with each registry refresh
	if err := cache.Refresh(ctx); err != nil {
		return nil, nil, err
	}
	d := processor.Deps{
		Conn: conn, Database: cfg.ClickHouse.Database, Cache: cache, Keyring: keyring,
		Policy: decision.NewPolicyTagger(versions), HashKey: master.Derive("dlq"),
		Registry: prometheus.NewRegistry(), Log: log,
	}
	if deps != nil {
		deps(&d)
	}
	return processor.New(cfg, d), cache, nil
}
