package registry

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Ticket is one support ticket of a tenant (clause 3(1)-1). While it is open, the support
// purpose may read that tenant's event trace, and only that tenant's.
type Ticket struct {
	Tenant    string
	ID        string
	OpenedAt  time.Time
	ExpiresAt time.Time
	ClosedAt  time.Time // zero while open
	OpenedBy  string
	UpdatedAt time.Time
}

// Ticket errors.
var (
	// ErrNoTicket means the tenant has no ticket with that id.
	ErrNoTicket = errors.New("no such ticket")
	// ErrTicketClosed means the ticket was closed or has expired.
	ErrTicketClosed = errors.New("ticket is not open")
	// ErrInvalidTicket means an id or time-to-live is not acceptable.
	ErrInvalidTicket = errors.New("invalid ticket")
)

// MaxTicketTTL is the longest a ticket may stay open before it must be opened again.
const MaxTicketTTL = 90 * 24 * time.Hour

// PatternTicket is the form of a ticket id (and of a break-glass grant's id): the registry's,
// and the query service's ticket parameters'.
const PatternTicket = `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`

var ticketPattern = regexp.MustCompile(PatternTicket)

// ValidTicketID says whether id has the form of a ticket id.
func ValidTicketID(id string) bool { return ticketPattern.MatchString(id) }

// ParseTTL reads a ticket's time to live: whole days ("14d") or a Go duration ("36h", "90m").
func ParseTTL(s string) (time.Duration, error) {
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

// OpenAt says whether the ticket is open at t: opened, not closed, not expired.
func (k Ticket) OpenAt(t time.Time) bool {
	return !t.Before(k.OpenedAt) && t.Before(k.ExpiresAt) && (k.ClosedAt.IsZero() || t.Before(k.ClosedAt))
}

// OpenTicket opens (or re-opens, with a new expiry) ticket id of a registered tenant for ttl.
func (r *Registry) OpenTicket(ctx context.Context, tenant, id string, ttl time.Duration, by string) (Ticket, error) {
	if !ValidTicketID(id) {
		return Ticket{}, fmt.Errorf("%w: id %q must match %s", ErrInvalidTicket, id, ticketPattern)
	}
	if ttl <= 0 || ttl > MaxTicketTTL {
		return Ticket{}, fmt.Errorf("%w: time to live %s must be positive and at most %s", ErrInvalidTicket, ttl, MaxTicketTTL)
	}
	t, err := r.Get(ctx, tenant)
	if err != nil {
		return Ticket{}, err
	}
	if t.Status == StatusTerminated {
		return Ticket{}, fmt.Errorf("%w: tenant %s is terminated", ErrInvalidTicket, tenant)
	}
	now := r.now()
	k := Ticket{Tenant: tenant, ID: id, OpenedAt: now, ExpiresAt: now.Add(ttl), OpenedBy: by}
	if old, err := r.Ticket(ctx, tenant, id); err == nil {
		if old.OpenAt(now) {
			k.OpenedAt = old.OpenedAt // extending an open ticket keeps when it was opened
		}
		k.UpdatedAt = old.UpdatedAt
	} else if !errors.Is(err, ErrNoTicket) {
		return Ticket{}, err
	}
	return k, r.putTicket(ctx, &k)
}

// CloseTicket closes an open ticket now.
func (r *Registry) CloseTicket(ctx context.Context, tenant, id string) (Ticket, error) {
	k, err := r.Ticket(ctx, tenant, id)
	if err != nil {
		return Ticket{}, err
	}
	now := r.now()
	if !k.OpenAt(now) {
		return k, fmt.Errorf("%w: %s of %s", ErrTicketClosed, id, tenant)
	}
	k.ClosedAt = now
	return k, r.putTicket(ctx, &k)
}

func (r *Registry) putTicket(ctx context.Context, k *Ticket) error {
	now := r.now()
	if !k.UpdatedAt.Before(now) {
		now = k.UpdatedAt.Add(time.Second) // two changes within a second must still order
	}
	k.UpdatedAt = now
	b, err := r.conn.PrepareBatch(ctx, "INSERT INTO "+r.db+"_registry.tickets (tenant_id, ticket_id, opened_at, expires_at, closed_at, opened_by, updated_at)")
	if err != nil {
		return err
	}
	closed := k.ClosedAt
	if closed.IsZero() {
		closed = time.Unix(0, 0).UTC()
	}
	if err := b.Append(k.Tenant, k.ID, k.OpenedAt, k.ExpiresAt, closed, k.OpenedBy, now); err != nil {
		return err
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("write ticket %s of %s: %w", k.ID, k.Tenant, err)
	}
	return nil
}

// Ticket returns the current state of one ticket.
func (r *Registry) Ticket(ctx context.Context, tenant, id string) (Ticket, error) {
	ks, err := r.tickets(ctx, "WHERE tenant_id = ? AND ticket_id = ?", tenant, id)
	if err != nil {
		return Ticket{}, err
	}
	if len(ks) == 0 {
		return Ticket{}, fmt.Errorf("%w: %s of tenant %s", ErrNoTicket, id, tenant)
	}
	return ks[0], nil
}

// Tickets returns a tenant's tickets (every tenant's when tenant is empty), newest first.
func (r *Registry) Tickets(ctx context.Context, tenant string) ([]Ticket, error) {
	if tenant == "" {
		return r.tickets(ctx, "")
	}
	return r.tickets(ctx, "WHERE tenant_id = ?", tenant)
}

func (r *Registry) tickets(ctx context.Context, where string, args ...any) ([]Ticket, error) {
	rows, err := r.conn.Query(ctx, "SELECT tenant_id, ticket_id, opened_at, expires_at, closed_at, opened_by, updated_at FROM "+r.db+"_registry.tickets FINAL "+where+" ORDER BY opened_at DESC, ticket_id", args...)
	if err != nil {
		return nil, fmt.Errorf("read tickets: %w", err)
	}
	defer rows.Close()
	var out []Ticket
	for rows.Next() {
		var k Ticket
		if err := rows.Scan(&k.Tenant, &k.ID, &k.OpenedAt, &k.ExpiresAt, &k.ClosedAt, &k.OpenedBy, &k.UpdatedAt); err != nil {
			return nil, err
		}
		if k.ClosedAt.Unix() == 0 {
			k.ClosedAt = time.Time{}
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
