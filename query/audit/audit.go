// Package audit is the query service's audit log (DESIGN.md §5): every request, allowed or
// denied, appends a record — who (principal, kind, contractor reference), for which purpose and
// ticket, which report with a hash of its parameters, the tenant it is about (if one), the
// decision and its reason, the rows returned and the privacy budget charged — holding the hash
// of the previous record. Verify walks the chain; Report lists what one principal read in a
// month (clause 5: supervision of contractors).
package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/internal/chain"
)

// Decisions.
const (
	Allowed = "allowed"
	Denied  = "denied"
	Failed  = "failed" // allowed, but the report could not be produced
)

// ErrBroken means the chain does not verify: a record was edited, inserted or deleted.
var ErrBroken = errors.New("audit log hash chain is broken")

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
	Hash          string
}

// digest is the record's hash. The tenant is a field only when it is not empty, so records
// written before it existed (all without one) keep their hashes and old chains still verify;
// a record with a tenant has one field more, so its hash differs from any record without.
func (r Record) digest() string {
	fields := []string{strconv.FormatUint(r.Seq, 10), r.At.UTC().Format(time.RFC3339), r.Principal, r.Kind,
		r.ContractRef, r.Purpose, r.Ticket, r.Report, r.ParamsHash, r.Decision, r.Reason,
		strconv.FormatUint(r.Rows, 10), strconv.FormatFloat(r.BudgetEpsilon, 'g', -1, 64)}
	if r.Tenant != "" {
		fields = append(fields, r.Tenant)
	}
	return chain.Digest(r.PrevHash, fields...)
}

// Log appends to and reads the audit log of one Shukei database. One process appends (the
// query service); Append is safe for concurrent use within it. Concurrent appends are written
// together (group commit): one insert carries every record waiting while the previous insert
// ran, so a burst of requests makes a few parts in ClickHouse, not one each.
type Log struct {
	conn  driver.Conn
	table string
	now   func() time.Time

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
func New(conn driver.Conn, db string) *Log {
	return &Log{conn: conn, table: db + ".audit_log", now: func() time.Time { return time.Now().UTC().Truncate(time.Second) }}
}

const columns = "seq, at, principal_id, principal_kind, contract_ref, purpose, ticket, report, params_hash, decision, reason, rows, budget_epsilon, tenant_id, prev_hash, hash"

// Append writes r (Seq, At, PrevHash and Hash are set here) and returns it once it is stored.
// A request whose record cannot be written must not be answered: the caller refuses it.
func (l *Log) Append(ctx context.Context, r Record) (Record, error) {
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
	err := l.write(ctx, group)
	for _, q := range group {
		q.err, q.done = err, true
	}
	return p.r, p.err
}

// write stores a group of records as one insert; l.mu is held. The tail is read again before
// every group: other processes (retention receipts) append too. Two processes writing in the
// same instant would fork the chain; the check after the insert finds it and Verify names it.
func (l *Log) write(ctx context.Context, group []*pending) error {
	if err := l.conn.QueryRow(ctx, "SELECT count(), argMax(hash, seq) FROM "+l.table).Scan(&l.seq, &l.last); err != nil {
		return fmt.Errorf("read the audit log's tail: %w", err)
	}
	b, err := l.conn.PrepareBatch(ctx, "INSERT INTO "+l.table+" ("+columns+")")
	if err != nil {
		return fmt.Errorf("append to the audit log: %w", err)
	}
	seq, last := l.seq, l.last
	for _, q := range group {
		r := &q.r
		seq++
		r.Seq, r.At, r.PrevHash = seq, l.now(), last
		r.Hash = r.digest()
		last = r.Hash
		if err := b.Append(r.Seq, r.At, r.Principal, r.Kind, r.ContractRef, r.Purpose, r.Ticket, r.Report, r.ParamsHash,
			r.Decision, r.Reason, r.Rows, r.BudgetEpsilon, r.Tenant, r.PrevHash, r.Hash); err != nil {
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
	rs, err := l.read(ctx, "", nil)
	if err != nil {
		return 0, err
	}
	prev := ""
	for i, r := range rs {
		switch {
		case r.Seq != uint64(i)+1:
			return i, fmt.Errorf("%w: record %d has sequence %d (a record is missing or repeated)", ErrBroken, i+1, r.Seq)
		case r.PrevHash != prev:
			return i, fmt.Errorf("%w: record %d does not follow record %d (one was deleted or inserted)", ErrBroken, r.Seq, r.Seq-1)
		case r.digest() != r.Hash:
			return i, fmt.Errorf("%w: record %d was edited (its hash does not match its fields)", ErrBroken, r.Seq)
		}
		prev = r.Hash
	}
	return len(rs), nil
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
	rows, err := l.conn.Query(ctx, "SELECT "+columns+" FROM "+l.table+" "+where+" ORDER BY seq", args...)
	if err != nil {
		return nil, fmt.Errorf("read the audit log: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		if err := rows.Scan(&r.Seq, &r.At, &r.Principal, &r.Kind, &r.ContractRef, &r.Purpose, &r.Ticket, &r.Report, &r.ParamsHash,
			&r.Decision, &r.Reason, &r.Rows, &r.BudgetEpsilon, &r.Tenant, &r.PrevHash, &r.Hash); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
