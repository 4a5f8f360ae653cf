package aggregator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

// Role is the aggregator as a long-running role: the aggregator, the registry cache it
// follows, its metrics, the budget ledger it anchors and its connections. Open makes one; Run
// runs it.
type Role struct {
	cfg     config.Config
	log     *slog.Logger
	agg     *Aggregator
	cache   *registry.Cache
	metrics *prometheus.Registry
	ledger  *ledger.Ledger // anchored every ledger.anchor_every; nil: not anchored
	conns   ops.Conns
}

// Open wires the aggregator role: the master key, a connection as each of its own users
// (promise 16: one writes its state, the releases, the ledger and the gated atoms; one reads
// the registry, the wrapped keys and the marts atoms are computed from), awaited while
// ClickHouse is away, the registry cache, the process's metric registry and the aggregator
// (Wire). Close releases the connections.
func Open(ctx context.Context, cfg config.Config, log *slog.Logger) (*Role, error) {
	master, err := ops.MasterKey(cfg.Anonymizer)
	if err != nil {
		return nil, err
	}
	conns, err := ops.AwaitRoleClickHouse(ctx, cfg, "aggregator", log, "", "_read")
	if err != nil {
		return nil, err
	}
	r, err := open(ctx, cfg, log, master, conns)
	if err != nil {
		conns.Close()
		return nil, err
	}
	return r, nil
}

func open(ctx context.Context, cfg config.Config, log *slog.Logger, master *pseudonym.MasterKey, conns ops.Conns) (*Role, error) {
	conn, rconn := conns[0], conns[1]
	keyring := pseudonym.NewKeyring(master)
	cache := registry.NewCache(registry.New(rconn, cfg.ClickHouse.Database, master), keyring, cfg.Registry.Refresh, log)
	reg := ops.NewRegistry()
	agg, err := Wire(ctx, cfg, log, cache, keyring, master, func(d *Deps) { d.Conn, d.Marts, d.Registry = conn, rconn, reg })
	if err != nil {
		return nil, err
	}
	r := &Role{cfg: cfg, log: log, agg: agg, cache: cache, metrics: reg, conns: conns}
	if cfg.Ledger.AnchorEvery > 0 {
		lkey, err := ops.LedgerKey(cfg, nil)
		if err != nil {
			return nil, err
		}
		r.ledger = ledger.New(conn, cfg.ClickHouse.Database).WithKey(lkey)
	}
	return r, nil
}

// Run runs the aggregator with its registry cache and its /metrics, /healthz and /readyz on
// aggregator.listen until ctx ends, anchoring the budget ledger every ledger.anchor_every.
func (r *Role) Run(ctx context.Context) error {
	if r.ledger != nil {
		db := r.cfg.ClickHouse.Database
		go ops.AnchorLoop(ctx, "budget ledger", r.cfg.Ledger.AnchorFile, r.cfg.Ledger.AnchorEvery,
			func(ctx context.Context) (chain.Anchor, error) { return r.ledger.Anchor(ctx, db) }, r.log)
	}
	r.log.Info("aggregator starting", "topic", r.cfg.Kafka.RawTopic, "group", r.cfg.Aggregator.GroupID, "window", r.cfg.Aggregator.Window, "plan", r.agg.PlanHash())
	return ops.RunRole(ctx, ops.Role{Listen: r.cfg.Aggregator.Listen, Metrics: r.metrics, Cache: r.cache, Refresh: r.cfg.Registry.Refresh}, r.agg.Run)
}

// Close closes the role's connections.
func (r *Role) Close() { r.conns.Close() }

// Wire wires an aggregator from the configuration; the caller runs it. It makes cache
// follow the policy activations and refreshes it once. deps sets the connections and the
// metrics registry (and may adjust the rest) before it is built. Open uses it; so does the
// demo, on a connection of its own.
func Wire(ctx context.Context, cfg config.Config, log *slog.Logger, cache *registry.Cache, keyring *pseudonym.Keyring, master *pseudonym.MasterKey, deps func(*Deps)) (*Aggregator, error) {
	versions, err := policy.Embedded()
	if err != nil {
		return nil, err
	}
	cache.Follow(versions) // policy activations take effect with each registry refresh
	if err := cache.Refresh(ctx); err != nil {
		return nil, err
	}
	inForce := versions.InForce(time.Now())
	budget, err := ops.AggregatorBudget(cfg.Aggregator, inForce)
	if err != nil {
		return nil, err
	}
	plan, err := NewPlan(cfg.Aggregator, inForce.Version)
	if err != nil {
		return nil, fmt.Errorf("aggregator plan: %w", err)
	}
	k, err := ops.QueryK(cfg.Query)
	if err != nil {
		return nil, err
	}
	lkey, err := ops.LedgerKey(cfg, log)
	if err != nil {
		return nil, err
	}
	d := Deps{
		K:         k,
		LedgerKey: lkey,
		Database:  cfg.ClickHouse.Database, Cache: cache, Keyring: keyring,
		Policy: decision.NewPolicyTagger(versions), HashKey: master.Derive("dlq"),
		SampleKey: master.Derive("aggregator-sampling"), Plan: plan, Budget: budget, Log: log,
		YearBudget: ledger.Budget{Epsilon: cfg.Aggregator.BudgetEpsilonYear, Delta: cfg.Aggregator.BudgetDeltaYear},
	}
	deps(&d)
	return New(cfg, d)
}
