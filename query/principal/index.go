package principal

import (
	"context"
	"crypto/subtle"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Index finds the principal holding a token without asking ClickHouse: it keeps, in memory,
// which principal each stored token hash belongs to (hashes and ids only, never a grant). A
// token not in it reloads it from the principals table — at most once per MinReload, the
// misses arriving meanwhile sharing that one load — so a missing, made-up or revoked token
// costs no query of its own, however many of them arrive, and a principal added while the
// service runs is found within about MinReload. What the index says is only who the token
// claims to be: Authenticate reads that principal's current row (disabled, expiry, grant,
// token hashes) for every request it lets through, so a change takes effect at once.
type Index struct {
	store     *Store
	minReload time.Duration

	mu       sync.Mutex
	byHash   map[string]string // token hash → principal id
	loadedAt time.Time         // when the last load began (monotonic)
	tried    bool
	loading  chan struct{} // closed when the load in progress ends; nil when none is
	err      error         // of the last load

	loads atomic.Int64

	// OnError, if set, is told of a load that failed (at most one a MinReload); the index
	// keeps what it held, and tokens not in it are unknown until a load succeeds.
	OnError func(error)
}

// MinReload is the shortest time between two loads of an Index triggered by unknown tokens.
const MinReload = time.Second

// NewIndex returns an empty index of s; the first lookup loads it.
func NewIndex(s *Store, minReload time.Duration) *Index {
	if minReload <= 0 {
		minReload = MinReload
	}
	return &Index{store: s, minReload: minReload}
}

// Loads is how many times the index has read the principals table.
func (x *Index) Loads() int64 { return x.loads.Load() }

// Load reads the principals table now (at start, so the first requests find their tokens).
func (x *Index) Load(ctx context.Context) error {
	x.mu.Lock()
	ch := x.begin()
	x.mu.Unlock()
	if ch != nil {
		x.load(ctx, ch)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

// begin starts a load unless one is running; x.mu is held. It returns the channel the new
// load closes, or nil when another load is running.
func (x *Index) begin() chan struct{} {
	if x.loading != nil {
		return nil
	}
	ch := make(chan struct{})
	x.loading, x.loadedAt, x.tried = ch, time.Now(), true
	return ch
}

func (x *Index) load(ctx context.Context, ch chan struct{}) {
	x.loads.Add(1)
	ps, err := x.store.List(ctx)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.err = err
	if err != nil && x.OnError != nil {
		x.OnError(err)
	}
	if err == nil {
		m := make(map[string]string, len(ps))
		for _, p := range ps {
			for _, h := range p.TokenHashes {
				m[h] = p.ID
			}
		}
		x.byHash = m
	}
	x.loading = nil
	close(ch)
}

// Lookup returns the id of the principal that token claims, or ErrUnknownToken. It queries
// ClickHouse only when the token is not in the index and no load began in the last
// MinReload; a lookup that finds a load running waits for it.
func (x *Index) Lookup(ctx context.Context, token string) (string, error) {
	if token == "" {
		return "", ErrUnknownToken
	}
	h := TokenHash(token)
	x.mu.Lock()
	if id, ok := x.byHash[h]; ok {
		x.mu.Unlock()
		return id, nil
	}
	ch := x.loading
	if ch == nil {
		if x.tried && time.Since(x.loadedAt) < x.minReload {
			x.mu.Unlock()
			return "", ErrUnknownToken
		}
		ch = x.begin()
		// The load outlives a client that goes away: other lookups wait for it too.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		go func() {
			defer cancel()
			x.load(lctx, ch)
		}()
	}
	x.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return "", ErrUnknownToken
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if id, ok := x.byHash[h]; ok {
		return id, nil
	}
	return "", ErrUnknownToken
}

// Authenticate finds the principal holding token: the index names it, and its current row
// (read by its id, the table's key) must still hold the token's hash. A token the index does
// not know, or that its principal no longer holds, is ErrUnknownToken.
func (x *Index) Authenticate(ctx context.Context, token string) (Principal, error) {
	id, err := x.Lookup(ctx, token)
	if err != nil {
		return Principal{}, err
	}
	return x.Current(ctx, id, token)
}

// Current reads principal id's current row and checks that it still holds token.
func (x *Index) Current(ctx context.Context, id, token string) (Principal, error) {
	p, err := x.store.Get(ctx, id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Principal{}, ErrUnknownToken
		}
		return Principal{}, err
	}
	want := []byte(TokenHash(token))
	for _, h := range p.TokenHashes {
		if subtle.ConstantTimeCompare([]byte(h), want) == 1 {
			return p, nil
		}
	}
	return Principal{}, ErrUnknownToken
}
