package main

import (
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/query/breakglass"
	"github.com/shukei/shukei/query/principal"
)

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
				return breakglass.New(conn, db, principal.New(conn, db), audit.New(conn, db)).ListTo(cmd.Context(), cmd.OutOrStdout(), time.Now())
			})
		},
	}
	return cmd
}
