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

	"github.com/shukei/shukei/internal/chain"
)

// ErrOverdraw means the release would spend more than the period's budget.
var ErrOverdraw = errors.New("privacy budget would be overdrawn")

// ErrBroken means the hash chain does not verify: an entry was edited or deleted.
var ErrBroken = errors.New("ledger hash chain is broken")

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

func (e Entry) digest() string {
	return chain.Digest(e.PrevHash, e.ReleaseID, e.Purpose, e.Period,
		strconv.FormatFloat(e.Epsilon, 'g', -1, 64), strconv.FormatFloat(e.Delta, 'g', -1, 64),
		strconv.FormatInt(e.L0, 10), strconv.FormatInt(e.LInf, 10),
		e.WindowStart.UTC().Format(time.RFC3339), e.WindowEnd.UTC().Format(time.RFC3339),
		e.QueryHash, strconv.Itoa(e.PolicyVersion), e.At.UTC().Format(time.RFC3339), strconv.FormatUint(e.Seq, 10))
}

// Ledger reads and appends the ledger table of one database prefix.
type Ledger struct {
	conn  driver.Conn
	table string
	mu    sync.Mutex
	now   func() time.Time
}

// New returns the ledger of the Shukei database db.
func New(conn driver.Conn, db string) *Ledger {
	return &Ledger{conn: conn, table: db + "_external_aggregate.budget_ledger", now: func() time.Time { return time.Now().UTC().Truncate(time.Second) }}
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
	e.Hash = e.digest()
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
		e.Hash = e.digest()
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
	entries, err := l.entries(ctx, purpose)
	if err != nil {
		return err
	}
	prev := ""
	for i, e := range entries {
		if e.Seq != uint64(i)+1 {
			return fmt.Errorf("%w: entry %d has sequence %d (an entry is missing or repeated)", ErrBroken, i+1, e.Seq)
		}
		if e.PrevHash != prev || e.digest() != e.Hash {
			return fmt.Errorf("%w: at entry %d (release %s)", ErrBroken, e.Seq, e.ReleaseID)
		}
		prev = e.Hash
	}
	return nil
}

// entries reads a purpose's entries by sequence. Two writers appending the same release write
// identical rows, read here as one; two different rows with one sequence number (a fork)
// are both returned, and Verify names the fork.
func (l *Ledger) entries(ctx context.Context, purpose string) ([]Entry, error) {
	rows, err := l.conn.Query(ctx, "SELECT release_id, purpose, period, epsilon, delta, l0, linf, window_start, window_end, query_hash, policy_version, at, seq, prev_hash, hash FROM "+l.table+" WHERE purpose = ? ORDER BY seq, hash LIMIT 1 BY seq, hash", purpose)
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
