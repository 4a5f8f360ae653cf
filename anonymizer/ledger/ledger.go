// Package ledger is the privacy-budget ledger: every differentially private release charges
// its (ε, δ) to the budget of its purpose and period, a release that would overdraw is
// refused, and a release already charged (same query and window) is found again instead of
// being charged — and noised — twice. Entries are append-only and hash-chained.
//
// The aggregator appends to the ledger what its release log decided (Append): the log's order
// fixes each entry's sequence and previous hash, so every writer that appends the same
// releases writes the same rows and the chain cannot fork; identical rows written twice are
// read as one. Charge is the older path for a single writer: its lock serialises charges
// within one process only.
//
// Each entry's link is a keyed MAC under ledger.key_file (WithKey; audit/chain), so
// deleting a charge — which would refund its budget — or editing one cannot be hidden by
// recomputing the later links without the key; VerifyAnchor checks the chains against heads
// anchored outside ClickHouse, which also catches the deletion of a chain's tail. Entries
// written before the ledger was keyed keep their SHA-256 digests and verify as the prefix of
// their chain; an unkeyed entry after a keyed one never verifies, and a Ledger without a key
// refuses to append to a chain that holds a keyed entry.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/audit/chain"
)

// ErrOverdraw means the release would spend more than the period's budget.
var ErrOverdraw = errors.New("privacy budget would be overdrawn")

// ErrBroken means the chain does not verify: an entry was edited, inserted, deleted or
// reordered, or the chain does not hold an anchored head.
var ErrBroken = errors.New("ledger chain is broken")

// ErrNeedsKey means the chain holds keyed entries and this Ledger has no key.
var ErrNeedsKey = errors.New("the ledger's chain is keyed: set ledger.key_file")

// Budget is an (ε, δ) allowance or spend.
type Budget struct{ Epsilon, Delta float64 }

// Entry is one charge.
type Entry struct {
	ReleaseID     string
	Purpose       string
	Period        string // YYYY-MM
	Epsilon       float64
	Delta         float64
	L0, LInf      int64
	WindowStart   time.Time
	WindowEnd     time.Time
	QueryHash     string // what was released: metric, dimensions, parameters
	PolicyVersion int
	At            time.Time
	Seq           uint64
	PrevHash      string
	Hash          string
}

// fields are what an entry's link covers, after the previous entry's link.
func (e Entry) fields() []string {
	return []string{e.ReleaseID, e.Purpose, e.Period,
		strconv.FormatFloat(e.Epsilon, 'g', -1, 64), strconv.FormatFloat(e.Delta, 'g', -1, 64),
		strconv.FormatInt(e.L0, 10), strconv.FormatInt(e.LInf, 10),
		e.WindowStart.UTC().Format(time.RFC3339), e.WindowEnd.UTC().Format(time.RFC3339),
		e.QueryHash, strconv.Itoa(e.PolicyVersion), e.At.UTC().Format(time.RFC3339), strconv.FormatUint(e.Seq, 10)}
}

// Ledger reads and appends the ledger table of one database prefix.
type Ledger struct {
	conn  driver.Conn
	db    string // the Shukei database
	table string
	mu    sync.Mutex
	now   func() time.Time
	key   []byte // the chain key; nil: entries are chained unkeyed (legacy)
}

// WithKey sets the chain key (ledger.key_file) and returns l.
func (l *Ledger) WithKey(key []byte) *Ledger {
	l.key = key
	return l
}

// link is e's link under l's key, chained after prev; stored is what the chain held so far.
// A keyed tail is checked first: extending a chain whose last entry was forged would vouch for
// it.
func (l *Ledger) link(stored []Entry, e Entry) (string, error) {
	if n := len(stored); n > 0 && chain.Keyed(stored[n-1].Hash) {
		if l.key == nil {
			return "", fmt.Errorf("%w (purpose %s)", ErrNeedsKey, e.Purpose)
		}
		// Only the entry right after the stored tail checks it (Append chains the rest of its
		// entries after that one).
		t := stored[n-1]
		if ok, _ := chain.Check(l.key, true, t.Hash, t.PrevHash, t.fields()...); t.Hash == e.PrevHash && !ok {
			return "", fmt.Errorf("%w: the last %s entry (%d) does not verify; run 'shukei ledger verify'", ErrBroken, e.Purpose, t.Seq)
		}
	}
	return chain.Link(l.key, e.PrevHash, e.fields()...), nil
}

// New returns the ledger of the Shukei database db.
func New(conn driver.Conn, db string) *Ledger {
	return &Ledger{conn: conn, db: db, table: db + "_external_aggregate.budget_ledger", now: func() time.Time { return time.Now().UTC().Truncate(time.Second) }}
}

// Charge records e against budget. If the same purpose, query and window were charged
// before, it returns that entry and true, and charges nothing.
func (l *Ledger) Charge(ctx context.Context, e Entry, budget Budget) (Entry, bool, error) {
	if !(e.Epsilon > 0) || math.IsInf(e.Epsilon, 0) || e.Delta < 0 || e.Delta >= 1 || math.IsNaN(e.Delta) {
		return e, false, fmt.Errorf("ledger: invalid charge ε=%v δ=%v", e.Epsilon, e.Delta)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	entries, err := l.entries(ctx, e.Purpose)
	if err != nil {
		return e, false, err
	}
	var spent Budget
	for _, x := range entries {
		if x.QueryHash == e.QueryHash && x.WindowStart.Equal(e.WindowStart) && x.WindowEnd.Equal(e.WindowEnd) {
			return x, true, nil
		}
		if x.Period == e.Period {
			spent.Epsilon += x.Epsilon
			spent.Delta += x.Delta
		}
	}
	// A small tolerance for float sums: ten releases of 0.1 must fit a budget of 1.
	const tol = 1e-9
	if spent.Epsilon+e.Epsilon > budget.Epsilon+tol || spent.Delta+e.Delta > budget.Delta+tol {
		return e, false, fmt.Errorf("%w: %s %s has spent ε=%.4g δ=%.3g of ε=%.4g δ=%.3g; this release needs ε=%.4g δ=%.3g",
			ErrOverdraw, e.Purpose, e.Period, spent.Epsilon, spent.Delta, budget.Epsilon, budget.Delta, e.Epsilon, e.Delta)
	}
	e.At = l.now()
	e.Seq = uint64(len(entries)) + 1
	if len(entries) > 0 {
		e.PrevHash = entries[len(entries)-1].Hash
	}
	if e.Hash, err = l.link(entries, e); err != nil {
		return e, false, err
	}
	b, err := l.conn.PrepareBatch(ctx, "INSERT INTO "+l.table+" (release_id, purpose, period, epsilon, delta, l0, linf, window_start, window_end, query_hash, policy_version, at, seq, prev_hash, hash)")
	if err != nil {
		return e, false, err
	}
	if err := b.Append(e.ReleaseID, e.Purpose, e.Period, e.Epsilon, e.Delta, e.L0, e.LInf, e.WindowStart.UTC(), e.WindowEnd.UTC(),
		e.QueryHash, uint16(e.PolicyVersion), e.At, e.Seq, e.PrevHash, e.Hash); err != nil {
		return e, false, err
	}
	return e, false, b.Send()
}

// Append writes the entries of es that the ledger does not hold yet (by release id), each
// chained after the ledger's last entry, in the order given. es must come in the one order
// every writer agrees on (the release log's), with At set by the caller: then two writers
// appending at once write identical rows, never a fork. It returns how many it wrote.
func (l *Ledger) Append(ctx context.Context, purpose string, es []Entry) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	stored, err := l.entries(ctx, purpose)
	if err != nil {
		return 0, err
	}
	have := map[string]bool{}
	for _, e := range stored {
		have[e.ReleaseID] = true
	}
	prev, seq := "", uint64(len(stored))
	if len(stored) > 0 {
		prev = stored[len(stored)-1].Hash
	}
	b, err := l.conn.PrepareBatch(ctx, "INSERT INTO "+l.table+" (release_id, purpose, period, epsilon, delta, l0, linf, window_start, window_end, query_hash, policy_version, at, seq, prev_hash, hash)")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range es {
		if have[e.ReleaseID] {
			continue
		}
		if e.Purpose != purpose || !(e.Epsilon > 0) || math.IsInf(e.Epsilon, 0) || e.Delta < 0 || e.Delta >= 1 || math.IsNaN(e.Delta) {
			return 0, fmt.Errorf("ledger: invalid entry %s: purpose %q ε=%v δ=%v", e.ReleaseID, e.Purpose, e.Epsilon, e.Delta)
		}
		seq++
		e.Seq, e.PrevHash, e.At = seq, prev, e.At.UTC().Truncate(time.Second)
		if e.Hash, err = l.link(stored, e); err != nil {
			_ = b.Abort()
			return 0, err
		}
		prev = e.Hash
		if err := b.Append(e.ReleaseID, e.Purpose, e.Period, e.Epsilon, e.Delta, e.L0, e.LInf, e.WindowStart.UTC(), e.WindowEnd.UTC(),
			e.QueryHash, uint16(e.PolicyVersion), e.At, e.Seq, e.PrevHash, e.Hash); err != nil {
			return 0, err
		}
		have[e.ReleaseID] = true
		n++
	}
	if n == 0 {
		_ = b.Abort()
		return 0, nil
	}
	return n, b.Send()
}

// Entries returns a purpose's entries in chain order (identical rows written twice as one).
func (l *Ledger) Entries(ctx context.Context, purpose string) ([]Entry, error) {
	return l.entries(ctx, purpose)
}

// Spent returns what a purpose has spent in a period.
func (l *Ledger) Spent(ctx context.Context, purpose, period string) (Budget, error) {
	entries, err := l.entries(ctx, purpose)
	if err != nil {
		return Budget{}, err
	}
	var s Budget
	for _, e := range entries {
		if e.Period == period {
			s.Epsilon += e.Epsilon
			s.Delta += e.Delta
		}
	}
	return s, nil
}

// Verify walks a purpose's chain and reports the first broken link.
func (l *Ledger) Verify(ctx context.Context, purpose string) error {
	_, err := l.VerifyChain(ctx, purpose)
	return err
}

// ChainState is what walking one purpose's chain found.
type ChainState struct {
	Purpose string
	Entries int
	Legacy  int        // unkeyed entries (the prefix written before the ledger was keyed)
	Head    chain.Head // the last entry; {0, ""} for an empty chain
}

// VerifyChain walks a purpose's chain: sequences 1, 2, … without a gap or a repeat, each entry
// linked to the one before, each keyed link checked with the key, unkeyed links only before
// the first keyed one.
func (l *Ledger) VerifyChain(ctx context.Context, purpose string) (ChainState, error) {
	entries, err := l.entries(ctx, purpose)
	if err != nil {
		return ChainState{Purpose: purpose}, err
	}
	return l.walk(purpose, entries)
}

func (l *Ledger) walk(purpose string, entries []Entry) (ChainState, error) {
	st := ChainState{Purpose: purpose}
	prev, keyed := "", false
	for i, e := range entries {
		if e.Seq != uint64(i)+1 {
			return st, fmt.Errorf("%w: %s entry %d has sequence %d (an entry is missing, repeated or forked)", ErrBroken, purpose, i+1, e.Seq)
		}
		if e.PrevHash != prev {
			return st, fmt.Errorf("%w: %s entry %d (release %s) does not follow entry %d (one was deleted, inserted or moved)", ErrBroken, purpose, e.Seq, e.ReleaseID, e.Seq-1)
		}
		if ok, why := chain.Check(l.key, keyed, e.Hash, e.PrevHash, e.fields()...); !ok {
			return st, fmt.Errorf("%w: %s entry %d (release %s) %s", ErrBroken, purpose, e.Seq, e.ReleaseID, why)
		}
		if chain.Keyed(e.Hash) {
			keyed = true
		} else {
			st.Legacy++
		}
		prev = e.Hash
		st.Entries++
		st.Head = chain.Head{Seq: e.Seq, MAC: e.Hash}
	}
	return st, nil
}

// Purposes lists the purposes the ledger holds a chain for.
func (l *Ledger) Purposes(ctx context.Context) ([]string, error) {
	rows, err := l.conn.Query(ctx, "SELECT DISTINCT purpose FROM "+l.table+" ORDER BY purpose")
	if err != nil {
		return nil, fmt.Errorf("read the budget ledger: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// VerifyAll verifies every purpose's chain, and returns their states.
func (l *Ledger) VerifyAll(ctx context.Context) ([]ChainState, error) {
	ps, err := l.Purposes(ctx)
	if err != nil {
		return nil, err
	}
	var out []ChainState
	for _, p := range ps {
		st, err := l.VerifyChain(ctx, p)
		if err != nil {
			return out, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Anchor verifies every chain and returns their heads as an anchor of database db. A chain
// that does not verify is not anchored: an anchor vouches for what it names.
func (l *Ledger) Anchor(ctx context.Context, db string) (chain.Anchor, error) {
	sts, err := l.VerifyAll(ctx)
	if err != nil {
		return chain.Anchor{}, err
	}
	a := chain.Anchor{Log: chain.LedgerLog, Database: db, At: l.now(), Heads: map[string]chain.Head{}}
	for _, st := range sts {
		a.Heads[st.Purpose] = st.Head
	}
	return a, nil
}

// VerifyAnchor verifies every chain, and that each purpose's chain still holds the head the
// anchor names — the same sequence with the same link. With the chains verifying under the
// key, that pins every entry up to the anchored head: an entry edited, inserted, deleted or
// moved before it, or the chain truncated below it, changes or removes that link.
func (l *Ledger) VerifyAnchor(ctx context.Context, a chain.Anchor) ([]ChainState, error) {
	if a.Log != chain.LedgerLog {
		return nil, fmt.Errorf("the anchor is of the %q log, not the ledger", a.Log)
	}
	sts, err := l.VerifyAll(ctx)
	if err != nil {
		return sts, err
	}
	for purpose, h := range a.Heads {
		if h.Seq == 0 {
			continue
		}
		entries, err := l.entries(ctx, purpose)
		if err != nil {
			return sts, err
		}
		if uint64(len(entries)) < h.Seq {
			return sts, fmt.Errorf("%w: %s has %d entries, the anchor of %s names entry %d (the chain was truncated)", ErrBroken, purpose, len(entries), a.At.Format(time.RFC3339), h.Seq)
		}
		if got := entries[h.Seq-1]; got.Seq != h.Seq || got.Hash != h.MAC {
			return sts, fmt.Errorf("%w: %s entry %d is not the one anchored at %s (the chain up to it was rewritten)", ErrBroken, purpose, h.Seq, a.At.Format(time.RFC3339))
		}
	}
	return sts, nil
}

// entries reads a purpose's entries by sequence. Two writers appending the same release write
// identical rows, read here as one (DISTINCT over every column); two different rows with one
// sequence number (a fork, or a forged twin copying an entry's sequence and link) are both
// returned, and Verify names the fork.
func (l *Ledger) entries(ctx context.Context, purpose string) ([]Entry, error) {
	rows, err := l.conn.Query(ctx, "SELECT DISTINCT release_id, purpose, period, epsilon, delta, l0, linf, window_start, window_end, query_hash, policy_version, at, seq, prev_hash, hash FROM "+l.table+" WHERE purpose = ? ORDER BY seq, hash", purpose)
	if err != nil {
		return nil, fmt.Errorf("read the budget ledger: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var pv uint16
		if err := rows.Scan(&e.ReleaseID, &e.Purpose, &e.Period, &e.Epsilon, &e.Delta, &e.L0, &e.LInf, &e.WindowStart, &e.WindowEnd,
			&e.QueryHash, &pv, &e.At, &e.Seq, &e.PrevHash, &e.Hash); err != nil {
			return nil, err
		}
		e.PolicyVersion = int(pv)
		out = append(out, e)
	}
	return out, rows.Err()
}
