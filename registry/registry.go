// Package registry is the tenant registry in ClickHouse: contract status, edition, size band,
// contract end, consents (purpose × policy version, with time), ingest token hashes, and the
// encrypted pseudonymisation root of each tenant. Stages read it through a Cache that reloads
// every few seconds, so a change made with 'shukei tenants' is seen within seconds.
package registry

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/go-faster/city"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/policy"
)

// Contract statuses (docs/DESIGN.md §1, clause 2(5)).
const (
	StatusTrial      = "trial"
	StatusBeta       = "beta"
	StatusContracted = "contracted"
	StatusTerminated = "terminated"
)

// Consent is one consent given (or withdrawn) by a tenant for a purpose under a policy version.
type Consent struct {
	Purpose       string
	PolicyVersion int
	Given         bool
	At            time.Time
}

// Tenant is one registry entry.
type Tenant struct {
	ID          string
	Status      string
	Edition     string
	SizeBand    string
	ContractEnd time.Time // zero: open-ended
	TokenHashes []string  // hex SHA-256 of each ingest token
	Consents    []Consent // in time order
	UpdatedAt   time.Time
	// Shard is the tenant's shard on a ClickHouse cluster (system.clusters' shard_num), chosen
	// once when it is registered (Registry.Placing); 0 on one server.
	Shard uint16
	// Tombstoned is set in a Cache's snapshot on a tenant that is still registered but has a
	// tombstone: its deletion has begun (retention.DeleteTenant deletes the registry's rows
	// last), and its events are refused as deleted from now on.
	Tombstoned bool
}

// ConsentedAt returns when the tenant's current consent to purpose under version was given,
// or false if it was never given or was withdrawn later.
func (t *Tenant) ConsentedAt(purpose string, version int) (time.Time, bool) {
	var at time.Time
	ok := false
	for _, c := range t.Consents {
		if c.Purpose == purpose && c.PolicyVersion == version {
			at, ok = c.At, c.Given
		}
	}
	return at, ok
}

var (
	// ErrUnknownTenant means the id is not in the registry.
	ErrUnknownTenant = errors.New("unknown tenant")
	// ErrExists means Add was called for a tenant that is already registered.
	ErrExists = errors.New("tenant already registered")
	// ErrInvalid means a field's value is not allowed.
	ErrInvalid = errors.New("invalid tenant")
	// ErrTerminated refuses what a terminated tenant may no longer have (an ingest token).
	ErrTerminated = errors.New("tenant terminated")
	// ErrUnknownToken is a revocation of a token the tenant does not hold.
	ErrUnknownToken = errors.New("unknown ingest token")
)

var (
	tagPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
)

// Validate checks a tenant's fields.
func (t *Tenant) Validate() error {
	var errs []error
	if !event.IsID(t.ID) {
		errs = append(errs, fmt.Errorf("id %q must match %s", t.ID, event.PatternID))
	}
	switch t.Status {
	case StatusTrial, StatusBeta, StatusContracted, StatusTerminated:
	default:
		errs = append(errs, fmt.Errorf("status %q must be trial, beta, contracted or terminated", t.Status))
	}
	if !tagPattern.MatchString(t.Edition) {
		errs = append(errs, fmt.Errorf("edition %q must match %s", t.Edition, tagPattern))
	}
	if !tagPattern.MatchString(t.SizeBand) {
		errs = append(errs, fmt.Errorf("size band %q must match %s", t.SizeBand, tagPattern))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Registry reads and writes the registry tables of one database.
type Registry struct {
	conn   driver.Conn
	db     string
	master *pseudonym.MasterKey
	now    func() time.Time
	// cluster is clickhouse.cluster: Add places each new tenant on a shard of it.
	cluster string
}

// Placing makes Add place each new tenant on a shard of the ClickHouse cluster named cluster
// (Tenant.Shard; PlaceShard over the shards the cluster has now); "" places nothing (one
// server). It returns r.
func (r *Registry) Placing(cluster string) *Registry {
	r.cluster = cluster
	return r
}

// PlaceShard is the shard of nums (the cluster's shard_num values, ascending) a tenant
// registered now is placed on: cityHash64 of its id (ClickHouse's CityHash64, go-faster/city's
// CH64) modulo the number of shards. Recorded once, it does not move when shards are added.
func PlaceShard(tenant string, nums []uint16) uint16 {
	if len(nums) == 0 {
		return 0
	}
	return nums[city.CH64([]byte(tenant))%uint64(len(nums))]
}

// place reads the cluster's shards and places tenant on one of them.
func (r *Registry) place(ctx context.Context, tenant string) (uint16, error) {
	rows, err := r.conn.Query(ctx, "SELECT DISTINCT shard_num FROM system.clusters WHERE cluster = ? ORDER BY shard_num", r.cluster)
	if err != nil {
		return 0, fmt.Errorf("the shards of cluster %s: %w", r.cluster, err)
	}
	defer rows.Close()
	var nums []uint16
	for rows.Next() {
		var n uint32
		if err := rows.Scan(&n); err != nil {
			return 0, err
		}
		nums = append(nums, uint16(n))
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(nums) == 0 {
		return 0, fmt.Errorf("cluster %s is not declared on the server (system.clusters)", r.cluster)
	}
	return PlaceShard(tenant, nums), nil
}

// New returns a registry over database db. master encrypts new pseudonymisation roots; it may
// be nil for read-only use.
func New(conn driver.Conn, db string, master *pseudonym.MasterKey) *Registry {
	return &Registry{conn: conn, db: db, master: master, now: func() time.Time { return time.Now().UTC().Truncate(time.Second) }}
}

// NewToken returns a random ingest token and its hex SHA-256.
func NewToken() (token, hash string) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	token = "shk_" + base64.RawURLEncoding.EncodeToString(b[:])
	return token, TokenHash(token)
}

// TokenHash is the hex SHA-256 of a token, the only form the registry keeps.
func TokenHash(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// Add registers a tenant, creates its pseudonymisation root and returns its first ingest
// token (shown once; only its hash is stored). A tenant registered as terminated gets none.
func (r *Registry) Add(ctx context.Context, t Tenant) (string, error) {
	if r.master == nil {
		return "", errors.New("registry: a master key is needed to register tenants")
	}
	if err := t.Validate(); err != nil {
		return "", err
	}
	if _, err := r.Get(ctx, t.ID); err == nil {
		return "", fmt.Errorf("%w: %s", ErrExists, t.ID)
	} else if !errors.Is(err, ErrUnknownTenant) {
		return "", err
	}
	if r.cluster != "" && t.Shard == 0 {
		s, err := r.place(ctx, t.ID)
		if err != nil {
			return "", err
		}
		t.Shard = s
	}
	token, hash := NewToken()
	t.TokenHashes = []string{hash}
	if t.Status == StatusTerminated {
		token = "" // registered as terminated: silent from the start
		r.silence(&t)
	}
	root, err := r.master.NewRoot(t.ID)
	if err != nil {
		return "", err
	}
	b, err := r.conn.PrepareBatch(ctx, "INSERT INTO "+r.db+"_keys.pseudonym_roots (tenant_id, root_enc, created_at)")
	if err != nil {
		return "", err
	}
	if err := b.Append(t.ID, string(root), r.now()); err != nil {
		return "", err
	}
	if err := b.Send(); err != nil {
		return "", fmt.Errorf("store pseudonymisation root: %w", err)
	}
	return token, r.put(ctx, t)
}

// Update changes a registered tenant with fn and writes it back.
func (r *Registry) Update(ctx context.Context, id string, fn func(*Tenant) error) (Tenant, error) {
	t, err := r.Get(ctx, id)
	if err != nil {
		return t, err
	}
	if err := fn(&t); err != nil {
		return t, err
	}
	r.silence(&t)
	if err := t.Validate(); err != nil {
		return t, err
	}
	return t, r.put(ctx, t)
}

// Silent reports whether the tenant may send nothing at time at: set terminated, or at or
// past its contract end (policy 2(3)). Collectors refuse its tokens and the decision refuses
// its events, keeping no user and no content.
func (t *Tenant) Silent(at time.Time) bool {
	return t.Status == StatusTerminated || !t.ContractEnd.IsZero() && !at.Before(t.ContractEnd)
}

// silence applies what terminated means (policy 2(3)): no ingest token stays valid, and the
// contract end that starts the retention clock is never missing.
func (r *Registry) silence(t *Tenant) {
	if t.Status != StatusTerminated {
		return
	}
	t.TokenHashes = nil
	if t.ContractEnd.IsZero() {
		t.ContractEnd = r.now().UTC().Truncate(time.Second)
	}
}

// AddToken issues another ingest token for a tenant. A terminated tenant gets none.
func (r *Registry) AddToken(ctx context.Context, id string) (string, error) {
	token, hash := NewToken()
	_, err := r.Update(ctx, id, func(t *Tenant) error {
		if t.Status == StatusTerminated {
			return fmt.Errorf("%w: %s is terminated; it gets no ingest token", ErrTerminated, id)
		}
		t.TokenHashes = append(t.TokenHashes, hash)
		return nil
	})
	return token, err
}

// RevokeToken withdraws one ingest token of a tenant, given as the token itself or as its
// hash; with all set, every token. It returns how many were revoked. Collectors refuse a
// revoked token within one registry refresh.
func (r *Registry) RevokeToken(ctx context.Context, id, tokenOrHash string, all bool) (int, error) {
	n := 0
	_, err := r.Update(ctx, id, func(t *Tenant) error {
		if all {
			n = len(t.TokenHashes)
			t.TokenHashes = nil
			return nil
		}
		keep := t.TokenHashes[:0:0]
		for _, h := range t.TokenHashes {
			if h == tokenOrHash || h == TokenHash(tokenOrHash) {
				n++
				continue
			}
			keep = append(keep, h)
		}
		if n == 0 {
			return fmt.Errorf("%w: %s has no such token", ErrUnknownToken, id)
		}
		t.TokenHashes = keep
		return nil
	})
	return n, err
}

func (r *Registry) put(ctx context.Context, t Tenant) error {
	now := r.now()
	if !t.UpdatedAt.Before(now) {
		// ReplacingMergeTree keeps the row with the greatest updated_at; two updates within a
		// second must still order.
		now = t.UpdatedAt.Add(time.Second)
	}
	b, err := r.conn.PrepareBatch(ctx, "INSERT INTO "+r.db+"_registry.tenants (tenant_id, status, edition, size_band, contract_end, token_hashes, deleted, updated_at, shard)")
	if err != nil {
		return err
	}
	end := t.ContractEnd
	if end.IsZero() {
		end = time.Unix(0, 0).UTC()
	}
	if err := b.Append(t.ID, t.Status, t.Edition, t.SizeBand, end, t.TokenHashes, uint8(0), now, t.Shard); err != nil {
		return err
	}
	return b.Send()
}

// Consent records a consent given (or withdrawn, given=false) at a time.
func (r *Registry) Consent(ctx context.Context, id, purpose string, version int, given bool, at time.Time) error {
	if _, err := r.Get(ctx, id); err != nil {
		return err
	}
	b, err := r.conn.PrepareBatch(ctx, "INSERT INTO "+r.db+"_registry.consents (tenant_id, purpose, policy_version, given, at, recorded_at)")
	if err != nil {
		return err
	}
	g := uint8(0)
	if given {
		g = 1
	}
	if err := b.Append(id, purpose, uint16(version), g, at.UTC(), r.now()); err != nil {
		return err
	}
	return b.Send()
}

// Get returns one tenant.
func (r *Registry) Get(ctx context.Context, id string) (Tenant, error) {
	all, err := r.load(ctx, id)
	if err != nil {
		return Tenant{}, err
	}
	t, ok := all[id]
	if !ok {
		return Tenant{}, fmt.Errorf("%w: %s", ErrUnknownTenant, id)
	}
	return *t, nil
}

// List returns every registered tenant, sorted by id.
func (r *Registry) List(ctx context.Context) ([]Tenant, error) {
	all, err := r.load(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]Tenant, 0, len(all))
	for _, t := range all {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (r *Registry) load(ctx context.Context, only string) (map[string]*Tenant, error) {
	where, args := "", []any{}
	if only != "" {
		where, args = " WHERE tenant_id = ?", []any{only}
	}
	rows, err := r.conn.Query(ctx, "SELECT tenant_id, toString(status), edition, size_band, contract_end, token_hashes, deleted, updated_at, shard FROM "+r.db+"_registry.tenants FINAL"+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read tenant registry: %w", err)
	}
	out := map[string]*Tenant{}
	for rows.Next() {
		var t Tenant
		var deleted uint8
		if err := rows.Scan(&t.ID, &t.Status, &t.Edition, &t.SizeBand, &t.ContractEnd, &t.TokenHashes, &deleted, &t.UpdatedAt, &t.Shard); err != nil {
			rows.Close()
			return nil, err
		}
		if t.ContractEnd.Unix() <= 0 {
			t.ContractEnd = time.Time{}
		}
		if deleted == 0 {
			out[t.ID] = &t
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	crows, err := r.conn.Query(ctx, "SELECT tenant_id, purpose, policy_version, given, at FROM "+r.db+"_registry.consents"+where+" ORDER BY tenant_id, at, recorded_at", args...)
	if err != nil {
		return nil, fmt.Errorf("read consents: %w", err)
	}
	defer crows.Close()
	for crows.Next() {
		var id, purpose string
		var version uint16
		var given uint8
		var at time.Time
		if err := crows.Scan(&id, &purpose, &version, &given, &at); err != nil {
			return nil, err
		}
		if t := out[id]; t != nil {
			t.Consents = append(t.Consents, Consent{Purpose: purpose, PolicyVersion: int(version), Given: given == 1, At: at})
		}
	}
	return out, crows.Err()
}

// TenantTombstone is what the registry keeps of a deleted tenant (Tombstone): a keyed hash of
// its id under the refusals' hash key (the master key's "dlq" key), so that its events still in
// Kafka are recognised without the id being kept anywhere.
func TenantTombstone(hashKey []byte, tenant string) string {
	m := hmac.New(sha256.New, hashKey)
	m.Write([]byte("deleted-tenant\x00"))
	m.Write([]byte(tenant))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// Tombstone records that a tenant was deleted, by a keyed hash of its id only (the table has no
// tenant_id: it holds nothing of the tenant but the fact), so that its events still in Kafka are
// recognised and refused without keeping anything of them.
func (r *Registry) Tombstone(ctx context.Context, tombstone string, at time.Time) error {
	b, err := r.conn.PrepareBatch(ctx, "INSERT INTO "+r.db+"_registry.deleted_tenants (tombstone, deleted_at)")
	if err != nil {
		return fmt.Errorf("record the deletion: %w", err)
	}
	if err := b.Append(tombstone, at.UTC().Truncate(time.Second)); err != nil {
		return fmt.Errorf("record the deletion: %w", err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("record the deletion: %w", err)
	}
	return nil
}

// Tombstones returns the tombstones of every deleted tenant.
func (r *Registry) Tombstones(ctx context.Context) (map[string]bool, error) {
	rows, err := r.conn.Query(ctx, "SELECT DISTINCT tombstone FROM "+r.db+"_registry.deleted_tenants")
	if err != nil {
		return nil, fmt.Errorf("read deleted tenants: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		out[h] = true
	}
	return out, rows.Err()
}

// Roots returns each tenant's encrypted pseudonymisation root.
func (r *Registry) Roots(ctx context.Context) (map[string][]byte, error) {
	rows, err := r.conn.Query(ctx, "SELECT tenant_id, root_enc FROM "+r.db+"_keys.pseudonym_roots FINAL")
	if err != nil {
		return nil, fmt.Errorf("read pseudonymisation roots: %w", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var id, enc string
		if err := rows.Scan(&id, &enc); err != nil {
			return nil, err
		}
		out[id] = []byte(enc)
	}
	return out, rows.Err()
}

// Snapshot is an immutable view of the registry at one moment.
type Snapshot struct {
	Tenants map[string]*Tenant
	byToken map[string]string // token hash → tenant id
	deleted map[string]bool   // tombstones of deleted tenants (keyed hashes of their ids)
	Loaded  time.Time
}

// Deleted reports whether a tenant with this tombstone (a keyed hash of its id,
// decision.TenantTombstone) was deleted.
func (s *Snapshot) Deleted(tombstone string) bool { return s.deleted[tombstone] }

// NewSnapshot builds a snapshot from tenants, for tools and tests that do not read the
// registry.
func NewSnapshot(tenants ...*Tenant) *Snapshot {
	s := &Snapshot{Tenants: map[string]*Tenant{}, Loaded: time.Now()}
	for _, t := range tenants {
		s.Tenants[t.ID] = t
	}
	s.byToken = tokenIndex(s.Tenants, s.Loaded)
	return s
}

// tokenIndex maps the token hashes of the tenants that may send to their tenant. A terminated
// tenant (by status or past its contract end) is left out whatever tokens its row still holds.
func tokenIndex(tenants map[string]*Tenant, now time.Time) map[string]string {
	out := map[string]string{}
	for id, t := range tenants {
		if t.Silent(now) {
			continue
		}
		for _, h := range t.TokenHashes {
			out[h] = id
		}
	}
	return out
}

// WithTombstones returns the snapshot with these tombstones of deleted tenants, for tools and
// tests that do not read the registry.
func (s *Snapshot) WithTombstones(tombstones ...string) *Snapshot {
	c := *s
	c.deleted = map[string]bool{}
	for h := range s.deleted {
		c.deleted[h] = true
	}
	for _, h := range tombstones {
		c.deleted[h] = true
	}
	return &c
}

// Lookup returns a tenant of the snapshot.
func (s *Snapshot) Lookup(id string) (*Tenant, bool) {
	t, ok := s.Tenants[id]
	return t, ok
}

// TenantOfToken maps an ingest token's hash to its tenant.
func (s *Snapshot) TenantOfToken(hash string) (string, bool) {
	id, ok := s.byToken[hash]
	return id, ok
}

// Cache keeps a fresh Snapshot and the keyring in step with the registry.
type Cache struct {
	reg     *Registry
	keyring *pseudonym.Keyring
	every   time.Duration
	log     *slog.Logger
	snap    atomic.Pointer[Snapshot]
	mu      sync.Mutex
	follow  *policy.Versions
}

// Follow makes each refresh also apply the recorded policy activations to vs, so a version
// activated with 'shukei policy activate' is in force in every running stage within one
// refresh (and, activated ahead of time, from its exact activation time on).
func (c *Cache) Follow(vs *policy.Versions) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.follow = vs
}

// NewCache makes a cache; call Refresh once before use and Run to keep it fresh. keyring may
// be nil when the caller does not pseudonymise.
func NewCache(reg *Registry, keyring *pseudonym.Keyring, every time.Duration, log *slog.Logger) *Cache {
	c := &Cache{reg: reg, keyring: keyring, every: every, log: log}
	c.snap.Store(&Snapshot{Tenants: map[string]*Tenant{}, byToken: map[string]string{}})
	return c
}

// Snapshot returns the current view.
func (c *Cache) Snapshot() *Snapshot { return c.snap.Load() }

// Tombstones reads the tombstones of the deleted tenants now, past the cached view.
func (c *Cache) Tombstones(ctx context.Context) (map[string]bool, error) {
	return c.reg.Tombstones(ctx)
}

// Refresh reloads the registry (and the roots into the keyring) now.
func (c *Cache) Refresh(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	all, err := c.reg.load(ctx, "")
	if err != nil {
		return err
	}
	if c.follow != nil {
		acts, err := c.reg.Activations(ctx)
		if err != nil {
			return err
		}
		for _, a := range acts {
			if err := c.follow.Activate(a.Version, a.At); err != nil {
				c.log.Error("recorded policy activation not applied", "version", a.Version, "at", a.At, "err", err)
			}
		}
	}
	gone, err := c.reg.Tombstones(ctx)
	if err != nil {
		return err
	}
	if len(gone) > 0 && c.reg.master != nil {
		key := c.reg.master.Derive("dlq") // the refusals' hash key, which keys the tombstones
		for id, t := range all {
			if gone[TenantTombstone(key, id)] {
				t.Tombstoned = true
			}
		}
	}
	s := &Snapshot{Tenants: all, Loaded: time.Now(), deleted: gone}
	s.byToken = tokenIndex(all, s.Loaded)
	if c.keyring != nil {
		roots, err := c.reg.Roots(ctx)
		if err != nil {
			return err
		}
		for id, enc := range roots {
			if _, ok := all[id]; !ok {
				c.keyring.Forget(id)
				continue
			}
			if !c.keyring.Has(id) {
				// One unreadable root (a key from another master key) must not stop the
				// pipeline: that tenant's events are refused as no_pseudonym_key and kept
				// for replay, and the others flow.
				if err := c.keyring.Set(id, enc); err != nil {
					c.log.Error("pseudonymisation root unreadable; the tenant's events are held back", "tenant", id, "err", err)
				}
			}
		}
		for id := range all {
			if _, ok := roots[id]; !ok {
				c.keyring.Forget(id) // destroyed: its pseudonyms must not be made again
			}
		}
	}
	c.snap.Store(s)
	return nil
}

// Run refreshes every interval until ctx ends. A failed refresh keeps the last snapshot and
// is retried at the next tick.
func (c *Cache) Run(ctx context.Context) error {
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("tenant registry refresh failed; keeping the last snapshot", "err", err)
			}
		}
	}
}
