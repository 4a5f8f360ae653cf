package aggregator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/pipeline/topic"
)

// The release log: exactly one draw of noise is ever published for a window.
//
// ClickHouse has no transactions and no conditional insert, so it cannot say which of two
// releasers came first. A Kafka partition can: its order is total and never changes. Every
// release step writes the release it drew — noised values, ε, δ and what the ledger will
// charge, all in one record — to the release log (kafka.release_topic, one partition) and
// then reads the log back. For each window only the first record counts, under any plan; it
// is the window's fate for every reader: published if the budget allows it at its place in
// the log, refused otherwise. Any later record for the window — a releaser that was paused
// (GC, SIGSTOP, a VM stall) past its group session while another took over, a plan change, a
// crash and a retry — is a draw nobody ever publishes. The ClickHouse releases and ledger
// rows are materialised from the first records, in log order, by whichever instance gets
// there: they are a deterministic function of the log, so two materialisers write the same
// rows (and readers collapse identical duplicates), and the ledger's chain cannot fork.
//
// The log holds published releases and unpublished draws, never tenant-level data; it is read
// only by the aggregator role, like the un-noised partials it is computed from.

// releaseRecord is one drawn release as the log holds it.
type releaseRecord struct {
	Database      string     `json:"database"` // the Shukei database it belongs to
	ReleaseID     string     `json:"release_id"`
	Draw          string     `json:"draw"` // random: tells two draws of one window apart
	Plan          string     `json:"plan"`
	PolicyVersion int        `json:"policy_version"`
	WindowStart   time.Time  `json:"window_start"`
	WindowEnd     time.Time  `json:"window_end"`
	Epsilon       float64    `json:"epsilon"`
	Delta         float64    `json:"delta"`
	L0            int64      `json:"l0"`
	LInf          int64      `json:"linf"`
	At            time.Time  `json:"at"` // when it was drawn, second precision
	Cells         []Released `json:"cells"`
	// Kind is "" for a release and recordSeal for a week's gated atoms (seal.go), which the
	// log decides the same way: the first seal of a week is the only one ever materialised.
	Kind   string     `json:"kind,omitempty"`
	Seal   *gate.Seal `json:"seal,omitempty"`
	offset int64
	logged time.Time // when the broker took it (the message's time)
}

func (r *releaseRecord) window() Window { return Window{Start: r.WindowStart, End: r.WindowEnd} }

// releaseLog reads and appends the release log of one database.
type releaseLog struct {
	brokers []string
	spec    topic.Spec
	db      string
	w       *kafka.Writer

	mu      sync.Mutex
	ensured bool
	next    int64                      // the next offset to read
	first   map[spanKey]*releaseRecord // window → the first record for it
	order   []*releaseRecord           // the first records, in log order
	others  int                        // later records for a window already decided
	draws   map[string]bool            // the draws this process wrote
	seals   map[string]*gate.Seal      // purpose and week → the first seal of it
}

func newReleaseLog(brokers []string, spec topic.Spec, db string) *releaseLog {
	return &releaseLog{
		brokers: brokers, spec: spec, db: db,
		w: &kafka.Writer{
			Addr: kafka.TCP(brokers...), Topic: spec.Name, RequiredAcks: kafka.RequireAll,
			BatchSize: 1, BatchBytes: 16 << 20, MaxAttempts: 3, Compression: kafka.Lz4,
		},
		first: map[spanKey]*releaseRecord{},
		draws: map[string]bool{},
		seals: map[string]*gate.Seal{},
	}
}

// drew reports whether this process wrote the draw.
func (l *releaseLog) drew(draw string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.draws[draw]
}

func (l *releaseLog) close() error { return l.w.Close() }

// ensure creates the log's topic (one partition, its retention) once per process.
func (l *releaseLog) ensure(ctx context.Context) error {
	if l.ensured {
		return nil
	}
	if _, err := topic.Ensure(ctx, l.brokers, []topic.Spec{l.spec}); err != nil {
		return fmt.Errorf("release log %s: %w", l.spec.Name, err)
	}
	l.ensured = true
	return nil
}

// sync reads the log from where it stopped to its current end.
func (l *releaseLog) sync(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.ensure(ctx); err != nil {
		return err
	}
	conn, err := kafka.DialLeader(ctx, "tcp", l.brokers[0], l.spec.Name, 0)
	if err != nil {
		return fmt.Errorf("release log: %w", err)
	}
	first, errF := conn.ReadFirstOffset()
	last, errL := conn.ReadLastOffset()
	conn.Close()
	if err := errors.Join(errF, errL); err != nil {
		return fmt.Errorf("release log offsets: %w", err)
	}
	if l.next < first {
		l.next = first
	}
	if l.next >= last {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: l.brokers, Topic: l.spec.Name, Partition: 0, MinBytes: 1, MaxBytes: 32 << 20, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(l.next); err != nil {
		return err
	}
	for l.next < last {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := r.ReadMessage(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("read the release log at %d: %w", l.next, err)
		}
		l.next = m.Offset + 1
		var rec releaseRecord
		if err := json.Unmarshal(m.Value, &rec); err != nil {
			return fmt.Errorf("release log record at %d does not decode: %w", m.Offset, err)
		}
		if rec.Database != l.db {
			continue
		}
		rec.offset, rec.logged = m.Offset, m.Time
		if rec.Kind == recordSeal {
			if rec.Seal == nil {
				return fmt.Errorf("release log record at %d is a seal without atoms", m.Offset)
			}
			if k := sealKey(rec.Seal.Purpose, rec.Seal.Week); l.seals[k] == nil {
				l.seals[k] = rec.Seal
			} else {
				l.others++
			}
			continue
		}
		k := rec.window().key()
		if l.first[k] != nil {
			l.others++
			continue
		}
		l.first[k] = &rec
		l.order = append(l.order, &rec)
	}
	return nil
}

// decided returns the first record for window w, if the log has one.
func (l *releaseLog) decided(w Window) (*releaseRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.first[w.key()]
	return r, ok
}

// firsts returns the first records in log order.
func (l *releaseLog) firsts() []*releaseRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*releaseRecord(nil), l.order...)
}

// append writes a drawn release to the log and returns once the broker holds it on every
// in-sync replica.
func (l *releaseLog) append(ctx context.Context, rec *releaseRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.draws[rec.Draw] = true
	l.mu.Unlock()
	key := rec.window().String()
	if rec.Seal != nil {
		key = sealKey(rec.Seal.Purpose, rec.Seal.Week)
	}
	return l.w.WriteMessages(ctx, kafka.Message{Key: []byte(key), Value: b})
}

// sealed returns the first seal of purpose's week, if the log has one.
func (l *releaseLog) sealed(purpose string, week time.Time) (*gate.Seal, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.seals[sealKey(purpose, week)]
	return s, ok
}

// firstSeals returns every week's first seal.
func (l *releaseLog) firstSeals() []*gate.Seal {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*gate.Seal, 0, len(l.seals))
	for _, s := range l.seals {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *gate.Seal) int { return a.Week.Compare(b.Week) })
	return out
}
