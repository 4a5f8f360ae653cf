package processor

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

// Role is the processor as a long-running role: the processor, the registry cache it follows,
// its metrics and its connections. Open makes one; Run runs it.
type Role struct {
	cfg     config.Config
	log     *slog.Logger
	p       *Processor
	cache   *registry.Cache
	metrics *prometheus.Registry
	conns   ops.Conns
}

// Open wires the processor role: the master key, a connection as each of its own users
// (promise 16: one writes the event store and, through its views, the purpose marts; one
// reads the registry and the wrapped keys), awaited while ClickHouse is away, the registry
// cache following the policy activations, and the process's metric registry. Close releases
// the connections.
func Open(ctx context.Context, cfg config.Config, log *slog.Logger) (*Role, error) {
	master, err := ops.MasterKey(cfg.Anonymizer)
	if err != nil {
		return nil, err
	}
	// Every connection is dialled through the discarder, so an abandoned insert can be ended
	// with nothing of it kept (discarder).
	disc := newDiscarder()
	cfg.ClickHouse.Dial = disc.dial
	conns, err := ops.AwaitRoleClickHouse(ctx, cfg, "processor", log, "", "_read")
	if err != nil {
		return nil, err
	}
	var shards []Shard
	if cfg.ClickHouse.Cluster != "" {
		// On a cluster each shard's events go to the shard itself (docs/CLUSTER.md).
		c, err := ops.RoleClickHouse(cfg, "processor", "", log)
		if err != nil {
			conns.Close()
			return nil, err
		}
		var more ops.Conns
		shards, more, err = ClusterShards(ctx, conns[0], c)
		if err != nil {
			conns.Close()
			return nil, err
		}
		conns = append(conns, more...)
		log.Info("processor writes per shard", "cluster", cfg.ClickHouse.Cluster, "shards", len(shards))
	}
	reg := ops.NewRegistry()
	p, cache, err := Wire(ctx, conns[0], conns[1], cfg, master, log, func(d *Deps) { d.Registry = reg; d.Shards = shards; d.discarder = disc })
	if err != nil {
		conns.Close()
		return nil, err
	}
	return &Role{cfg: cfg, log: log, p: p, cache: cache, metrics: reg, conns: conns}, nil
}

// Run runs the processor with its registry cache and its /metrics, /healthz and /readyz on
// processor.listen until ctx ends, profiled when processor.profile is set.
func (r *Role) Run(ctx context.Context) error {
	r.log.Info("processor starting", "topic", r.cfg.Kafka.RawTopic, "group", r.cfg.Processor.GroupID, "tenants", len(r.cache.Snapshot().Tenants))
	if mb := r.cfg.Processor.MemoryLimitMB; mb > 0 {
		debug.SetMemoryLimit(int64(mb) << 20)
	}
	stopProfile, err := ops.Profile(r.cfg.Processor.Profile)
	if err != nil {
		return err
	}
	err = ops.RunRole(ctx, ops.Role{Listen: r.cfg.Processor.Listen, Metrics: r.metrics, Cache: r.cache, Refresh: r.cfg.Registry.Refresh}, r.p.Run)
	return errors.Join(err, stopProfile())
}

// Close closes the role's connections.
func (r *Role) Close() { r.conns.Close() }

// Wire wires a processor writing on conn and reading the registry on read: a registry cache
// that follows the recorded policy activations (refreshed once now, so the first batch is
// tagged right) and the processor. deps may adjust the dependencies (metrics registry,
// database, raw copy) before it is built. Open uses it; so do the demo and the benchmarks,
// on connections of their own.
func Wire(ctx context.Context, conn, read driver.Conn, cfg config.Config, master *pseudonym.MasterKey, log *slog.Logger, deps func(*Deps)) (*Processor, *registry.Cache, error) {
	versions, err := policy.Embedded()
	if err != nil {
		return nil, nil, err
	}
	keyring := pseudonym.NewKeyring(master)
	cache := registry.NewCache(registry.New(read, cfg.ClickHouse.Database, master), keyring, cfg.Registry.Refresh, log)
	cache.Follow(versions) // policy activations take effect with each registry refresh
	if err := cache.Refresh(ctx); err != nil {
		return nil, nil, err
	}
	d := Deps{
		Conn: conn, Database: cfg.ClickHouse.Database, Cache: cache, Keyring: keyring,
		Policy: decision.NewPolicyTagger(versions), HashKey: master.Derive("dlq"),
		Registry: prometheus.NewRegistry(), Log: log,
	}
	if deps != nil {
		deps(&d)
	}
	return New(cfg, d), cache, nil
}
