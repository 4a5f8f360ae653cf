// Package breakglass is the exceptional path of clause 3(2)-5..7: a principal asks for
// time-boxed access to one tenant's event trace with a written justification, a second
// principal holding the approver grant approves it, and only then, and only until the time box
// ends, may the requester read that tenant's trace through the query service. Every step is
// appended to the audit log; nothing about it is silent.
//
// Who may do what (docs/promises.md 11):
//   - request: an enabled, unexpired employee or affiliate whose grant names support;
//   - approve: an enabled, unexpired employee or affiliate holding principal.RoleBreakGlassApprover,
//     not the requester;
//   - revoke: the requester, the grant's approver, or an enabled, unexpired approver-grant holder;
//   - use (Check): the requester, while it still qualifies as a requester.
//
// Partners and contractors can neither request nor approve. State is an append-only log of
// actions (table breakglass_actions), each carrying the audit sequence of its step; a grant's
// state is a fold over its actions in that order, and a revocation is final.
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

	"github.com/shukei/shukei/audit"
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
	ErrNotAllowed  = errors.New("not allowed to take this break-glass step")
)

// Actions of the log.
const (
	actRequest = "request"
	actApprove = "approve"
	actRevoke  = "revoke"
)

// Grant is one request and its state: the fold of its actions in sequence order.
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
	ApprovedAt    time.Time // zero until approved (the first approval before any revocation)
	ExpiresAt     time.Time // approval + TTL
	RevokedBy     string    // "" for a revocation carried over from before the action log
	RevokedAt     time.Time // zero unless revoked; a revocation is final
	UpdatedAt     time.Time // the last action's time
	Seq           uint64    // the last action's sequence (its audit record)
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

// action is one row of breakglass_actions.
type action struct {
	grant         string
	seq           uint64
	kind          string
	principal     string
	at            time.Time
	tenant        string
	purpose       string
	clause        string
	justification string
	ttl           uint32
}

// fold computes a grant's state from its actions: the first request defines it; a revocation
// is final; the first approval before any revocation opens it for its time box from that
// approval; an approval ordered after a revocation changes nothing. ok is false when no request
// is among the actions.
func fold(acts []action) (g Grant, ok bool) {
	rank := map[string]int{actRequest: 0, actApprove: 1, actRevoke: 2}
	acts = slices.Clone(acts)
	// In sequence order; on a tie (only possible if two writers forked the audit chain), the
	// request first and the revocation last.
	slices.SortStableFunc(acts, func(a, b action) int {
		if a.seq != b.seq {
			if a.seq < b.seq {
				return -1
			}
			return 1
		}
		return rank[a.kind] - rank[b.kind]
	})
	revoked := false
	for _, a := range acts {
		switch a.kind {
		case actRequest:
			if ok {
				continue
			}
			ok = true
			g.ID, g.Principal, g.Purpose, g.Tenant, g.Clause, g.Justification = a.grant, a.principal, a.purpose, a.tenant, a.clause, a.justification
			g.TTL, g.RequestedAt = time.Duration(a.ttl)*time.Second, a.at
		case actApprove:
			if !revoked && g.ApprovedAt.IsZero() {
				g.ApprovedBy, g.ApprovedAt = a.principal, a.at
			}
		case actRevoke:
			if !revoked {
				revoked = true
				g.RevokedBy, g.RevokedAt = a.principal, a.at
				if g.RevokedAt.IsZero() {
					g.RevokedAt = time.Unix(1, 0).UTC() // revoked, whatever the clock said
				}
			}
		}
		if a.at.After(g.UpdatedAt) {
			g.UpdatedAt = a.at
		}
		g.Seq = max(g.Seq, a.seq)
	}
	if !g.ApprovedAt.IsZero() {
		g.ExpiresAt = g.ApprovedAt.Add(g.TTL)
	}
	return g, ok
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

// MayRequest says whether p may request break-glass access at t, and why not: it must be
// enabled and unexpired, an employee or an affiliate, and its grant must name support. A
// grant's requester must still qualify when it uses the grant (Check).
func MayRequest(p principal.Principal, t time.Time) error {
	if err := p.Active(t); err != nil {
		return fmt.Errorf("%w: %w", ErrNotAllowed, err)
	}
	switch {
	case p.Kind != principal.Employee && p.Kind != principal.Affiliate:
		return fmt.Errorf("%w: only an employee or an affiliate may request break-glass access, %s is a %s", ErrNotAllowed, p.ID, p.Kind)
	case !slices.Contains(p.Purposes, "support"):
		return fmt.Errorf("%w: %s's grant does not name support, which break-glass access needs", ErrNotAllowed, p.ID)
	}
	return nil
}

// MayApprove says whether p may approve break-glass requests at t, and why not: it must be
// enabled and unexpired, an employee or an affiliate, and hold the approver grant.
func MayApprove(p principal.Principal, t time.Time) error {
	if err := p.Active(t); err != nil {
		return fmt.Errorf("%w: %w", ErrNotAllowed, err)
	}
	switch {
	case p.Kind != principal.Employee && p.Kind != principal.Affiliate:
		return fmt.Errorf("%w: only an employee or an affiliate may approve break-glass access, %s is a %s", ErrNotAllowed, p.ID, p.Kind)
	case !p.HasRole(principal.RoleBreakGlassApprover):
		return fmt.Errorf("%w: %s does not hold the break-glass approver grant (%s)", ErrNotAllowed, p.ID, principal.RoleBreakGlassApprover)
	}
	return nil
}

// Request records a request of principal for the support trace of tenant, and returns it
// pending. Only an enabled, unexpired employee or affiliate whose grant names support may ask.
func (s *Store) Request(ctx context.Context, principalID, tenant, clause, justification string, ttl time.Duration) (Grant, error) {
	g := Grant{Principal: principalID, Purpose: "support", Tenant: tenant}
	p, err := s.principals.Get(ctx, principalID)
	if errors.Is(err, principal.ErrNotFound) {
		return g, fmt.Errorf("%w: %w", ErrNotAllowed, err)
	}
	if err != nil {
		return g, err
	}
	if err := MayRequest(p, s.now()); err != nil {
		return g, err
	}
	var probs []string
	if _, ok := Clauses[clause]; !ok {
		probs = append(probs, fmt.Sprintf("clause %q is not one of 3(2)-5, 3(2)-6, 3(2)-7", clause))
	}
	justification = strings.Trim(justification, " ")
	if utf8.RuneCountInString(justification) < 20 {
		probs = append(probs, "the justification must say in writing why (20 characters at least)")
	}
	if r, ok := audit.Printable(justification); !ok {
		probs = append(probs, fmt.Sprintf("the justification holds a character that is not printable (%U): write it on one line, without control characters", r))
	}
	if ttl <= 0 || ttl > MaxTTL {
		probs = append(probs, fmt.Sprintf("the time box %s must be positive and at most %s", ttl, MaxTTL))
	}
	if _, ok := audit.Printable(tenant); !ok || tenant == "" {
		probs = append(probs, "a tenant (printable) is required: break-glass opens one tenant's trace")
	}
	if len(probs) > 0 {
		return g, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(probs, "; "))
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	g = Grant{ID: "bg-" + hex.EncodeToString(b[:]), Principal: p.ID, Purpose: "support", Tenant: tenant, Clause: clause,
		Justification: justification, TTL: ttl, RequestedAt: s.now()}
	seq, err := s.record(ctx, p, g, "breakglass_request", "requested", fmt.Sprintf("clause %s, %s for tenant %s: %s", clause, ttl, tenant, g.Justification))
	if err != nil {
		return Grant{}, err
	}
	g.Seq, g.UpdatedAt = seq, g.RequestedAt
	return g, s.put(ctx, action{grant: g.ID, seq: seq, kind: actRequest, principal: p.ID, at: g.RequestedAt, tenant: g.Tenant,
		purpose: g.Purpose, clause: g.Clause, justification: g.Justification, ttl: uint32(ttl / time.Second)})
}

// Approve opens a pending request for its time box, from now. The approver must be another
// principal, an enabled, unexpired employee or affiliate holding the approver grant. A revoked
// grant is never opened again.
func (s *Store) Approve(ctx context.Context, id, approverID string) (Grant, error) {
	g, err := s.Get(ctx, id)
	if err != nil {
		return Grant{}, err
	}
	ap, err := s.principals.Get(ctx, approverID)
	if errors.Is(err, principal.ErrNotFound) {
		return g, fmt.Errorf("%w: %w", ErrNotAllowed, err)
	}
	if err != nil {
		return g, err
	}
	now := s.now()
	if ap.ID == g.Principal {
		return g, fmt.Errorf("%w: %s cannot approve its own request %s", ErrSelfApprove, ap.ID, id)
	}
	if err := MayApprove(ap, now); err != nil {
		return g, err
	}
	if st := g.State(now); st != "pending" {
		return g, fmt.Errorf("%w: %s is %s, not pending", ErrNotOpen, id, st)
	}
	seq, err := s.record(ctx, ap, g, "breakglass_approve", "approved", fmt.Sprintf("approved %s's access to tenant %s for %s", g.Principal, g.Tenant, g.TTL))
	if err != nil {
		return g, err
	}
	if err := s.put(ctx, action{grant: g.ID, seq: seq, kind: actApprove, principal: ap.ID, at: now, tenant: g.Tenant, purpose: g.Purpose}); err != nil {
		return g, err
	}
	// The state as stored: a revocation that landed meanwhile has closed it for good.
	return s.Get(ctx, id)
}

// Revoke closes a grant now, for good. The requester, the grant's approver, or an enabled,
// unexpired approver-grant holder may revoke it.
func (s *Store) Revoke(ctx context.Context, id, byID string) (Grant, error) {
	g, err := s.Get(ctx, id)
	if err != nil {
		return Grant{}, err
	}
	by, err := s.principals.Get(ctx, byID)
	if errors.Is(err, principal.ErrNotFound) {
		return g, fmt.Errorf("%w: %w", ErrNotAllowed, err)
	}
	if err != nil {
		return g, err
	}
	now := s.now()
	if err := by.Active(now); err != nil {
		return g, fmt.Errorf("%w: %w", ErrNotAllowed, err)
	}
	if by.ID != g.Principal && (g.ApprovedBy == "" || by.ID != g.ApprovedBy) && MayApprove(by, now) != nil {
		return g, fmt.Errorf("%w: only the requester, the approver of %s or a holder of the break-glass approver grant may revoke it, not %s", ErrNotAllowed, id, by.ID)
	}
	if st := g.State(now); st == "revoked" || st == "expired" {
		return g, fmt.Errorf("%w: %s is already %s", ErrNotOpen, id, st)
	}
	seq, err := s.record(ctx, by, g, "breakglass_revoke", "revoked", "revoked")
	if err != nil {
		return g, err
	}
	if err := s.put(ctx, action{grant: g.ID, seq: seq, kind: actRevoke, principal: by.ID, at: now, tenant: g.Tenant, purpose: g.Purpose}); err != nil {
		return g, err
	}
	return s.Get(ctx, id)
}

// Check returns the grant when it lets principalID read tenant's trace at t, or why not
// (ErrNotOpen, ErrNotFound): it must be that principal's grant for that tenant, open at t, and
// its requester must still qualify as one (MayRequest) at t.
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
	p, err := s.principals.Get(ctx, g.Principal)
	if errors.Is(err, principal.ErrNotFound) {
		return g, fmt.Errorf("%w: %s's requester %s no longer exists", ErrNotOpen, id, g.Principal)
	}
	if err != nil {
		return g, err
	}
	if err := MayRequest(p, t); err != nil {
		return g, fmt.Errorf("%w: %s's requester no longer qualifies: %w", ErrNotOpen, id, err)
	}
	return g, nil
}

// record appends a step to the audit log, with the grant's tenant, and returns its sequence:
// the order of the step among every other.
func (s *Store) record(ctx context.Context, p principal.Principal, g Grant, report, decision, reason string) (uint64, error) {
	rec, err := s.audit.Append(ctx, audit.Record{Principal: p.ID, Kind: p.Kind, ContractRef: p.ContractRef, Purpose: g.Purpose,
		Ticket: g.ID, Tenant: g.Tenant, Report: report, Decision: decision, Reason: reason})
	if err != nil {
		return 0, fmt.Errorf("the audit log cannot be written, so nothing was changed: %w", err)
	}
	return rec.Seq, nil
}

const cols = "grant_id, seq, toString(action), principal_id, at, tenant_id, purpose, clause, justification, ttl_seconds"

func (s *Store) put(ctx context.Context, a action) error {
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.db+"_breakglass.breakglass_actions (grant_id, seq, action, principal_id, at, tenant_id, purpose, clause, justification, ttl_seconds)")
	if err != nil {
		return err
	}
	if err := b.Append(a.grant, a.seq, a.kind, a.principal, a.at, a.tenant, a.purpose, a.clause, a.justification, a.ttl); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}

// Get returns one grant.
func (s *Store) Get(ctx context.Context, id string) (Grant, error) {
	gs, err := s.load(ctx, "WHERE grant_id = ?", id)
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
	rows, err := s.conn.Query(ctx, "SELECT "+cols+" FROM "+s.db+"_breakglass.breakglass_actions "+where+" ORDER BY grant_id, seq", args...)
	if err != nil {
		return nil, fmt.Errorf("read break-glass grants: %w", err)
	}
	defer rows.Close()
	byGrant := map[string][]action{}
	var order []string
	for rows.Next() {
		var a action
		if err := rows.Scan(&a.grant, &a.seq, &a.kind, &a.principal, &a.at, &a.tenant, &a.purpose, &a.clause, &a.justification, &a.ttl); err != nil {
			return nil, err
		}
		if _, seen := byGrant[a.grant]; !seen {
			order = append(order, a.grant)
		}
		byGrant[a.grant] = append(byGrant[a.grant], a)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []Grant
	for _, id := range order {
		if g, ok := fold(byGrant[id]); ok {
			out = append(out, g)
		}
	}
	slices.SortStableFunc(out, func(a, b Grant) int { return b.RequestedAt.Compare(a.RequestedAt) })
	return out, nil
}
