package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/pipeline/topic"
)

// The sequencer: any number of writers, one chain.
//
// ClickHouse 18.16 has no transactions and no compare-and-set, so it cannot tell two writers
// which of them appends record n+1; and a lease kept in ClickHouse is not safe either (a writer
// paused past its lease — GC, SIGSTOP, a VM stall — resumes believing it holds it). A Kafka
// partition can: its order is total and never changes. A writer produces the records of its
// group to the sequencer topic (audit.topic, one partition, acknowledged by every in-sync
// replica); the offsets Kafka gives them fix their place. Then it materialises the chain into
// ClickHouse up to its own last offset before it answers: from the stored record with the
// greatest offset (the tail), it reads the topic on, and for each record of its database gives
// the next sequence, chains it after the one before and computes its MAC. The rows are a
// deterministic function of the topic and the tail, so two writers materialising the same
// offsets write identical rows (read as one: DISTINCT over every column), never a fork; a writer
// paused anywhere — before producing, between producing and materialising, in the middle of
// an insert — resumes into rows it computes exactly as every other writer did, and finds its
// records' sequences in whatever another writer stored. The records of a group are one
// Produce (group commit), so a burst of requests costs a few round trips, not one each.
//
// A message that does not decode is skipped by every materialiser alike. A record produced by a
// writer that then failed (its request refused) is materialised by the next writer all the
// same: the log then holds a request that was not answered, never a gap. All writers must hold
// the same key (or none, before the chain is keyed).

// WithSequencer orders the Log's appends through the one-partition topic spec (audit.topic,
// topic.AuditSpec) on brokers.
func WithSequencer(brokers []string, spec topic.Spec) Option {
	return func(l *Log) {
		l.seqr = &sequencer{brokers: brokers, spec: spec,
			client: &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}}
	}
}

// Refusing makes every Append fail with err: the Log of a process whose key or sequencer could
// not be set up (a key file others may read, say) must not append unkeyed instead.
func Refusing(err error) Option { return func(l *Log) { l.refuse = err } }

type sequencer struct {
	brokers []string
	spec    topic.Spec
	client  *kafka.Client
	ensured bool // guarded by Log.mu
}

// message is a record as the sequencer topic holds it: everything but its place in the chain.
type message struct {
	Database      string    `json:"database"` // the Shukei database whose audit log it belongs to
	At            time.Time `json:"at"`
	Principal     string    `json:"principal"`
	Kind          string    `json:"kind"`
	ContractRef   string    `json:"contract_ref"`
	Purpose       string    `json:"purpose"`
	Ticket        string    `json:"ticket"`
	Report        string    `json:"report"`
	ParamsHash    string    `json:"params_hash"`
	Decision      string    `json:"decision"`
	Reason        string    `json:"reason"`
	Rows          uint64    `json:"rows"`
	BudgetEpsilon float64   `json:"budget_epsilon"`
	Tenant        string    `json:"tenant"`
}

func (m message) record() Record {
	return Record{At: m.At.UTC().Truncate(time.Second), Principal: m.Principal, Kind: m.Kind, ContractRef: m.ContractRef, Purpose: m.Purpose,
		Ticket: m.Ticket, Report: m.Report, ParamsHash: m.ParamsHash, Decision: m.Decision, Reason: m.Reason, Rows: m.Rows,
		BudgetEpsilon: m.BudgetEpsilon, Tenant: m.Tenant}
}

// writeSequenced produces a group's records to the sequencer topic, materialises the chain up
// to the last of them and fills in each record's sequence and link; l.mu is held.
func (l *Log) writeSequenced(ctx context.Context, group []*pending) error {
	first, err := l.produce(ctx, group)
	if err != nil {
		return err
	}
	last := first + int64(len(group)) - 1
	// The records are in the log now, and will be in the chain whatever happens here: finish
	// even past the caller's deadline (a writer resumed after SIGSTOP), so that an answer can
	// name its record rather than leave it unanswered.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	stored, err := l.materialise(ctx, last)
	if err != nil {
		return err
	}
	mine := true
	for o := first; o <= last; o++ {
		_, ok := stored[o]
		mine = mine && ok
	}
	if !mine {
		// Another writer materialised (some of) them: read them back.
		rs, err := l.read(ctx, "WHERE log_offset >= ? AND log_offset <= ?", []any{first, last})
		if err != nil {
			return err
		}
		for _, r := range rs {
			stored[r.LogOffset] = r
		}
	}
	for i, q := range group {
		r, ok := stored[first+int64(i)]
		if !ok {
			return fmt.Errorf("append to the audit log: the record at sequencer offset %d was not stored", first+int64(i))
		}
		q.r = r
	}
	l.groups++
	return nil
}

// produce writes a group's records to the sequencer topic, acknowledged by every in-sync
// replica, and returns the offset of the first; the others follow it.
func (l *Log) produce(ctx context.Context, group []*pending) (int64, error) {
	s := l.seqr
	if !s.ensured {
		if _, err := topic.Ensure(ctx, s.brokers, []topic.Spec{s.spec}); err != nil {
			return 0, fmt.Errorf("audit log sequencer %s: %w", s.spec.Name, err)
		}
		s.ensured = true
	}
	at := l.now()
	recs := make([]kafka.Record, len(group))
	for i, q := range group {
		r := q.r
		b, err := json.Marshal(message{Database: l.db, At: at, Principal: r.Principal, Kind: r.Kind, ContractRef: r.ContractRef, Purpose: r.Purpose,
			Ticket: r.Ticket, Report: r.Report, ParamsHash: r.ParamsHash, Decision: r.Decision, Reason: r.Reason, Rows: r.Rows,
			BudgetEpsilon: r.BudgetEpsilon, Tenant: r.Tenant})
		if err != nil {
			return 0, fmt.Errorf("append to the audit log: %w", err)
		}
		recs[i] = kafka.Record{Value: kafka.NewBytes(b)}
	}
	resp, err := s.client.Produce(ctx, &kafka.ProduceRequest{Topic: s.spec.Name, Partition: 0, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(recs...)})
	if err == nil {
		err = resp.Error
	}
	if err == nil {
		for _, rerr := range resp.RecordErrors {
			err = rerr
		}
	}
	if err != nil {
		return 0, fmt.Errorf("append to the audit log: sequencer %s: %w", s.spec.Name, err)
	}
	return resp.BaseOffset, nil
}

// errTail means the stored tail does not verify: materialising after it would extend a chain
// that was tampered with.
var errTail = errors.New("the audit log's last record does not verify; run 'shukei audit verify'")

// materialise stores every record of l's database up to offset upTo that the audit log does
// not hold yet, and returns the records it computed by offset.
func (l *Log) materialise(ctx context.Context, upTo int64) (map[int64]Record, error) {
	batch, out, err := l.compute(ctx, upTo)
	if err != nil || len(batch) == 0 {
		return out, err
	}
	return out, l.store(ctx, batch)
}

// compute reads the tail and the sequencer after it up to offset upTo, and returns the
// records to store, in order, and by offset.
func (l *Log) compute(ctx context.Context, upTo int64) ([]Record, map[int64]Record, error) {
	out := map[int64]Record{}
	tail := Record{LogOffset: -1}
	rs, err := l.readTail(ctx)
	if err != nil {
		return nil, nil, err
	}
	if rs != nil {
		tail = *rs
	}
	if tail.LogOffset >= upTo {
		return nil, out, nil
	}
	if chain.Keyed(tail.Hash) {
		if l.key == nil {
			return nil, nil, ErrNeedsKey
		}
		if ok, _ := chain.Check(l.key, true, tail.Hash, tail.PrevHash, tail.fields(true)...); !ok {
			return nil, nil, errTail
		}
	}
	next := tail.LogOffset + 1
	if tail.LogOffset < 0 {
		next = kafka.FirstOffset
	}
	seq, prev := tail.Seq, tail.Hash
	var batch []Record
	for empty := 0; next <= upTo; {
		resp, err := l.seqr.client.Fetch(ctx, &kafka.FetchRequest{Topic: l.seqr.spec.Name, Partition: 0, Offset: next,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond})
		if err == nil {
			err = resp.Error
		}
		if errors.Is(err, kafka.OffsetOutOfRange) && next != kafka.FirstOffset {
			// The records after the tail aged out of the topic (audit.topic's retention): none of
			// them was this database's unstored record, or a writer of it would have stored it
			// since; go on from the oldest one left, as every materialiser does.
			next = kafka.FirstOffset
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read the audit log's sequencer at offset %d: %w", next, err)
		}
		progressed := false
		for {
			rec, err := resp.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, nil, fmt.Errorf("read the audit log's sequencer at offset %d: %w", next, err)
			}
			var value []byte
			if rec.Value != nil {
				if value, err = io.ReadAll(rec.Value); err != nil {
					return nil, nil, fmt.Errorf("read the audit log's sequencer at offset %d: %w", rec.Offset, err)
				}
			}
			if next != kafka.FirstOffset && rec.Offset < next || rec.Offset > upTo {
				continue // a batch starts before the offset asked for; or past ours
			}
			next, progressed = rec.Offset+1, true
			var m message
			if json.Unmarshal(value, &m) != nil || m.Database != l.db {
				continue // another database's record, or one no writer wrote: every materialiser skips it
			}
			seq++
			r := m.record()
			r.Seq, r.PrevHash, r.LogOffset = seq, prev, rec.Offset
			r.Hash = r.link(l.key)
			prev = r.Hash
			batch = append(batch, r)
			out[r.LogOffset] = r
		}
		if !progressed {
			if empty++; empty > 100 {
				return nil, nil, fmt.Errorf("read the audit log's sequencer: offset %d not readable up to %d", next, upTo)
			}
		}
	}
	return batch, out, nil
}

// store inserts computed records as one batch.
func (l *Log) store(ctx context.Context, batch []Record) error {
	b, err := l.conn.PrepareBatch(ctx, "INSERT INTO "+l.table+" ("+columns+")")
	if err != nil {
		return fmt.Errorf("append to the audit log: %w", err)
	}
	for _, r := range batch {
		if err := b.Append(r.Seq, r.At, r.Principal, r.Kind, r.ContractRef, r.Purpose, r.Ticket, r.Report, r.ParamsHash,
			r.Decision, r.Reason, r.Rows, r.BudgetEpsilon, r.Tenant, r.PrevHash, r.Hash, r.LogOffset); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append to the audit log: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("append to the audit log: %w", err)
	}
	return nil
}

// readTail returns the stored record with the greatest log offset (the greatest sequence among
// legacy records when none was sequenced), nil for an empty log: one query, so its sequence,
// link and offset belong together.
func (l *Log) readTail(ctx context.Context) (*Record, error) {
	rows, err := l.conn.Query(ctx, "SELECT "+columns+" FROM "+l.table+" ORDER BY log_offset DESC, seq DESC, hash LIMIT 1")
	if err != nil {
		return nil, fmt.Errorf("read the audit log's tail: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	var r Record
	if err := rows.Scan(&r.Seq, &r.At, &r.Principal, &r.Kind, &r.ContractRef, &r.Purpose, &r.Ticket, &r.Report, &r.ParamsHash,
		&r.Decision, &r.Reason, &r.Rows, &r.BudgetEpsilon, &r.Tenant, &r.PrevHash, &r.Hash, &r.LogOffset); err != nil {
		return nil, err
	}
	return &r, rows.Err()
}
