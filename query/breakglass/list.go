package breakglass

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/shukei/shukei/audit"
)

// ListTo writes every grant, its state as at now (List, WriteList): 'shukei breakglass'.
func (s *Store) ListTo(ctx context.Context, w io.Writer, now time.Time) error {
	gs, err := s.List(ctx)
	if err != nil {
		return err
	}
	return WriteList(w, gs, now)
}

// WriteList writes gs (Store.List) as a table, each grant's state as at now: who asked for
// which tenant, on which clause and justification, who approved it, until when, and who revoked
// it ('shukei breakglass'). Text that is not printable (rows stored before it was refused) is
// shown escaped (audit.Shown).
func WriteList(w io.Writer, gs []Grant, now time.Time) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPRINCIPAL\tTENANT\tCLAUSE\tSTATE\tAPPROVED BY\tUNTIL\tREVOKED BY\tJUSTIFICATION\t")
	for _, g := range gs {
		until, approver, revoker := "-", "-", "-"
		if !g.ExpiresAt.IsZero() {
			until = g.ExpiresAt.UTC().Format(time.RFC3339)
		}
		if g.ApprovedBy != "" {
			approver = audit.Shown(g.ApprovedBy)
		}
		if g.RevokedBy != "" {
			revoker = audit.Shown(g.RevokedBy)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", audit.Shown(g.ID), audit.Shown(g.Principal), audit.Shown(g.Tenant), audit.Shown(g.Clause),
			g.State(now), approver, until, revoker, audit.Shown(g.Justification))
	}
	return tw.Flush()
}
