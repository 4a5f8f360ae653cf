// Package breakglass is the exceptional path of clause 3(2)-5..7: a principal asks for
// time-boxed access to one tenant's event trace with a written justification, a second
// principal (an employee, not the requester) approves it, and only then, and only until the
// time box ends, may the requester read that tenant's trace through the query service. Every
// step is appended to the audit log; nothing about it is silent.
package breakglass

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/query/audit"
	"github.com/shukei/shukei/query/principal"
)

// Clauses a break-glass request may rest on.
var Clauses = map[string]string{
	"3(2)-5": "a customer's violation of the terms, to protect other customers' and the vendor's rights and property",
	"3(2)-6": "protection of a person's life, body or property",
	"3(2)-7": "required by law (e.g. a written inquiry from investigating authorities)",
}

// MaxTTL bounds the time box.
const MaxTTL = 72 * time.Hour

// Errors.
var (
	ErrInvalid     = errors.New("invalid break-glass request")
	ErrNotFound    = errors.New("no such break-glass request")
	ErrSelfApprove = errors.New("a break-glass request needs a second principal's approval")
	ErrNotOpen     = errors.New("break-glass access is not open")
)

// Grant is one request and its state.
type Grant struct {
	ID            string
	Principal     string
	Purpose       string // support: the event trace of the tenant
	Tenant        string
	Clause        string
	Justification string
	TTL           time.Duration
	RequestedAt   time.Time
	ApprovedBy    string
	ApprovedAt    time.Time // zero until approved
	ExpiresAt     time.Time // approval + TTL
	RevokedAt     time.Time
	UpdatedAt     time.Time
}

// State says where the grant stands at t.
func (g Grant) State(t time.Time) string {
	switch {
	case !g.RevokedAt.IsZero():
		return "revoked"
	case g.ApprovedAt.IsZero():
		return "pending"
	case !t.Before(g.ExpiresAt):
		return "expired"
	}
	return "open"
}

// Store keeps the grants of one database and writes every step to its audit log.
type Store struct {
	conn       driver.Conn
	db         string
	principals *principal.Store
	audit      *audit.Log
	now        func() time.Time
}

// New returns the store of database db.
func New(conn driver.Conn, db string, principals *principal.Store, log *audit.Log) *Store {
	return &Store{conn: conn, db: db, principals: principals, audit: log, now: func() time.Time { return time.Now().UTC().Truncate(time.Second) }}
}

// Request records a request of principal for the support trace of tenant, and returns it
// pending.
func (s *Store) Request(ctx context.Context, principalID, tenant, clause, justification string, ttl time.Duration) (Grant, error) {
	var probs []string
	if _, ok := Clauses[clause]; !ok {
		probs = append(probs, fmt.Sprintf("clause %q is not one of 3(2)-5, 3(2)-6, 3(2)-7", clause))
	}
	if j := strings.TrimSpace(justification); utf8.RuneCountInString(j) < 20 {
		probs = append(probs, "the justification must say in writing why (20 characters at least)")
	}
	if ttl <= 0 || ttl > MaxTTL {
		probs = append(probs, fmt.Sprintf("the time box %s must be positive and at most %s", ttl, MaxTTL))
	}
	if tenant == "" {
		probs = append(probs, "a tenant is required: break-glass opens one tenant's trace")
	}
	if len(probs) > 0 {
		return Grant{}, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(probs, "; "))
	}
	p, err := s.principals.Get(ctx, principalID)
	if err != nil {
		return Grant{}, err
	}
	if p.Disabled {
		return Grant{}, fmt.Errorf("%w: %s", principal.ErrDisabled, p.ID)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	g := Grant{ID: "bg-" + hex.EncodeToString(b[:]), Principal: p.ID, Purpose: "support", Tenant: tenant, Clause: clause,
		Justification: strings.TrimSpace(justification), TTL: ttl, RequestedAt: s.now()}
	if err := s.record(ctx, p, g, "breakglass_request", "requested", fmt.Sprintf("clause %s, %s for tenant %s: %s", clause, ttl, tenant, g.Justification)); err != nil {
		return Grant{}, err
	}
	return g, s.put(ctx, &g)
}

// Approve opens a pending request for its time box, from now. The approver must be another
// principal, an employee, enabled.
func (s *Store) Approve(ctx context.Context, id, approverID string) (Grant, error) {
	g, err := s.Get(ctx, id)
	if err != nil {
		return Grant{}, err
	}
	ap, err := s.principals.Get(ctx, approverID)
	if err != nil {
		return Grant{}, err
	}
	switch {
	case ap.ID == g.Principal:
		return Grant{}, fmt.Errorf("%w: %s cannot approve its own request %s", ErrSelfApprove, ap.ID, id)
	case ap.Kind != principal.Employee:
		return Grant{}, fmt.Errorf("%w: the approver must be an employee, %s is a %s", ErrSelfApprove, ap.ID, ap.Kind)
	case ap.Disabled:
		return Grant{}, fmt.Errorf("%w: %s", principal.ErrDisabled, ap.ID)
	case g.State(s.now()) != "pending":
		return Grant{}, fmt.Errorf("%w: %s is %s, not pending", ErrNotOpen, id, g.State(s.now()))
	}
	g.ApprovedBy, g.ApprovedAt = ap.ID, s.now()
	g.ExpiresAt = g.ApprovedAt.Add(g.TTL)
	if err := s.record(ctx, ap, g, "breakglass_approve", "approved", fmt.Sprintf("approved %s's access to tenant %s until %s", g.Principal, g.Tenant, g.ExpiresAt.Format(time.RFC3339))); err != nil {
		return Grant{}, err
	}
	return g, s.put(ctx, &g)
}

// Revoke closes a grant now.
func (s *Store) Revoke(ctx context.Context, id, byID string) (Grant, error) {
	g, err := s.Get(ctx, id)
	if err != nil {
		return Grant{}, err
	}
	by, err := s.principals.Get(ctx, byID)
	if err != nil {
		return Grant{}, err
	}
	if st := g.State(s.now()); st == "revoked" || st == "expired" {
		return g, fmt.Errorf("%w: %s is already %s", ErrNotOpen, id, st)
	}
	g.RevokedAt = s.now()
	if err := s.record(ctx, by, g, "breakglass_revoke", "revoked", "revoked"); err != nil {
		return Grant{}, err
	}
	return g, s.put(ctx, &g)
}

// Check returns the grant id when it lets principalID read tenant's trace at t, or why not.
func (s *Store) Check(ctx context.Context, id, principalID, tenant string, t time.Time) (Grant, error) {
	g, err := s.Get(ctx, id)
	if err != nil {
		return Grant{}, err
	}
	switch {
	case g.Principal != principalID:
		return g, fmt.Errorf("%w: %s was requested by another principal", ErrNotOpen, id)
	case g.Tenant != tenant:
		return g, fmt.Errorf("%w: %s opens tenant %s, not %s", ErrNotOpen, id, g.Tenant, tenant)
	}
	if st := g.State(t); st != "open" {
		return g, fmt.Errorf("%w: %s is %s", ErrNotOpen, id, st)
	}
	return g, nil
}

func (s *Store) record(ctx context.Context, p principal.Principal, g Grant, report, decision, reason string) error {
	_, err := s.audit.Append(ctx, audit.Record{Principal: p.ID, Kind: p.Kind, ContractRef: p.ContractRef, Purpose: g.Purpose,
		Ticket: g.ID, Report: report, Decision: decision, Reason: reason})
	if err != nil {
		return fmt.Errorf("the audit log cannot be written, so nothing was changed: %w", err)
	}
	return nil
}

const cols = "id, principal_id, purpose, tenant_id, clause, justification, ttl_seconds, requested_at, approved_by, approved_at, expires_at, revoked_at, updated_at"

func (s *Store) put(ctx context.Context, g *Grant) error {
	now := s.now()
	if !g.UpdatedAt.Before(now) {
		now = g.UpdatedAt.Add(time.Second)
	}
	g.UpdatedAt = now
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.db+".breakglass ("+cols+")")
	if err != nil {
		return err
	}
	zero := func(t time.Time) time.Time {
		if t.IsZero() {
			return time.Unix(0, 0).UTC()
		}
		return t
	}
	if err := b.Append(g.ID, g.Principal, g.Purpose, g.Tenant, g.Clause, g.Justification, uint32(g.TTL.Seconds()), g.RequestedAt,
		g.ApprovedBy, zero(g.ApprovedAt), zero(g.ExpiresAt), zero(g.RevokedAt), g.UpdatedAt); err != nil {
		return err
	}
	return b.Send()
}

// Get returns one grant.
func (s *Store) Get(ctx context.Context, id string) (Grant, error) {
	gs, err := s.load(ctx, "WHERE id = ?", id)
	if err != nil {
		return Grant{}, err
	}
	if len(gs) == 0 {
		return Grant{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return gs[0], nil
}

// List returns every grant, newest request first.
func (s *Store) List(ctx context.Context) ([]Grant, error) { return s.load(ctx, "") }

func (s *Store) load(ctx context.Context, where string, args ...any) ([]Grant, error) {
	rows, err := s.conn.Query(ctx, "SELECT "+cols+" FROM "+s.db+".breakglass FINAL "+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read break-glass grants: %w", err)
	}
	defer rows.Close()
	var out []Grant
	for rows.Next() {
		var g Grant
		var ttl uint32
		if err := rows.Scan(&g.ID, &g.Principal, &g.Purpose, &g.Tenant, &g.Clause, &g.Justification, &ttl, &g.RequestedAt,
			&g.ApprovedBy, &g.ApprovedAt, &g.ExpiresAt, &g.RevokedAt, &g.UpdatedAt); err != nil {
			return nil, err
		}
		g.TTL = time.Duration(ttl) * time.Second
		for _, t := range []*time.Time{&g.ApprovedAt, &g.ExpiresAt, &g.RevokedAt} {
			if t.Unix() == 0 {
				*t = time.Time{}
			}
		}
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Grant) int { return b.RequestedAt.Compare(a.RequestedAt) })
	return out, rows.Err()
}
