package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/query/breakglass"
	"github.com/shukei/shukei/query/principal"
	"github.com/shukei/shukei/registry"
)

// Role is the query service as a long-running role: the server, its metrics, its audit log
// (anchored on a schedule) and its connections. Open makes one; Run runs it.
type Role struct {
	// Started, if not nil, receives the public listener's address once it listens.
	Started chan<- string

	cfg     config.Config
	log     *slog.Logger
	srv     *Server
	audit   *audit.Log
	metrics *prometheus.Registry
	ready   func() error
	conns   ops.Conns
}

// Open wires the service: the internal connections for principals, the audit log and
// tickets, and one reader connection per purpose, awaited while ClickHouse is away. ctx also
// bounds the readiness checks (/readyz pings ClickHouse with it). Close releases the
// connections.
func Open(ctx context.Context, cfg config.Config, log *slog.Logger) (*Role, error) {
	// The purpose readers' passwords derive from the query service's own key
	// (clickhouse.role_key_file): it needs no master key.
	key, err := ops.RoleKey(cfg, "query")
	if err != nil {
		return nil, err
	}
	if key == nil {
		return nil, fmt.Errorf("the query service connects as its purpose readers, whose passwords derive from its key: set clickhouse.role_key_file ('shukei users key query')")
	}
	k, err := ops.QueryK(cfg.Query)
	if err != nil {
		return nil, err
	}
	budget, err := ops.AggregatorBudget(cfg.Aggregator, ops.MustPolicy())
	if err != nil {
		return nil, err
	}
	// Its own users (promise 16): one appends to the audit log and the break-glass grants,
	// one reads principals and tickets.
	conns, err := ops.AwaitRoleClickHouse(ctx, cfg, "query", log, "", "_read")
	if err != nil {
		return nil, err
	}
	r := &Role{cfg: cfg, log: log, conns: conns}
	conn, rconn := conns[0], conns[1]
	readers := map[string]driver.Conn{}
	for _, rd := range migrations.Readers(cfg.ClickHouse.Database, key) {
		rc, err := migrations.OpenReader(ctx, cfg.ClickHouse.Options(), rd, cfg.Query.ReaderWait)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.conns = append(r.conns, rc)
		readers[rd.Purpose] = rc
	}
	db := cfg.ClickHouse.Database
	r.metrics = ops.NewRegistry()
	aopts, err := ops.AuditOptions(cfg, log)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.audit = audit.New(conn, db, aopts...)
	r.ready = func() error { return conn.Ping(ctx) }
	principals := principal.New(rconn, db)
	r.srv, err = New(cfg, Deps{
		Principals: principals, Audit: r.audit, Tickets: registry.New(rconn, db, nil),
		BreakGlass: breakglass.New(conn, db, principals, r.audit), Readers: readers, Database: db, Cluster: cfg.ClickHouse.Cluster,
		K: k, Budget: budget, YearBudget: ops.YearBudgetOf(cfg.Aggregator, budget), Registry: r.metrics, Log: log,
		Ready: r.ready,
	})
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Run serves the reports on query.listen, and /metrics, /healthz and /readyz on
// query.ops_listen, until ctx ends, anchoring the audit log every audit.anchor_every.
func (r *Role) Run(ctx context.Context) error {
	go ops.AnchorLoop(ctx, "audit log", r.cfg.Audit.AnchorFile, r.cfg.Audit.AnchorEvery, r.audit.Anchor, r.log)
	// Requests without a valid token are summarised once an interval: the open one is written
	// at shutdown. The token index is filled before the first request.
	defer r.srv.Close()
	if err := r.srv.LoadPrincipals(ctx); err != nil {
		r.log.Warn("principals could not be read at start; the first request with a token reads them", "err", err)
	}
	// Metrics, health and readiness on the ops listener, like every role: the public listener
	// serves nothing without a token but the catalogue, the OpenAPI document and the page.
	return ops.RunRole(ctx, ops.Role{Listen: r.cfg.Query.OpsListen, Metrics: r.metrics, Ready: r.ready, Name: "query"}, r.serve)
}

// serve serves the public listener until ctx ends.
func (r *Role) serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", r.cfg.Query.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", r.cfg.Query.Listen, err)
	}
	hs := &http.Server{Handler: r.srv, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: r.cfg.Query.Timeout + 20*time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	r.log.Info("query service listening", "addr", ln.Addr().String(), "page", "http://"+ln.Addr().String()+"/")
	if r.Started != nil {
		r.Started <- ln.Addr().String()
	}
	err = ops.Serve(ctx, hs, ln, 10*time.Second)
	if _, ok := errors.AsType[*ops.ShutdownError](err); ok {
		return nil
	}
	return err
}

// Serve opens the query service and runs it until ctx ends. started, if not nil, receives the
// listening address.
func Serve(ctx context.Context, cfg config.Config, log *slog.Logger, started chan<- string) error {
	r, err := Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer r.Close()
	r.Started = started
	return r.Run(ctx)
}

// Close closes the role's connections.
func (r *Role) Close() { r.conns.Close() }
