// Package principal is who may use the query service and for what (docs/DESIGN.md §5): employees,
// affiliates, contractors and partners, each with a token (stored only as its SHA-256 hash) and
// a grant naming the purposes it may act for, and roles (an employee or affiliate may hold the
// break-glass approver grant). A contractor's grant carries its contract reference and expires
// (clause 5); a partner outside the company may only receive what the policy lets leave it
// (external_aggregate, external_consented).
package principal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/policy"
)

// Kinds of principal.
const (
	Employee   = "employee"
	Affiliate  = "affiliate"
	Contractor = "contractor"
	Partner    = "partner"
)

// Errors; match with errors.Is.
var (
	ErrInvalid      = errors.New("invalid principal")
	ErrExists       = errors.New("principal exists")
	ErrNotFound     = errors.New("no such principal")
	ErrUnknownToken = errors.New("unknown token")
	ErrNotGranted   = errors.New("purpose not granted")
	ErrExpired      = errors.New("grant expired")
	ErrDisabled     = errors.New("principal disabled")
	ErrUnknownKind  = errors.New("unknown kind of principal")
)

// RoleBreakGlassApprover lets an employee or affiliate approve another principal's break-glass
// request (query/breakglass). It is the only role.
const RoleBreakGlassApprover = "breakglass_approver"

// Principal is one user of the query service.
type Principal struct {
	ID          string
	Kind        string
	Purposes    []string
	Roles       []string  // RoleBreakGlassApprover (employees and affiliates only)
	ContractRef string    // contractors only
	Expires     time.Time // contractors: required; others: zero means no expiry
	TokenHashes []string
	Disabled    bool
	UpdatedAt   time.Time
}

// KnownKind says whether kind is one of the four kinds of principal.
func KnownKind(kind string) bool {
	switch kind {
	case Employee, Affiliate, Contractor, Partner:
		return true
	}
	return false
}

// HasRole says whether p holds role.
func (p *Principal) HasRole(role string) bool { return slices.Contains(p.Roles, role) }

// Active says whether p may use the service at all at now: enabled, its grant not expired, and
// of a known kind. Every request checks it before anything else.
func (p *Principal) Active(now time.Time) error {
	switch {
	case p.Disabled:
		return fmt.Errorf("%w: %s", ErrDisabled, p.ID)
	case !p.Expires.IsZero() && !now.Before(p.Expires):
		return fmt.Errorf("%w: %s's grant ended at %s", ErrExpired, p.ID, p.Expires.UTC().Format(time.RFC3339))
	case !KnownKind(p.Kind):
		return fmt.Errorf("%w: %s is of kind %q, not employee, affiliate, contractor or partner", ErrUnknownKind, p.ID, p.Kind)
	}
	return nil
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.@-]{0,63}$`)

// Validate checks the grant's rules.
func (p *Principal) Validate() error {
	var errs []string
	if !idPattern.MatchString(p.ID) {
		errs = append(errs, fmt.Sprintf("id %q must match %s", p.ID, idPattern))
	}
	switch p.Kind {
	case Employee, Affiliate, Contractor, Partner:
	default:
		errs = append(errs, fmt.Sprintf("kind %q must be employee, affiliate, contractor or partner", p.Kind))
	}
	if len(p.Purposes) == 0 {
		errs = append(errs, "a grant names at least one purpose")
	}
	for _, name := range p.Purposes {
		pur, err := policy.ParsePurpose(name)
		if err != nil {
			errs = append(errs, fmt.Sprintf("purpose %q is not one of the policy's", name))
			continue
		}
		if p.Kind == Partner && pur != policy.ExternalAggregate && pur != policy.ExternalConsented {
			errs = append(errs, fmt.Sprintf("a partner outside the company may act only for external_aggregate or external_consented, not %s (clause 3(2))", name))
		}
	}
	for _, r := range p.Roles {
		switch {
		case r != RoleBreakGlassApprover:
			errs = append(errs, fmt.Sprintf("role %q is not %s", r, RoleBreakGlassApprover))
		case p.Kind != Employee && p.Kind != Affiliate:
			errs = append(errs, fmt.Sprintf("only employees and affiliates may hold %s, not a %s", r, p.Kind))
		}
	}
	if p.Kind == Contractor {
		if p.ContractRef == "" {
			errs = append(errs, "a contractor's grant needs its contract reference (clause 5)")
		}
		if p.Expires.IsZero() {
			errs = append(errs, "a contractor's grant needs an expiry (the end of the contract)")
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// Authorize says whether p may act for purpose at now, and why not.
func (p *Principal) Authorize(purpose string, now time.Time) error {
	if err := p.Active(now); err != nil {
		return err
	}
	switch {
	case !slices.Contains(p.Purposes, purpose):
		return fmt.Errorf("%w: %s may act for %s, not %s", ErrNotGranted, p.ID, strings.Join(p.Purposes, ", "), purpose)
	}
	return nil
}

// NewToken returns a fresh token and its hash.
func NewToken() (token, hash string) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	token = "shq_" + hex.EncodeToString(b[:])
	return token, TokenHash(token)
}

// TokenHash is the stored form of a token.
func TokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Store reads and writes the principals table of one Shukei database.
type Store struct {
	conn driver.Conn
	db   string
	now  func() time.Time
}

// New returns the store of database db.
func New(conn driver.Conn, db string) *Store {
	return &Store{conn: conn, db: db, now: func() time.Time { return time.Now().UTC().Truncate(time.Second) }}
}

// Add registers p with a fresh token and returns the token (shown once, never stored).
func (s *Store) Add(ctx context.Context, p Principal) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	if _, err := s.Get(ctx, p.ID); err == nil {
		return "", fmt.Errorf("%w: %s", ErrExists, p.ID)
	} else if !errors.Is(err, ErrNotFound) {
		return "", err
	}
	tok, hash := NewToken()
	p.TokenHashes = []string{hash}
	return tok, s.put(ctx, p)
}

// Update changes a principal through fn (purposes, expiry, disabled) and stores it.
func (s *Store) Update(ctx context.Context, id string, fn func(*Principal) error) (Principal, error) {
	p, err := s.Get(ctx, id)
	if err != nil {
		return p, err
	}
	if err := fn(&p); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return p, err
	}
	return p, s.put(ctx, p)
}

func (s *Store) put(ctx context.Context, p Principal) error {
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.db+"_principals.principals (principal_id, kind, purposes, roles, contract_ref, expires_at, token_hashes, disabled, updated_at)")
	if err != nil {
		return err
	}
	exp := p.Expires
	if exp.IsZero() {
		exp = time.Unix(0, 0)
	}
	dis := uint8(0)
	if p.Disabled {
		dis = 1
	}
	// updated_at decides which row ReplacingMergeTree keeps: never go back in time.
	at := s.now()
	if !at.After(p.UpdatedAt) {
		at = p.UpdatedAt.Add(time.Second)
	}
	roles := p.Roles
	if roles == nil {
		roles = []string{}
	}
	if err := b.Append(p.ID, p.Kind, p.Purposes, roles, p.ContractRef, exp.UTC(), p.TokenHashes, dis, at); err != nil {
		return err
	}
	return b.Send()
}

// Get returns one principal.
func (s *Store) Get(ctx context.Context, id string) (Principal, error) {
	ps, err := s.load(ctx, "WHERE principal_id = ?", id)
	if err != nil {
		return Principal{}, err
	}
	if len(ps) == 0 {
		return Principal{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return ps[0], nil
}

// List returns every principal.
func (s *Store) List(ctx context.Context) ([]Principal, error) { return s.load(ctx, "") }

// Authenticate finds the principal holding token, comparing hashes in constant time.
func (s *Store) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, ErrUnknownToken
	}
	want := TokenHash(token)
	ps, err := s.List(ctx)
	if err != nil {
		return Principal{}, err
	}
	for _, p := range ps {
		for _, h := range p.TokenHashes {
			if subtle.ConstantTimeCompare([]byte(h), []byte(want)) == 1 {
				return p, nil
			}
		}
	}
	return Principal{}, ErrUnknownToken
}

func (s *Store) load(ctx context.Context, where string, args ...any) ([]Principal, error) {
	rows, err := s.conn.Query(ctx, "SELECT principal_id, toString(kind), purposes, roles, contract_ref, expires_at, token_hashes, disabled, updated_at FROM "+s.db+"_principals.principals FINAL "+where+" ORDER BY principal_id", args...)
	if err != nil {
		return nil, fmt.Errorf("read principals: %w", err)
	}
	defer rows.Close()
	var out []Principal
	for rows.Next() {
		var (
			p   Principal
			dis uint8
		)
		if err := rows.Scan(&p.ID, &p.Kind, &p.Purposes, &p.Roles, &p.ContractRef, &p.Expires, &p.TokenHashes, &dis, &p.UpdatedAt); err != nil {
			return nil, err
		}
		if p.Expires.Unix() <= 0 {
			p.Expires = time.Time{}
		}
		p.Disabled = dis == 1
		if len(p.Roles) == 0 {
			p.Roles = nil
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
