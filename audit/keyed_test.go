package audit

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

	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/topic"
)

// keyedEnv is an audit log on the real services: a database of its own, a sequencer topic of its
// own, a chain key.
type keyedEnv struct {
	t    *testing.T
	conn driver.Conn
	cfg  config.Config
	db   string
	key  []byte
	spec topic.Spec
}

func newKeyedEnv(t *testing.T) *keyedEnv {
	t.Helper()
	conn, cfg := servicetest.ClickHouse(t)
	kcfg := servicetest.Kafka(t)
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	key, err := chain.ParseKey(chain.NewKeyText())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.Brokers = kcfg.Kafka.Brokers
	name := servicetest.Topic(t, cfg.Kafka.Brokers, 1)
	return &keyedEnv{t: t, conn: conn, cfg: cfg, db: cfg.ClickHouse.Database, key: key,
		spec: topic.Spec{Name: name, Partitions: 1, ReplicationFactor: 1}}
}

// log is a writer as a role runs it: keyed and sequenced, on conn.
func (e *keyedEnv) log(conn driver.Conn) *Log {
	return New(conn, e.db, WithKey(e.key), WithSequencer(e.cfg.Kafka.Brokers, e.spec))
}

// conn opens a connection of its own, as another process would.
func (e *keyedEnv) newConn() driver.Conn {
	e.t.Helper()
	conn, err := clickhouse.Open(e.cfg.ClickHouse.Options())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return conn
}

func (e *keyedEnv) append(l *Log, n int, who string) []Record {
	e.t.Helper()
	var out []Record
	for i := range n {
		r, err := l.Append(context.Background(), Record{Principal: fmt.Sprintf("%s-%d", who, i), Kind: "employee", Purpose: "marketing",
			Report: "adoption", ParamsHash: "h", Decision: Allowed, Rows: uint64(i)})
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// exec runs a statement on the audit table ($t) and waits for its mutations.
func (e *keyedEnv) exec(sql string, args ...any) {
	e.t.Helper()
	ctx := context.Background()
	if err := e.conn.Exec(ctx, strings.ReplaceAll(sql, "$t", e.db+"_audit.audit_log"), args...); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pending uint64
		if err := e.conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND table = 'audit_log' AND is_done = 0", e.db+"_audit").Scan(&pending); err != nil {
			e.t.Fatal(err)
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatal("mutation not applied in 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rewrite replaces the whole table with what edit makes of its records: an attacker with full
// write access to ClickHouse and no key.
func (e *keyedEnv) rewrite(edit func([]Record) []Record) {
	e.t.Helper()
	l := New(e.conn, e.db)
	rs, err := l.read(context.Background(), "", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	rs = edit(rs)
	e.exec("ALTER TABLE $t DELETE WHERE 1 = 1")
	e.insert(rs...)
}

func (e *keyedEnv) insert(rs ...Record) {
	e.t.Helper()
	b, err := e.conn.PrepareBatch(context.Background(), "INSERT INTO "+e.db+"_audit.audit_log ("+columns+")")
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range rs {
		if err := b.Append(r.Seq, r.At, r.Principal, r.Kind, r.ContractRef, r.Purpose, r.Ticket, r.Report, r.ParamsHash,
			r.Decision, r.Reason, r.Rows, r.BudgetEpsilon, r.Tenant, r.PrevHash, r.Hash, r.LogOffset); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		e.t.Fatal(err)
	}
}

// relink recomputes every link from record i on as the legacy digest, as someone without the
// key would to hide an edit.
func relink(rs []Record, from int) []Record {
	for i := from; i < len(rs); i++ {
		rs[i].Seq = uint64(i) + 1
		if i > 0 {
			rs[i].PrevHash = rs[i-1].Hash
		} else {
			rs[i].PrevHash = ""
		}
		rs[i].Hash = rs[i].link(nil)
	}
	return rs
}

// Every way of rewriting the chain without the key, up to an anchored head, is found by
// VerifyAnchor; the untouched chain, and records appended after the anchor, verify.
func TestAnchorDetectsRewrites(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(e *keyedEnv)
		want   string
	}{
		{"edit", func(e *keyedEnv) { e.exec("ALTER TABLE $t UPDATE rows = 99 WHERE seq = 3") }, "record 3 was edited"},
		{"edit and relink unkeyed", func(e *keyedEnv) {
			e.rewrite(func(rs []Record) []Record { rs[2].Rows = 99; return relink(rs, 2) })
		}, "record 3 is unkeyed after a keyed record"},
		{"rewrite all unkeyed", func(e *keyedEnv) {
			e.rewrite(func(rs []Record) []Record { return relink(append(rs[:4:4], rs[5:]...), 0) }) // record 5 gone, renumbered
		}, "not the one anchored"},
		{"delete", func(e *keyedEnv) { e.exec("ALTER TABLE $t DELETE WHERE seq = 4") }, "record 4 has sequence 5"},
		{"delete and renumber", func(e *keyedEnv) {
			e.rewrite(func(rs []Record) []Record {
				rs = append(rs[:3:3], rs[4:]...)
				for i := 3; i < len(rs); i++ {
					rs[i].Seq = uint64(i) + 1
				}
				return rs
			})
		}, "record 4 does not follow record 3"},
		{"insert", func(e *keyedEnv) {
			e.rewrite(func(rs []Record) []Record {
				forged := rs[4]
				forged.Principal, forged.PrevHash, forged.Hash = "someone-else", rs[3].Hash, chain.MAC([]byte("not the key"), rs[3].Hash, "x")
				rs = append(rs[:4:4], append([]Record{forged}, rs[4:]...)...)
				for i := 4; i < len(rs); i++ {
					rs[i].Seq = uint64(i) + 1
				}
				return rs
			})
		}, "record 5 was edited"},
		{"fork", func(e *keyedEnv) {
			rs, _ := New(e.conn, e.db).read(context.Background(), "WHERE seq = 5", nil)
			r := rs[0]
			r.Principal, r.Hash = "someone-else", chain.MAC([]byte("not the key"), r.PrevHash, "x")
			e.insert(r)
		}, "chain is broken"}, // record 5 or 6, whichever of the twins reads first
		{"forged twin", func(e *keyedEnv) {
			// A copy of record 5, its sequence and link kept, another principal.
			rs, _ := New(e.conn, e.db).read(context.Background(), "WHERE seq = 5", nil)
			r := rs[0]
			r.Principal = "someone-else"
			e.insert(r)
		}, "chain is broken"},
		{"reorder", func(e *keyedEnv) {
			e.rewrite(func(rs []Record) []Record {
				rs[2], rs[3] = rs[3], rs[2]
				rs[2].Seq, rs[3].Seq = 3, 4
				return rs
			})
		}, "record 3 does not follow record 2"},
		{"truncate", func(e *keyedEnv) { e.exec("ALTER TABLE $t DELETE WHERE seq > 6") }, "truncated"},
		{"edit after the anchor", func(e *keyedEnv) { e.exec("ALTER TABLE $t UPDATE rows = 99 WHERE seq = 10") }, "record 10 was edited"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newKeyedEnv(t)
			l := e.log(e.conn)
			ctx := context.Background()
			e.append(l, 8, "a")
			a, err := l.Anchor(ctx)
			if err != nil || a.Seq != 8 || !chain.Keyed(a.MAC) || a.Database != e.db || a.Log != chain.AuditLog {
				t.Fatalf("Anchor = %+v, %v", a, err)
			}
			e.append(l, 2, "b")
			if st, err := l.VerifyAnchor(ctx, a); err != nil || st.Records != 10 || st.Legacy != 0 {
				t.Fatalf("untouched: %+v, %v", st, err)
			}
			c.tamper(e)
			st, err := l.VerifyAnchor(ctx, a)
			if !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("VerifyAnchor after %s: %+v, %v; want %q", c.name, st, err, c.want)
			}
		})
	}
}

// Any number of writers on connections of their own, appending at once, leave one chain that
// verifies, with every record once, and each Append names its own record.
func TestConcurrentWritersOneChain(t *testing.T) {
	e := newKeyedEnv(t)
	ctx := context.Background()
	const writers, each = 3, 60
	var wg sync.WaitGroup
	got := make([][]Record, writers)
	errs := make([]error, writers*each)
	logs := make([]*Log, writers)
	for w := range writers {
		logs[w] = e.log(e.newConn())
		got[w] = make([]Record, each)
	}
	for w := range writers {
		for i := range each {
			wg.Go(func() {
				r, err := logs[w].Append(ctx, Record{Principal: fmt.Sprintf("w%d-%d", w, i), Kind: "employee", Decision: Allowed})
				got[w][i], errs[w*each+i] = r, err
			})
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	l := e.log(e.conn)
	st, err := l.VerifyChain(ctx)
	if err != nil || st.Records != writers*each {
		t.Fatalf("VerifyChain = %+v, %v; want %d records", st, err, writers*each)
	}
	rs, err := l.read(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for w := range writers {
		for i, r := range got[w] {
			if r.Seq == 0 || r.Seq > uint64(len(rs)) || rs[r.Seq-1].Principal != fmt.Sprintf("w%d-%d", w, i) || rs[r.Seq-1].Hash != r.Hash {
				t.Fatalf("writer %d append %d got %+v, the chain holds %+v there", w, i, r, rs[min(int(r.Seq), len(rs))-1])
			}
		}
	}
	groups := 0
	for _, l := range logs {
		groups += l.groups
	}
	if groups >= writers*each {
		t.Errorf("%d appends took %d groups: no group commit", writers*each, groups)
	}
}

// A writer paused after producing its record, and again after computing the rows it would
// store (SIGSTOP, a GC pause), resumes into the chain the others wrote meanwhile: its late
// insert writes rows identical to theirs, the chain still verifies, and its record is there
// once, at the place the sequencer gave it.
func TestPausedWriterResumes(t *testing.T) {
	e := newKeyedEnv(t)
	ctx := context.Background()
	slow, fast := e.log(e.newConn()), e.log(e.newConn())
	e.append(fast, 2, "before")
	// The slow writer produces its record, computes the rows it would store against the tail
	// as it is now, and is paused before it stores them.
	fastDone := make(chan struct{})
	rec, off := produceOne(t, slow, Record{Principal: "slow", Kind: "employee", Decision: Allowed})
	slowRows, _, err := slow.compute(ctx, off)
	if err != nil || len(slowRows) != 1 {
		t.Fatalf("compute: %d rows, %v", len(slowRows), err)
	}
	go func() {
		defer close(fastDone)
		e.append(fast, 3, "meanwhile") // materialises the slow writer's record too
	}()
	<-fastDone
	// Resumed: it stores the rows it computed before (identical to those stored), then reads
	// its record's place.
	if err := slow.store(ctx, slowRows); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.materialise(ctx, off); err != nil {
		t.Fatal(err)
	}
	st, err := fast.VerifyChain(ctx)
	if err != nil || st.Records != 6 {
		t.Fatalf("VerifyChain = %+v, %v; want 6 records", st, err)
	}
	rs, err := fast.read(ctx, "WHERE log_offset = ?", []any{off})
	if err != nil || len(rs) != 1 || rs[0].Principal != rec.Principal || rs[0].Seq != 3 {
		t.Fatalf("the slow writer's record: %+v, %v", rs, err)
	}
	var stored uint64
	if err := e.conn.QueryRow(ctx, "SELECT count() FROM "+e.db+"_audit.audit_log WHERE log_offset = ?", off).Scan(&stored); err != nil || stored < 1 {
		t.Fatalf("stored copies: %d, %v", stored, err)
	}
}

// produceOne produces one record as writeSequenced does and returns it with its offset.
func produceOne(t *testing.T, l *Log, r Record) (Record, int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := topic.Ensure(ctx, l.seqr.brokers, []topic.Spec{l.seqr.spec}); err != nil {
		t.Fatal(err)
	}
	l.seqr.ensured = true
	off, err := l.produce(ctx, []*pending{{r: r}})
	if err != nil {
		t.Fatal(err)
	}
	return r, off
}

// A chain written before the audit log was keyed is its verified prefix; keyed records follow
// it, a writer without the key can no longer append, and editing the prefix is found.
func TestLegacyPrefix(t *testing.T) {
	e := newKeyedEnv(t)
	ctx := context.Background()
	legacy := New(e.conn, e.db) // the code before keys: unkeyed, unsequenced
	e.append(legacy, 3, "old")
	l := e.log(e.conn)
	e.append(l, 3, "new")
	st, err := l.VerifyChain(ctx)
	if err != nil || st.Records != 6 || st.Legacy != 3 {
		t.Fatalf("VerifyChain = %+v, %v; want 6 records, 3 legacy", st, err)
	}
	if _, err := legacy.Append(ctx, Record{Principal: "old", Decision: Allowed}); err == nil {
		t.Fatal("an unsequenced writer appended after the sequencer")
	}
	unkeyed := New(e.conn, e.db, WithSequencer(e.cfg.Kafka.Brokers, e.spec))
	if _, err := unkeyed.Append(ctx, Record{Principal: "old", Decision: Allowed}); !errors.Is(err, ErrNeedsKey) {
		t.Fatalf("an unkeyed writer after keyed records: %v", err)
	}
	// The unkeyed writer's record is in the sequencer: the next keyed writer chains it, keyed.
	e.append(l, 1, "after")
	if st, err := l.VerifyChain(ctx); err != nil || st.Records != 8 || st.Legacy != 3 {
		t.Fatalf("VerifyChain = %+v, %v; want 8 records, 3 legacy", st, err)
	}
	if _, err := New(e.conn, e.db, WithKey([]byte("another key, not this chain's..."))).VerifyChain(ctx); !errors.Is(err, ErrBroken) {
		t.Fatalf("verify with another key: %v", err)
	}
	// Edit the legacy prefix and relink it: the first keyed record no longer follows.
	e.rewrite(func(rs []Record) []Record {
		rs[1].Rows = 99
		relink(rs[:3], 1)
		return rs
	})
	if _, err := l.VerifyChain(ctx); !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "record 4 does not follow") {
		t.Fatalf("after editing the legacy prefix: %v", err)
	}
}
