package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/query"
	"github.com/shukei/shukei/query/breakglass"
	"github.com/shukei/shukei/query/principal"
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
				return query.WriteOpenAPI(cmd.OutOrStdout())
			}
			return ops.OpenAndRun(cmd.Context(), a.cfg, a.log, query.Open)
		},
	}
	cmd.Flags().BoolVar(&openapi, "openapi", false, "print the OpenAPI document and exit")
	return cmd
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
