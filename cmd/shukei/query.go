package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/query"
	"github.com/shukei/shukei/query/breakglass"
	"github.com/shukei/shukei/query/principal"
	"github.com/shukei/shukei/registry"
)

func newQueryCmd(a *app) *cobra.Command {
	var openapi bool
	cmd := &cobra.Command{
		Use:   "query",
		Short: "Serve the purpose-scoped reports, the web page and the OpenAPI document",
		Long: `query serves Shukei's reports over HTTP (query.listen). A principal authenticates with its token
(Authorization: Bearer shq_…, from 'shukei principals add'), declares one purpose per request
(?purpose=…), and may run only the named reports of a purpose its grant names. Every request,
whoami and break-glass included, is refused (403) unless the principal is enabled, its grant
unexpired and its kind known; support reads only a tenant with an open ticket. Each purpose is read as
that purpose's read-only ClickHouse user, allowed only its own database ('shukei migrate' declares
them). Aggregate reports build every value from segments of at least k tenants (the policy's k).

Every request, allowed or denied, is appended to the hash-chained audit log before it is answered;
when the log cannot be written the request is refused. 'shukei audit verify' checks the chain.
Requests without a valid token (none, malformed, unknown) are refused (401) from an in-memory
index of token hashes, without a ClickHouse query each, at most query.unauthenticated_rate a
second, counted (shukei_query_unauthenticated_total) and audited once per
query.unauthenticated_summary_every: each answers with its interval's record, and a summary
record carries their count. Beyond query.max_in_flight requests of principals at once: 503 with
Retry-After.

  GET /v1/reports/{name}?purpose=…   a report, JSON (default) or CSV (format=csv)
  GET /v1/whoami                      the principal, its purposes and reports
  POST /v1/breakglass                 request time-boxed access to one tenant's trace (clause
                                      3(2)-5..7): {tenant, clause, justification, ttl}; only an
                                      employee or affiliate whose grant names support; the
                                      justification printable, on one line
  POST /v1/breakglass/{id}/approve    another employee or affiliate holding the approver grant
                                      ('shukei principals add --approver') opens it
  POST /v1/breakglass/{id}/revoke     the requester, its approver or an approver-grant holder
                                      closes it, for good

Partners and contractors can neither request nor approve break-glass access. A grant is used
with support_trace?breakglass=<id> only while it is open and its requester still qualifies
(enabled, unexpired, employee or affiliate, support granted). Its steps are kept as an
append-only log ordered by their audit sequence: once revoked, no approval opens it again.
Every step, allowed or refused, is in the audit log with the grant's tenant.
  GET /v1/reports                     the catalogue
  GET /openapi.json                   the OpenAPI document
  GET /                               the web page
  GET /healthz, /readyz
  query.ops_listen: GET /metrics, /healthz, /readyz

--openapi prints the OpenAPI document and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if openapi {
				b, err := query.OpenAPI()
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			return runQuery(cmd.Context(), a, nil)
		},
	}
	cmd.Flags().BoolVar(&openapi, "openapi", false, "print the OpenAPI document and exit")
	return cmd
}

// newQueryServer wires the service: the internal connection for principals, the audit log and
// tickets, and one reader connection per purpose. close releases the connections.
func newQueryServer(ctx context.Context, a *app) (srv *query.Server, metrics *prometheus.Registry, ready func() error, closeAll func(), err error) {
	// The purpose readers' passwords derive from the query service's own key
	// (clickhouse.role_key_file): it needs no master key.
	key, err := ops.RoleKey(a.cfg, "query")
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if key == nil {
		return nil, nil, nil, nil, fmt.Errorf("the query service connects as its purpose readers, whose passwords derive from its key: set clickhouse.role_key_file ('shukei users key query')")
	}
	k, err := ops.QueryK(a.cfg.Query)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	budget, err := ops.AggregatorBudget(a.cfg.Aggregator, ops.MustPolicy())
	if err != nil {
		return nil, nil, nil, nil, err
	}
	// Its own users (promise 16): one appends to the audit log and the break-glass grants,
	// one reads principals and tickets.
	writer, err := ops.RoleClickHouse(a.cfg, "query", "", a.log)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	reader, err := ops.RoleClickHouse(a.cfg, "query", "_read", a.log)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	conn, err := ops.AwaitClickHouse(ctx, writer, a.log)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	conns := []driver.Conn{conn}
	closeAll = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	rconn, err := ops.AwaitClickHouse(ctx, reader, a.log)
	if err != nil {
		closeAll()
		return nil, nil, nil, nil, err
	}
	conns = append(conns, rconn)
	readers := map[string]driver.Conn{}
	for _, r := range migrations.Readers(a.cfg.ClickHouse.Database, key) {
		rc, err := migrations.OpenReader(ctx, a.cfg.ClickHouse.Options(), r, a.cfg.Query.ReaderWait)
		if err != nil {
			closeAll()
			return nil, nil, nil, nil, err
		}
		conns = append(conns, rc)
		readers[r.Purpose] = rc
	}
	db := a.cfg.ClickHouse.Database
	reg := ops.NewRegistry()
	aopts, err := ops.AuditOptions(a.cfg, a.log)
	if err != nil {
		closeAll()
		return nil, nil, nil, nil, err
	}
	log := audit.New(conn, db, aopts...)
	go ops.AnchorLoop(ctx, "audit log", a.cfg.Audit.AnchorFile, a.cfg.Audit.AnchorEvery, log.Anchor, a.log)
	principals := principal.New(rconn, db)
	srv, err = query.New(query.Options{
		Principals: principals, Audit: log, Tickets: registry.New(rconn, db, nil),
		BreakGlass: breakglass.New(conn, db, principals, log),
		Readers:    readers, Prefix: db, K: k, MaxRows: a.cfg.Query.MaxRows, Timeout: a.cfg.Query.Timeout,
		Lookback: a.cfg.Query.SupportLookback, Budget: budget, YearBudget: aggregator.YearBudgetOf(a.cfg.Aggregator, budget), Metrics: reg, Log: a.log,
		MaxInFlight: a.cfg.Query.MaxInFlight, UnauthenticatedEvery: a.cfg.Query.UnauthenticatedSummaryEvery, UnauthenticatedRate: a.cfg.Query.UnauthenticatedRate,
		Ready: func() error { return conn.Ping(ctx) },
	})
	if err != nil {
		closeAll()
		return nil, nil, nil, nil, err
	}
	return srv, reg, func() error { return conn.Ping(ctx) }, closeAll, nil
}

// runQuery serves until ctx ends. started, if not nil, receives the listening address.
func runQuery(ctx context.Context, a *app, started chan<- string) error {
	srv, reg, ready, closeAll, err := newQueryServer(ctx, a)
	if err != nil {
		return err
	}
	defer closeAll()
	// Requests without a valid token are summarised once an interval: the open one is written
	// at shutdown. The token index is filled before the first request.
	defer srv.Close()
	if err := srv.LoadPrincipals(ctx); err != nil {
		a.log.Warn("principals could not be read at start; the first request with a token reads them", "err", err)
	}
	// Metrics, health and readiness on the ops listener, like every role: the public listener
	// serves nothing without a token but the catalogue, the OpenAPI document and the page.
	opsCtx, stopOps := context.WithCancel(ctx)
	defer stopOps()
	opsErr := make(chan error, 1)
	go func() { opsErr <- ops.ServeOps(opsCtx, a.cfg.Query.OpsListen, reg, ready) }()
	ln, err := net.Listen("tcp", a.cfg.Query.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.Query.Listen, err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: a.cfg.Query.Timeout + 20*time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	a.log.Info("query service listening", "addr", ln.Addr().String(), "page", "http://"+ln.Addr().String()+"/")
	if started != nil {
		started <- ln.Addr().String()
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-opsErr:
		if err != nil {
			_ = hs.Close()
			return fmt.Errorf("query ops listener: %w", err)
		}
		err = <-served
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	return nil
}

// newBreakGlassCmd lists the break-glass grants (they are requested and approved through the
// query service, by authenticated principals).
func newBreakGlassCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "breakglass",
		Short: "List break-glass grants (requested and approved through the query service)",
		Long: `breakglass lists the exceptional, time-boxed access grants of clause 3(2)-5..7: who asked for
which tenant's trace, on which clause and justification, who approved it and until when. An
employee or affiliate whose grant names support requests one with POST /v1/breakglass on the
query service; another employee or affiliate holding the approver grant ('shukei principals add
--approver') approves it with POST /v1/breakglass/{id}/approve; the requester, its approver or
an approver-grant holder revokes it (for good) with POST /v1/breakglass/{id}/revoke. Every step
and use is in the audit log ('shukei audit report --principal P --month YYYY-MM'). Text that is
not printable (from rows stored before it was refused) is shown escaped (\x1b, \u202e).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				db := a.cfg.ClickHouse.Database
				gs, err := breakglass.New(conn, db, principal.New(conn, db), audit.New(conn, db)).List(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tPRINCIPAL\tTENANT\tCLAUSE\tSTATE\tAPPROVED BY\tUNTIL\tREVOKED BY\tJUSTIFICATION\t")
				now := time.Now()
				for _, g := range gs {
					until, approver, revoker := "-", "-", "-"
					if !g.ExpiresAt.IsZero() {
						until = g.ExpiresAt.UTC().Format(time.RFC3339)
					}
					if g.ApprovedBy != "" {
						approver = shown(g.ApprovedBy)
					}
					if g.RevokedBy != "" {
						revoker = shown(g.RevokedBy)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", shown(g.ID), shown(g.Principal), shown(g.Tenant), shown(g.Clause),
						g.State(now), approver, until, revoker, shown(g.Justification))
				}
				return tw.Flush()
			})
		},
	}
	return cmd
}
