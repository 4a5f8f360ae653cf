package registry

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Admin is the registry as 'shukei tenants' and 'shukei policy' change it: each method makes
// one change (or reads one listing) through Reg and reports it to Out in the operator's words.
// An ingest token is shown there once, and nowhere else.
type Admin struct {
	Reg *Registry
	Out io.Writer
}

// AddTenant registers t (Registry.Add) and prints its first ingest token.
func (a Admin) AddTenant(ctx context.Context, t Tenant) error {
	tok, err := a.Reg.Add(ctx, t)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Out, "added %s (%s, %s, %s)\n", t.ID, t.Status, t.Edition, t.SizeBand)
	if tok == "" {
		fmt.Fprintln(a.Out, "no ingest token: a terminated tenant is silent")
	} else {
		fmt.Fprintf(a.Out, "ingest token (shown once): %s\n", tok)
	}
	return nil
}

// SetTenant changes the registered tenant change.ID as Tenant.Set does and prints the result;
// setting it terminated revokes its tokens and starts the retention clock.
func (a Admin) SetTenant(ctx context.Context, change Tenant) error {
	got, err := a.Reg.Update(ctx, change.ID, func(t *Tenant) error {
		t.Set(change)
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Out, "updated %s: %s, %s, %s\n", got.ID, got.Status, got.Edition, got.SizeBand)
	if got.Status == StatusTerminated {
		fmt.Fprintf(a.Out, "terminated: every ingest token revoked; contract end %s starts the retention clock\n", got.ContractEnd.Format(time.DateOnly))
	}
	return nil
}

// Consent records a consent of tenant id (or its withdrawal, given=false) to purpose under
// policy version, given at at (Registry.Consent), and prints it.
func (a Admin) Consent(ctx context.Context, id, purpose string, version int, given bool, at time.Time) error {
	if err := a.Reg.Consent(ctx, id, purpose, version, given, at); err != nil {
		return err
	}
	verb := "consented to"
	if !given {
		verb = "withdrew consent to"
	}
	fmt.Fprintf(a.Out, "%s %s %s under policy v%d at %s\n", id, verb, purpose, version, at.Format(time.RFC3339))
	return nil
}

// ListTenants prints every registered tenant (WriteTenants).
func (a Admin) ListTenants(ctx context.Context) error {
	all, err := a.Reg.List(ctx)
	if err != nil {
		return err
	}
	return WriteTenants(a.Out, all)
}

// IssueToken issues another ingest token for tenant id (Registry.AddToken) and prints it.
func (a Admin) IssueToken(ctx context.Context, id string) error {
	tok, err := a.Reg.AddToken(ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Out, "ingest token for %s (shown once): %s\n", id, tok)
	return nil
}

// RevokeToken withdraws one ingest token of tenant id, or with all set every one
// (Registry.RevokeToken), and prints how many.
func (a Admin) RevokeToken(ctx context.Context, id, tokenOrHash string, all bool) error {
	n, err := a.Reg.RevokeToken(ctx, id, tokenOrHash, all)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Out, "revoked %d ingest token(s) of %s\n", n, id)
	return nil
}

// OpenTicket opens (or extends) a support ticket for ttl (ParseTTL; 'ticket open --ttl'), by
// by ($USER when empty), and prints until when (Registry.OpenTicket).
func (a Admin) OpenTicket(ctx context.Context, tenant, id, ttlText, by string) error {
	if by == "" {
		by = os.Getenv("USER")
	}
	ttl, err := ParseTTL(ttlText)
	if err != nil {
		return fmt.Errorf("--ttl: %w", err)
	}
	k, err := a.Reg.OpenTicket(ctx, tenant, id, ttl, by)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Out, "ticket %s of %s open from %s until %s\n", k.ID, k.Tenant,
		k.OpenedAt.UTC().Format(time.RFC3339), k.ExpiresAt.UTC().Format(time.RFC3339))
	return nil
}

// CloseTicket closes an open ticket now (Registry.CloseTicket) and prints when.
func (a Admin) CloseTicket(ctx context.Context, tenant, id string) error {
	k, err := a.Reg.CloseTicket(ctx, tenant, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Out, "ticket %s of %s closed at %s\n", k.ID, k.Tenant, k.ClosedAt.UTC().Format(time.RFC3339))
	return nil
}

// ListTickets prints tenant's tickets (every tenant's when empty) as they stand now
// (WriteTickets).
func (a Admin) ListTickets(ctx context.Context, tenant string) error {
	ks, err := a.Reg.Tickets(ctx, tenant)
	if err != nil {
		return err
	}
	return WriteTickets(a.Out, ks, time.Now())
}

// ActivatePolicy puts policy version in force from at, by by ($USER when empty;
// Registry.ActivatePolicy), and prints since when it is.
func (a Admin) ActivatePolicy(ctx context.Context, version int, at time.Time, by string) error {
	if by == "" {
		by = os.Getenv("USER")
	}
	act, err := a.Reg.ActivatePolicy(ctx, version, at, by)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Out, "policy v%d in force from %s\n", act.Version, act.At.Format(time.RFC3339))
	return nil
}

// PolicyStatus prints the policy versions built in and since when each is in force, with the
// recorded activations (policy.Versions.WriteStatus).
func (a Admin) PolicyStatus(ctx context.Context) error {
	v, err := a.Reg.Versions(ctx)
	if err != nil {
		return err
	}
	return v.WriteStatus(a.Out)
}

// Set changes t to what change gives: its status, edition and size band when not empty, its
// contract end when not zero. The other fields of change (its ID among them) are ignored.
func (t *Tenant) Set(change Tenant) {
	if change.Status != "" {
		t.Status = change.Status
	}
	if change.Edition != "" {
		t.Edition = change.Edition
	}
	if change.SizeBand != "" {
		t.SizeBand = change.SizeBand
	}
	if !change.ContractEnd.IsZero() {
		t.ContractEnd = change.ContractEnd
	}
}

// WriteTenants prints tenants as a table, one a line: status, edition, size band, contract end
// ("-" for none), how many ingest tokens, and each consent as +purpose@vN (given) or -purpose@vN
// (withdrawn), in time order.
func WriteTenants(w io.Writer, tenants []Tenant) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tSTATUS\tEDITION\tSIZE\tCONTRACT END\tTOKENS\tCONSENTS")
	for _, x := range tenants {
		end := "-"
		if !x.ContractEnd.IsZero() {
			end = x.ContractEnd.Format(time.DateOnly)
		}
		var cs []string
		for _, c := range x.Consents {
			sign := "+"
			if !c.Given {
				sign = "-"
			}
			cs = append(cs, fmt.Sprintf("%s%s@v%d", sign, c.Purpose, c.PolicyVersion))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", x.ID, x.Status, x.Edition, x.SizeBand, end, len(x.TokenHashes), strings.Join(cs, " "))
	}
	return tw.Flush()
}

// WriteTickets prints tickets as a table, one a line, each with its state at now: open (until
// it expires), closed (when it was closed before it expired) or expired.
func WriteTickets(w io.Writer, tickets []Ticket, now time.Time) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tTICKET\tSTATE\tOPENED\tUNTIL\tBY\t")
	for _, k := range tickets {
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
}
