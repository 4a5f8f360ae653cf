package main

import (
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/registry"
)

// newTicketCmd is 'shukei tenants ticket open|close|list': the support tickets that open the
// support purpose for one tenant at a time (clause 3(1)-1).
func newTicketCmd(a *app) *cobra.Command {
	var tenant, id, by, ttlText string
	cmd := &cobra.Command{
		Use:   "ticket",
		Short: "Open, close or list support tickets (support may read a tenant's trace only while one is open)",
		Long: `ticket manages the support tickets of a tenant. While a ticket is open, the support purpose
may read that tenant's event trace through the query service (support_trace), from at most
query.support_lookback before the ticket was opened; every such read is audited with the ticket
id. A ticket closes when 'close' is run or, without anyone acting, when its time to live ends.`,
	}
	open := &cobra.Command{
		Use:   "open",
		Short: "Open (or extend) a ticket for --ttl",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(a, cmd, false, func(r registry.Admin) error { return r.OpenTicket(cmd.Context(), tenant, id, ttlText, by) })
		},
	}
	open.Flags().StringVar(&ttlText, "ttl", "14d", "how long the ticket stays open: days (14d) or a duration (36h, 90m)")
	open.Flags().StringVar(&by, "by", "", "who opened it (default $USER)")
	closeCmd := &cobra.Command{
		Use:   "close",
		Short: "Close a ticket now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(a, cmd, false, func(r registry.Admin) error { return r.CloseTicket(cmd.Context(), tenant, id) })
		},
	}
	for _, c := range []*cobra.Command{open, closeCmd} {
		c.Flags().StringVar(&tenant, "tenant", "", "tenant id")
		c.Flags().StringVar(&id, "ticket", "", "ticket id (letters, digits, . _ -)")
		_ = c.MarkFlagRequired("tenant")
		_ = c.MarkFlagRequired("ticket")
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List tickets (of --tenant, or all) and whether each is open now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(a, cmd, false, func(r registry.Admin) error { return r.ListTickets(cmd.Context(), tenant) })
		},
	}
	list.Flags().StringVar(&tenant, "tenant", "", "only this tenant's tickets")
	cmd.AddCommand(open, closeCmd, list)
	return cmd
}
