// Package audit is the query service's audit log (docs/DESIGN.md §5, §6): every request, allowed or
// denied, appends a record — who (principal, kind, contractor reference), for which purpose and
// ticket, which report with a hash of its parameters, the tenant it is about (if one), the
// decision and its reason, the rows returned and the privacy budget charged — holding the hash
// of the previous record. Verify walks the chain; Report lists what one principal read in a
// month (clause 5: supervision of contractors).
//
// The chain is keyed and cannot fork (promise 17). Each record's link is HMAC-SHA256 under
// audit.key_file (WithKey; audit/chain), so nobody without the key can edit, insert or
// delete a record and recompute the later links; VerifyAnchor checks the chain against a head
// anchored outside ClickHouse, which also catches a truncated tail. Appends are ordered by a
// one-partition Kafka topic (WithSequencer, sequencer.go): a writer produces its records, and
// the chain is materialised from the topic in its order, deterministically, so any number of
// writers — query services, retention, 'shukei dlq replay' — leave one chain. Records written
// before the chain was keyed keep their SHA-256 digests and verify only as its prefix.
//
// Printable is the one rule of what free text may be stored for the trails, Shown how every
// listing of them (this log, the principals, the break-glass grants) prints stored text.
package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/audit/chain"
)

// Decisions.
const (
	Allowed = "allowed"
	Denied  = "denied"
	Failed  = "failed" // allowed, but the report could not be produced
)

// ErrBroken means the chain does not verify: a record was edited, inserted, deleted or moved,
// or the chain does not hold an anchored head.
var ErrBroken = errors.New("audit log chain is broken")

// ErrNeedsKey means the chain holds keyed records and this Log has no key.
var ErrNeedsKey = errors.New("the audit log's chain is keyed: set audit.key_file")

// Record is one request.
type Record struct {
	Seq           uint64
	At            time.Time
	Principal     string
	Kind          string
	ContractRef   string
	Purpose       string
	Ticket        string
	Report        string
	ParamsHash    string
	Decision      string
	Reason        string
	Rows          uint64
	BudgetEpsilon float64
	Tenant        string // the tenant the request is about (a support trace, a break-glass step); "" if none
	PrevHash      string
	Hash          string // the link: a keyed MAC ("hmac:…"), or the SHA-256 digest of a legacy record
	LogOffset     int64  // the record's offset in the sequencer topic; -1 if it was not sequenced
}

// fields are what a record's link covers, after the previous record's link. In a legacy
// (unkeyed) digest the tenant is a field only when it is not empty, so records written before
// it existed (all without one) keep their hashes and old chains still verify; a record with a
// tenant has one field more, so its hash differs from any record without.
//
// A keyed link always covers the tenant and the log offset (a fixed number of fields: no field
// can pass for another).
func (r Record) fields(keyed bool) []string {
	fields := []string{strconv.FormatUint(r.Seq, 10), r.At.UTC().Format(time.RFC3339), r.Principal, r.Kind,
		r.ContractRef, r.Purpose, r.Ticket, r.Report, r.ParamsHash, r.Decision, r.Reason,
		strconv.FormatUint(r.Rows, 10), strconv.FormatFloat(r.BudgetEpsilon, 'g', -1, 64)}
	if keyed {
		return append(fields, r.Tenant, strconv.FormatInt(r.LogOffset, 10))
	}
	if r.Tenant != "" {
		fields = append(fields, r.Tenant)
	}
	return fields
}

// link is r's link under key (the legacy digest without one).
func (r Record) link(key []byte) string {
	return chain.Link(key, r.PrevHash, r.fields(key != nil)...)
}

// Log appends to and reads the audit log of one Shukei database. With a sequencer
// (WithSequencer) any number of processes append at once and leave one chain; without one,
// only one process may append. Append is safe for concurrent use. Concurrent appends are
// written together (group commit): one produce and one insert carry every record waiting while
// the previous group was written, so a burst of requests makes a few parts in ClickHouse, not
// one each.
type Log struct {
	conn   driver.Conn
	table  string
	now    func() time.Time
	db     string
	key    []byte     // the chain key; nil: records are chained unkeyed (legacy)
	seqr   *sequencer // orders appends through Kafka; nil: the single-writer path below
	refuse error      // set by Refusing: every Append fails with it

	qmu   sync.Mutex // guards queue
	queue []*pending

	mu     sync.Mutex // held by the one goroutine writing a group
	seq    uint64
	last   string
	groups int // inserts written, for the group-commit test
}

type pending struct {
	r    Record
	err  error
	done bool
}

// New returns the audit log of database db.
func New(conn driver.Conn, db string, opts ...Option) *Log {
	l := &Log{conn: conn, table: db + "_audit.audit_log", now: func() time.Time { return time.Now().UTC().Truncate(time.Second) }}
	l.db = db // the sequencer's records name their database
	for _, o := range opts {
		o(l)
	}
	return l
}

// An Option configures a Log.
type Option func(*Log)

// WithKey keys the chain (audit.key_file).
func WithKey(key []byte) Option { return func(l *Log) { l.key = key } }

const columns = "seq, at, principal_id, principal_kind, contract_ref, purpose, ticket, report, params_hash, decision, reason, rows, budget_epsilon, tenant_id, prev_hash, hash, log_offset"

// Append writes r (Seq, At, PrevHash and Hash are set here) and returns it once it is stored.
// A request whose record cannot be written must not be answered: the caller refuses it.
func (l *Log) Append(ctx context.Context, r Record) (Record, error) {
	if l.refuse != nil {
		return r, l.refuse
	}
	p := &pending{r: r}
	l.qmu.Lock()
	l.queue = append(l.queue, p)
	l.qmu.Unlock()

	l.mu.Lock()
	defer l.mu.Unlock()
	if p.done { // written by the group of another caller while this one waited
		return p.r, p.err
	}
	l.qmu.Lock()
	group := l.queue
	l.queue = nil
	l.qmu.Unlock()
	write := l.write
	if l.seqr != nil {
		write = l.writeSequenced
	}
	err := write(ctx, group)
	for _, q := range group {
		q.err, q.done = err, true
	}
	return p.r, p.err
}

// write stores a group of records as one insert, without a sequencer (tests, a single
// writer); l.mu is held. The tail is read again before every group. Two processes writing in
// the same instant would fork the chain; the check after the insert finds it and Verify names
// it. Every role that appends uses the sequencer instead (writeSequenced); this path refuses a
// chain the sequencer has written to.
func (l *Log) write(ctx context.Context, group []*pending) error {
	var sequenced uint64
	if err := l.conn.QueryRow(ctx, "SELECT count(), argMax(hash, seq), countIf(log_offset >= 0) FROM "+l.table).Scan(&l.seq, &l.last, &sequenced); err != nil {
		return fmt.Errorf("read the audit log's tail: %w", err)
	}
	if sequenced > 0 {
		return fmt.Errorf("the audit log is sequenced through Kafka (audit.topic): this writer has no sequencer")
	}
	if l.key == nil && chain.Keyed(l.last) {
		return ErrNeedsKey
	}
	b, err := l.conn.PrepareBatch(ctx, "INSERT INTO "+l.table+" ("+columns+")")
	if err != nil {
		return fmt.Errorf("append to the audit log: %w", err)
	}
	seq, last := l.seq, l.last
	for _, q := range group {
		r := &q.r
		seq++
		r.Seq, r.At, r.PrevHash, r.LogOffset = seq, l.now(), last, -1
		r.Hash = r.link(l.key)
		last = r.Hash
		if err := b.Append(r.Seq, r.At, r.Principal, r.Kind, r.ContractRef, r.Purpose, r.Ticket, r.Report, r.ParamsHash,
			r.Decision, r.Reason, r.Rows, r.BudgetEpsilon, r.Tenant, r.PrevHash, r.Hash, r.LogOffset); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append to the audit log: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("append to the audit log: %w", err)
	}
	var n uint64
	if err := l.conn.QueryRow(ctx, "SELECT count() FROM "+l.table+" WHERE seq > ?", l.seq).Scan(&n); err != nil {
		return fmt.Errorf("check the audit log's tail: %w", err)
	}
	if n != uint64(len(group)) {
		return fmt.Errorf("another process appended to the audit log at the same moment (%d records after #%d, %d of them ours): the chain has forked there; run 'shukei audit verify'", n, l.seq, len(group))
	}
	l.seq, l.last = seq, last
	l.groups++
	return nil
}

// Verify walks the whole chain and reports the first broken link, and the number of records.
func (l *Log) Verify(ctx context.Context) (int, error) {
	st, err := l.VerifyChain(ctx)
	return st.Records, err
}

// Report returns a principal's records in a month ("YYYY-MM").
func (l *Log) Report(ctx context.Context, principal, month string) ([]Record, error) {
	m, err := time.Parse("2006-01", month)
	if err != nil {
		return nil, fmt.Errorf("month %q is not YYYY-MM", month)
	}
	return l.read(ctx, "WHERE principal_id = ? AND at >= ? AND at < ?", []any{principal, m, m.AddDate(0, 1, 0)})
}

func (l *Log) read(ctx context.Context, where string, args []any) ([]Record, error) {
	// Two writers materialising the same records write identical rows: read as one. Only
	// identical rows (DISTINCT over every column): a forged twin that copies a record's
	// sequence and link but not its fields is read, and Verify names the fork.
	rows, err := l.conn.Query(ctx, "SELECT DISTINCT "+columns+" FROM "+l.table+" "+where+" ORDER BY seq, hash", args...)
	if err != nil {
		return nil, fmt.Errorf("read the audit log: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		if err := rows.Scan(&r.Seq, &r.At, &r.Principal, &r.Kind, &r.ContractRef, &r.Purpose, &r.Ticket, &r.Report, &r.ParamsHash,
			&r.Decision, &r.Reason, &r.Rows, &r.BudgetEpsilon, &r.Tenant, &r.PrevHash, &r.Hash, &r.LogOffset); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
