package retention

import (
	"context"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/processor"
	"github.com/shukei/shukei/registry"
)

// newKeeper is the retention keeper of the configured database: it deletes on conn (on a
// cluster, on each shard, connected with the settings of cfg.ClickHouse) and appends its
// receipts to the audit log on auditConn. The function it returns closes what it opened.
func newKeeper(ctx context.Context, cfg config.Config, conn, auditConn driver.Conn, log *slog.Logger) (*Keeper, func(), error) {
	d := keeperDeps(cfg, conn, auditConn, log)
	if cfg.ClickHouse.Cluster == "" {
		return New(cfg, d), func() {}, nil
	}
	shards, conns, err := processor.ClusterShards(ctx, conn, cfg.ClickHouse)
	if err != nil {
		return nil, nil, err
	}
	d.Shards = shards
	return New(cfg, d), conns.Close, nil
}

// keeperDeps are the dependencies of the keeper of the configured database: the registry and
// the policy's retention, the audit log on auditConn (keyed as configured), and the
// tombstones' key from the master key when there is one.
func keeperDeps(cfg config.Config, conn, auditConn driver.Conn, log *slog.Logger) Deps {
	db := cfg.ClickHouse.Database
	d := Deps{Conn: conn, Database: db, Registry: registry.New(conn, db, nil),
		Audit: audit.New(auditConn, db, ops.AuditOptionsOrRefuse(cfg, log)...), Policy: ops.MustPolicy().Retention}
	if mk, err := ops.MasterKey(cfg.Anonymizer); err == nil {
		d.TombstoneKey = mk.Derive("dlq")
	} else {
		log.Warn("no master key: a tenant deleted now leaves no tombstone, so its events still in Kafka would be kept as unknown_tenant refusals, with its id; configure anonymizer.master_key_file", "err", err)
	}
	return d
}

// Role is 'shukei retention run': the keeper, connected as retention's own users, run once or
// every Every. Open makes one; set its schedule, then Run runs it.
type Role struct {
	// Every, if positive, makes Run repeat a run this often until its context ends (a failed
	// run is logged and tried again at the next tick); 0: Run runs once.
	Every time.Duration
	// At is the time a run acts as of; nil: now, in UTC. Its error fails the run.
	At func() (time.Time, error)
	// Report, if not nil, receives each run's report (also of a run that failed part-way).
	Report func(Report)

	log   *slog.Logger
	k     *Keeper
	conns ops.Conns
}

// Open connects as retention's own users (promise 16): one deletes tenants' rows and expired
// data, one reads the releases, one appends its receipts to the audit log (and may delete
// nothing); each awaited while ClickHouse is away. Close releases the connections.
func Open(ctx context.Context, cfg config.Config, log *slog.Logger) (*Role, error) {
	conns, err := ops.AwaitRoleClickHouse(ctx, cfg, "retention", log, "", "_read")
	if err != nil {
		return nil, err
	}
	aconns, err := ops.AwaitRoleClickHouse(ctx, cfg, "retention", log, "_audit")
	if err != nil {
		conns.Close()
		return nil, err
	}
	conns = append(conns, aconns...)
	d := keeperDeps(cfg, conns[0], conns[2], log)
	d.Read = conns[1]
	if cfg.ClickHouse.Cluster != "" {
		// On a cluster a tenant's rows are deleted on its shard and verified gone on every
		// replica (docs/CLUSTER.md), as retention's own writer on each node.
		c, err := ops.RoleClickHouse(cfg, "retention", "", log)
		if err != nil {
			conns.Close()
			return nil, err
		}
		shards, more, err := processor.ClusterShards(ctx, conns[0], c)
		if err != nil {
			conns.Close()
			return nil, err
		}
		conns = append(conns, more...)
		d.Shards = shards
	}
	return &Role{log: log, k: New(cfg, d), conns: conns}, nil
}

// Run runs the keeper once, or every r.Every until ctx ends.
func (r *Role) Run(ctx context.Context) error {
	once := func() error {
		now := time.Now().UTC()
		if r.At != nil {
			var err error
			if now, err = r.At(); err != nil {
				return err
			}
		}
		rep, err := r.k.Run(ctx, now)
		if r.Report != nil {
			r.Report(rep)
		}
		return err
	}
	if r.Every <= 0 {
		return once()
	}
	t := time.NewTicker(r.Every)
	defer t.Stop()
	for {
		if err := once(); err != nil && ctx.Err() == nil {
			r.log.Error("retention run failed; retrying at the next tick", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Close closes the role's connections.
func (r *Role) Close() { r.conns.Close() }
