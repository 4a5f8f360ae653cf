package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

const purpose = "external_aggregate"

type keyedLedger struct {
	t    *testing.T
	conn driver.Conn
	db   string
	key  []byte
	opts clickhouse.Options
}

func newKeyedLedger(t *testing.T) *keyedLedger {
	conn, cfg := servicetest.ClickHouse(t)
	if _, err := migrations.Apply(context.Background(), conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	key, err := chain.ParseKey(chain.NewKeyText())
	if err != nil {
		t.Fatal(err)
	}
	return &keyedLedger{t: t, conn: conn, db: cfg.ClickHouse.Database, key: key, opts: *cfg.ClickHouse.Options()}
}

func (k *keyedLedger) ledger(conn driver.Conn) *ledger.Ledger {
	return ledger.New(conn, k.db).WithKey(k.key)
}

// entries are the release log's decisions, in its order: every aggregator appends the same.
func entries(from, n int) []ledger.Entry {
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var out []ledger.Entry
	for i := from; i < from+n; i++ {
		out = append(out, ledger.Entry{ReleaseID: fmt.Sprintf("r%d", i), Purpose: purpose, Period: "2026-11", Epsilon: 0.1, Delta: 1e-9, L0: 3, LInf: 5,
			WindowStart: day.Add(time.Duration(i) * time.Hour), WindowEnd: day.Add(time.Duration(i+1) * time.Hour),
			QueryHash: "q", PolicyVersion: 1, At: day.Add(time.Duration(i+1) * time.Hour)})
	}
	return out
}

func (k *keyedLedger) exec(sql string) {
	k.t.Helper()
	ctx := context.Background()
	if err := k.conn.Exec(ctx, strings.ReplaceAll(sql, "$t", k.db+"_external_aggregate.budget_ledger")); err != nil {
		k.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pending uint64
		if err := k.conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND table = 'budget_ledger' AND is_done = 0", k.db+"_external_aggregate").Scan(&pending); err != nil {
			k.t.Fatal(err)
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatal("mutation not applied in 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (k *keyedLedger) insert(es ...ledger.Entry) {
	k.t.Helper()
	b, err := k.conn.PrepareBatch(context.Background(), "INSERT INTO "+k.db+"_external_aggregate.budget_ledger (release_id, purpose, period, epsilon, delta, l0, linf, window_start, window_end, query_hash, policy_version, at, seq, prev_hash, hash)")
	if err != nil {
		k.t.Fatal(err)
	}
	for _, e := range es {
		if err := b.Append(e.ReleaseID, e.Purpose, e.Period, e.Epsilon, e.Delta, e.L0, e.LInf, e.WindowStart, e.WindowEnd, e.QueryHash,
			uint16(e.PolicyVersion), e.At, e.Seq, e.PrevHash, e.Hash); err != nil {
			k.t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		k.t.Fatal(err)
	}
}

// Deleting a charge (a refund), editing, inserting, reordering or truncating entries up to the
// anchored heads is found by VerifyAnchor, by someone with full ClickHouse write access and no
// key; the untouched ledger, and entries after the anchor, verify.
func TestLedgerAnchorDetectsRewrites(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(k *keyedLedger, stored []ledger.Entry)
		want   string
	}{
		{"edit", func(k *keyedLedger, _ []ledger.Entry) { k.exec("ALTER TABLE $t UPDATE epsilon = 0.01 WHERE seq = 2") }, "entry 2 (release r1) was edited"},
		{"refund", func(k *keyedLedger, _ []ledger.Entry) { k.exec("ALTER TABLE $t DELETE WHERE seq = 3") }, "entry 3 has sequence 4"},
		{"insert", func(k *keyedLedger, stored []ledger.Entry) {
			e := stored[1]
			e.ReleaseID, e.Hash = "forged", chain.MAC([]byte("not the key"), e.PrevHash, "x")
			k.insert(e)
		}, "external_aggregate entry"},
		{"forged twin", func(k *keyedLedger, stored []ledger.Entry) {
			e := stored[2] // sequence and link kept, a smaller charge
			e.Epsilon = 0.0001
			k.insert(e)
		}, "external_aggregate entry 3"}, // edited or forked: whichever of the twins reads first
		{"reorder", func(k *keyedLedger, stored []ledger.Entry) {
			k.exec("ALTER TABLE $t DELETE WHERE seq IN (2, 3)")
			a, b := stored[2], stored[1]
			a.Seq, b.Seq = 2, 3
			k.insert(a, b)
		}, "entry 2 (release r2) does not follow"},
		{"truncate", func(k *keyedLedger, _ []ledger.Entry) { k.exec("ALTER TABLE $t DELETE WHERE seq > 3") }, "truncated"},
		{"relink unkeyed", func(k *keyedLedger, stored []ledger.Entry) {
			k.exec("ALTER TABLE $t DELETE WHERE 1 = 1")
			// The whole chain rebuilt as legacy digests, a charge left out: a chain of its own
			// that verifies — but not the anchored one.
			var es []ledger.Entry
			for _, e := range append(stored[:2:2], stored[3:]...) {
				e.ReleaseID = e.ReleaseID + "x"
				es = append(es, e)
			}
			if _, err := ledger.New(k.conn, k.db).Append(context.Background(), purpose, es); err != nil {
				t.Fatal(err)
			}
		}, "not the one anchored"},
		{"edit after the anchor", func(k *keyedLedger, _ []ledger.Entry) { k.exec("ALTER TABLE $t UPDATE epsilon = 0.01 WHERE seq = 7") }, "entry 7 (release r6) was edited"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := newKeyedLedger(t)
			l := k.ledger(k.conn)
			ctx := context.Background()
			if n, err := l.Append(ctx, purpose, entries(0, 5)); err != nil || n != 5 {
				t.Fatalf("Append = %d, %v", n, err)
			}
			a, err := l.Anchor(ctx, k.db)
			if err != nil || a.Heads[purpose].Seq != 5 || !chain.Keyed(a.Heads[purpose].MAC) {
				t.Fatalf("Anchor = %+v, %v", a, err)
			}
			if _, err := l.Append(ctx, purpose, entries(5, 2)); err != nil {
				t.Fatal(err)
			}
			if sts, err := l.VerifyAnchor(ctx, a); err != nil || len(sts) != 1 || sts[0].Entries != 7 {
				t.Fatalf("untouched: %+v, %v", sts, err)
			}
			stored, err := l.Entries(ctx, purpose)
			if err != nil {
				t.Fatal(err)
			}
			c.tamper(k, stored)
			if _, err := l.VerifyAnchor(ctx, a); !errors.Is(err, ledger.ErrBroken) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("VerifyAnchor after %s: %v; want %q", c.name, err, c.want)
			}
		})
	}
}

// Aggregators on connections of their own appending the release log's decisions at once (each
// from where it last read the log) leave one keyed chain that verifies, every release once.
func TestLedgerConcurrentWriters(t *testing.T) {
	k := newKeyedLedger(t)
	ctx := context.Background()
	all := entries(0, 40)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for w := range 4 {
		conn, err := clickhouse.Open(&k.opts)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		l := k.ledger(conn)
		wg.Go(func() {
			for n := 5 + w; n <= len(all); n += 5 {
				if _, err := l.Append(ctx, purpose, all[:n]); err != nil {
					errs[w] = err
					return
				}
			}
			_, errs[w] = l.Append(ctx, purpose, all)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	st, err := k.ledger(k.conn).VerifyChain(ctx, purpose)
	if err != nil || st.Entries != len(all) || st.Legacy != 0 {
		t.Fatalf("VerifyChain = %+v, %v; want %d keyed entries", st, err, len(all))
	}
}

// A ledger written before it was keyed is its chain's verified prefix; once keyed entries
// follow, a writer without the key is refused, and the prefix cannot be edited unseen.
func TestLedgerLegacyPrefix(t *testing.T) {
	k := newKeyedLedger(t)
	ctx := context.Background()
	old := ledger.New(k.conn, k.db)
	if _, err := old.Append(ctx, purpose, entries(0, 3)); err != nil {
		t.Fatal(err)
	}
	l := k.ledger(k.conn)
	if _, err := l.Append(ctx, purpose, entries(3, 2)); err != nil {
		t.Fatal(err)
	}
	if st, err := l.VerifyChain(ctx, purpose); err != nil || st.Entries != 5 || st.Legacy != 3 {
		t.Fatalf("VerifyChain = %+v, %v", st, err)
	}
	if _, err := old.Append(ctx, purpose, entries(5, 1)); !errors.Is(err, ledger.ErrNeedsKey) {
		t.Fatalf("an unkeyed writer after keyed entries: %v", err)
	}
	if _, _, err := old.Charge(ctx, entries(6, 1)[0], ledger.Budget{Epsilon: 10, Delta: 1e-3}); !errors.Is(err, ledger.ErrNeedsKey) {
		t.Fatalf("an unkeyed charge after keyed entries: %v", err)
	}
	if err := old.Verify(ctx, purpose); err == nil {
		t.Fatal("a keyed chain verified without the key")
	}
	// An unkeyed entry appended after the keyed ones, its digest right: refused.
	stored, _ := l.Entries(ctx, purpose)
	e := entries(9, 1)[0]
	e.Seq, e.PrevHash = 6, stored[4].Hash
	e.Hash = chain.Digest(e.PrevHash, e.ReleaseID) // any unkeyed link
	k.insert(e)
	if err := l.Verify(ctx, purpose); !errors.Is(err, ledger.ErrBroken) {
		t.Fatalf("an unkeyed entry after keyed ones: %v", err)
	}
}

// An aggregator does not extend a keyed chain whose last entry does not verify: its next entry
// would vouch for the forgery.
func TestLedgerRefusesAForgedTail(t *testing.T) {
	k := newKeyedLedger(t)
	ctx := context.Background()
	l := k.ledger(k.conn)
	if _, err := l.Append(ctx, purpose, entries(0, 3)); err != nil {
		t.Fatal(err)
	}
	k.exec("ALTER TABLE $t UPDATE epsilon = 0.001 WHERE seq = 3")
	if _, err := l.Append(ctx, purpose, entries(3, 1)); !errors.Is(err, ledger.ErrBroken) {
		t.Fatalf("Append after the tail was edited: %v", err)
	}
}
