package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shukei/shukei/registry"
)

// newTicketCmd is 'shukei tenants ticket open|close|list': the support tickets that open the
// support purpose for one tenant at a time (clause 3(1)-1).
func newTicketCmd(withReg func(*cobra.Command, func(*registry.Registry) error) error) *cobra.Command {
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
			return withReg(cmd, func(r *registry.Registry) error {
				if by == "" {
					by = os.Getenv("USER")
				}
				ttl, err := parseDays(ttlText)
				if err != nil {
					return fmt.Errorf("--ttl: %w", err)
				}
				k, err := r.OpenTicket(cmd.Context(), tenant, id, ttl, by)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ticket %s of %s open from %s until %s\n", k.ID, k.Tenant,
					k.OpenedAt.UTC().Format(time.RFC3339), k.ExpiresAt.UTC().Format(time.RFC3339))
				return nil
			})
		},
	}
	open.Flags().StringVar(&ttlText, "ttl", "14d", "how long the ticket stays open: days (14d) or a duration (36h, 90m)")
	open.Flags().StringVar(&by, "by", "", "who opened it (default $USER)")
	closeCmd := &cobra.Command{
		Use:   "close",
		Short: "Close a ticket now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withReg(cmd, func(r *registry.Registry) error {
				k, err := r.CloseTicket(cmd.Context(), tenant, id)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ticket %s of %s closed at %s\n", k.ID, k.Tenant, k.ClosedAt.UTC().Format(time.RFC3339))
				return nil
			})
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
			return withReg(cmd, func(r *registry.Registry) error {
				ks, err := r.Tickets(cmd.Context(), tenant)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TENANT\tTICKET\tSTATE\tOPENED\tUNTIL\tBY\t")
				now := time.Now()
				for _, k := range ks {
					state, until := "open", k.ExpiresAt
					switch {
					case !k.ClosedAt.IsZero() && k.ClosedAt.Before(k.ExpiresAt):
						state, until = "closed", k.ClosedAt
					case !k.OpenAt(now):
						state = "expired"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", k.Tenant, k.ID, state, k.OpenedAt.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339), k.OpenedBy)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&tenant, "tenant", "", "only this tenant's tickets")
	cmd.AddCommand(open, closeCmd, list)
	return cmd
}

// parseDays reads a duration that may also be written in whole days ("14d").
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.Atoi(n)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("%q: want a positive number of days such as 14d", s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: want days (14d) or a duration (36h)", s)
	}
	return d, nil
}
