package main

import (
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/query"
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
