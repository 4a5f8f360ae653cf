// Package processor is the stage that loads usage events into ClickHouse exactly once: a
// Kafka consumer group on the raw topic, the shared event decision for each message, batched
// inserts into the event store (which fills the purpose marts) and the rejections table, the
// DLQ topic for replay, and offsets committed only after ClickHouse holds the batch.
//
// Exactly once: ClickHouse, not Kafka, is the record of what was done. Every stored row and
// every rejection carries its Kafka partition and offset; when a partition is assigned, the
// processor reads the store's high-water mark and skips what is already there, so neither a
// crash between insert and commit nor a rebalance stores a message twice. Collector retries
// (the same event_id at another offset) are dropped as duplicates within a horizon.
package processor

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/pipeline/group"
	"github.com/shukei/shukei/registry"
)

// Processor consumes the raw topic into ClickHouse.
type Processor struct {
	cfg     config.Processor
	kcfg    config.Kafka
	limits  event.Limits
	conn    driver.Conn
	db      string
	cache   *registry.Cache
	keyring *pseudonym.Keyring
	policy  decision.Tagger
	hashKey []byte
	dlq     *kafka.Writer
	log     *slog.Logger
	m       *metrics
	now     func() time.Time

	dedupe *dedupe
	// rawCopy makes the processor a baseline for benchmarks: the same consumer, batching and
	// insert path, writing the raw messages to <db>.raw_copy without any decision.
	rawCopy bool
}

// Deps are the processor's collaborators; main owns them.
type Deps struct {
	Conn     driver.Conn
	Database string
	Cache    *registry.Cache
	Keyring  *pseudonym.Keyring
	Policy   decision.Tagger
	HashKey  []byte
	Registry prometheus.Registerer
	Log      *slog.Logger
	// RawCopy makes the processor the benchmarks' baseline: the same consumer, batching and
	// ClickHouse insert, no decision; rows go to <Database>.raw_copy (bench only).
	RawCopy bool
}

// New builds a processor.
func New(cfg config.Config, d Deps) *Processor {
	return &Processor{
		cfg:     cfg.Processor,
		kcfg:    cfg.Kafka,
		limits:  cfg.EventLimits(),
		conn:    d.Conn,
		db:      d.Database,
		cache:   d.Cache,
		keyring: d.Keyring,
		policy:  d.Policy,
		hashKey: d.HashKey,
		dlq: &kafka.Writer{
			Addr:         kafka.TCP(cfg.Kafka.Brokers...),
			Topic:        cfg.Kafka.DLQTopic,
			Balancer:     &kafka.Murmur2Balancer{},
			RequiredAcks: kafka.RequireAll,
			BatchSize:    cfg.Processor.BatchSize,
			// One produce request per batch must stay under the broker's message.max.bytes
			// (1 MiB by default): a batch of refusals, each with its content-free form, is
			// larger than that, and the broker would refuse it on every retry.
			BatchBytes:   900_000,
			BatchTimeout: 5 * time.Millisecond,
			MaxAttempts:  3,
			Compression:  kafka.Lz4,
		},
		log:     d.Log,
		m:       newMetrics(d.Registry),
		now:     time.Now,
		dedupe:  newDedupe(cfg.Processor.DedupeHorizon, cfg.Processor.DedupeMax),
		rawCopy: d.RawCopy,
	}
}

// Run joins the consumer group and processes until ctx ends. Each generation of the group
// (one assignment of partitions) is processed by runGeneration; a rebalance ends it and the
// next one starts from the store's high-water marks.
func (p *Processor) Run(ctx context.Context) error {
	defer p.dlq.Close()
	return group.Run(ctx, group.Config{ID: p.cfg.GroupID, Brokers: p.kcfg.Brokers, Topic: p.kcfg.RawTopic, MaxBackoff: p.cfg.MaxBackoff},
		group.StandardHooks("processor", p.log, p.m.kafkaErrors, p.m.assigned), p.runGeneration)
}

type fetched struct {
	msg kafka.Message
	err error
}

func (p *Processor) runGeneration(ctx context.Context, gen *kafka.Generation, parts []int) error {
	if len(parts) == 0 {
		<-ctx.Done()
		return nil
	}
	state, err := p.loadWithRetry(ctx, parts)
	if err != nil {
		return err
	}

	msgs := make(chan fetched, p.cfg.BatchSize)
	readers := map[int]*kafka.Reader{}
	var wg sync.WaitGroup
	readCtx, stopReading := context.WithCancel(ctx)
	defer func() { stopReading(); wg.Wait() }()
	for _, part := range parts {
		// The store, not the group's committed offset, decides where to resume: the commit may
		// lag the store (a crash after the insert) or lead it (a store restored from an older
		// backup, or a new database), and either way only the store knows what it holds.
		// Committed offsets are kept for lag tooling.
		start := state[part].lo + 1
		if start == 0 {
			start = kafka.FirstOffset
		}
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers:   p.kcfg.Brokers,
			Topic:     p.kcfg.RawTopic,
			Partition: part,
			MinBytes:  1,
			MaxBytes:  16 << 20,
			MaxWait:   250 * time.Millisecond,
		})
		if err := r.SetOffset(start); err != nil {
			_ = r.Close()
			return err
		}
		readers[part] = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			for {
				m, err := r.ReadMessage(readCtx) // a partition reader without a group commits nothing
				if readCtx.Err() != nil {
					return
				}
				select {
				case msgs <- fetched{m, err}:
				case <-readCtx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}

	// Two stages overlap: while one batch is written, the next is decided. The hand-off holds
	// one batch, so a slow ClickHouse stops reading (backpressure, not buffering).
	if p.rawCopy {
		return p.copyLoop(ctx, gen, msgs, state)
	}
	decidedCh := make(chan *decided, 1)
	writeErr := make(chan error, 1)
	wctx, stopWriting := context.WithCancel(ctx)
	defer stopWriting()
	go func() {
		defer close(writeErr)
		for d := range decidedCh {
			if err := p.write(wctx, d); err != nil {
				writeErr <- err // abandoned without commit: the next generation resumes from the store
				stopWriting()
				return
			}
			p.dedupe.confirm(d.ids, d.now)
			if err := gen.CommitOffsets(map[string]map[int]int64{p.kcfg.RawTopic: d.next}); err != nil {
				// Not fatal for correctness: the store already holds the batch.
				p.m.kafkaErrors.Inc()
				writeErr <- fmt.Errorf("commit offsets: %w", err)
				stopWriting()
				return
			}
			for part, off := range d.next {
				p.m.committed.WithLabelValues(strconv.Itoa(part)).Set(float64(off))
			}
			for part, r := range readers {
				p.m.lag.WithLabelValues(strconv.Itoa(part)).Set(float64(r.Lag()))
			}
		}
	}()
	finish := func(err error) error {
		close(decidedCh)
		if werr := <-writeErr; werr != nil && err == nil {
			err = werr
		}
		// Ids of batches that were decided but not written must not count as stored.
		p.dedupe.dropPending()
		return err
	}
	for {
		batch, err := p.collect(wctx, msgs)
		if err != nil || wctx.Err() != nil {
			return finish(err)
		}
		if len(batch) == 0 {
			continue
		}
		d := p.decide(batch, state)
		select {
		case decidedCh <- d:
		case <-wctx.Done():
			return finish(nil)
		}
	}
}

// collect waits for the first message, then gathers until the batch is full or the batch
// timeout passes.
func (p *Processor) collect(ctx context.Context, msgs <-chan fetched) ([]kafka.Message, error) {
	batch := make([]kafka.Message, 0, p.cfg.BatchSize)
	add := func(f fetched) error {
		if f.err != nil {
			p.m.kafkaErrors.Inc()
			return fmt.Errorf("read partition: %w", f.err)
		}
		batch = append(batch, f.msg)
		return nil
	}
	select {
	case f := <-msgs:
		if err := add(f); err != nil {
			return nil, err
		}
	case <-ctx.Done():
		return nil, nil
	}
	timer := time.NewTimer(p.cfg.BatchTimeout)
	defer timer.Stop()
	for len(batch) < p.cfg.BatchSize {
		select {
		case f := <-msgs:
			if err := add(f); err != nil {
				return nil, err
			}
		case <-timer.C:
			return batch, nil
		case <-ctx.Done():
			return nil, nil
		}
	}
	return batch, nil
}

// decided is a batch after the decision: what to write and where the group resumes.
type decided struct {
	rows  []row
	rejs  []rejected // with one checkpoint per partition
	dlq   []kafka.Message
	ids   []eventID     // event ids of rows, for the dedupe once written
	next  map[int]int64 // offset to commit per partition
	now   time.Time
	size  int
	start time.Time
}

// outcome is one message's decision.
type outcome struct {
	t    decision.Tagged
	rej  *decision.Rejection
	skip bool
}

// decide runs the decision for every message of the batch, in parallel (it is pure), then
// classifies in order: skipped (already stored), duplicate, rejected or stored.
func (p *Processor) decide(batch []kafka.Message, state map[int]*partitionState) *decided {
	start := time.Now()
	dctx := &decision.Context{
		Now:     p.now(),
		Limits:  p.limits,
		Tenants: p.cache.Snapshot(),
		Keyring: p.keyring,
		Policy:  p.policy,
		HashKey: p.hashKey,
	}
	out := make([]outcome, len(batch))
	workers := min(runtime.GOMAXPROCS(0), 1+len(batch)/1000)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(batch); i += workers {
				m := batch[i]
				if st := state[m.Partition]; st == nil || st.stored(m.Offset) {
					out[i].skip = true
					continue
				}
				out[i].t, out[i].rej = decision.DecideMessage(m.Key, m.Value, dctx)
			}
		}()
	}
	wg.Wait()

	d := &decided{next: map[int]int64{}, now: dctx.Now, size: len(batch), start: start, rows: make([]row, 0, len(batch))}
	inBatch := make(map[eventID]struct{}, len(batch))
	rejectedBy := map[event.Reason]int{} // counted per batch: a labelled counter lookup per event costs
	fresh := make([]eventID, 0, len(batch))
	skipped := 0
	for i, m := range batch {
		d.next[m.Partition] = max(d.next[m.Partition], m.Offset+1)
		o := &out[i]
		if o.skip {
			skipped++
			continue
		}
		if o.rej == nil {
			id, ok := parseEventID(o.t.Event.EventID)
			_, again := inBatch[id]
			if !ok || again || p.dedupe.has(id, dctx.Now) {
				// !ok: an accepted event's id is always a UUID; were it not, storing it
				// unchecked could store a retry twice.
				o.rej = decision.Duplicate(o.t, m.Value, dctx)
			} else {
				inBatch[id] = struct{}{}
				fresh = append(fresh, id)
			}
		}
		if o.rej != nil {
			d.rejs = append(d.rejs, rejected{r: o.rej, partition: m.Partition, offset: m.Offset})
			d.dlq = append(d.dlq, dlqMessage(m, o.rej))
			rejectedBy[o.rej.Reason]++
			continue
		}
		d.rows = append(d.rows, row{t: &out[i].t, partition: m.Partition, offset: m.Offset})
	}
	p.m.events.WithLabelValues("stored", "").Add(float64(len(d.rows)))
	p.m.skipped.Add(float64(skipped))
	for reason, n := range rejectedBy {
		p.m.events.WithLabelValues("rejected", string(reason)).Add(float64(n))
	}
	// A later batch, decided while this one is written, must see these ids as taken.
	p.dedupe.addPending(fresh)
	d.ids = fresh
	for part, next := range d.next {
		d.rejs = append(d.rejs, rejected{partition: part, offset: next - 1}) // checkpoint
	}
	p.m.stage.WithLabelValues("decide").Observe(time.Since(start).Seconds())
	return d
}

// write stores a decided batch: events, then the DLQ topic, then rejections with the
// checkpoints. Each write is retried with backoff until it succeeds or ctx ends; the rows are
// fixed at decision time, so a retry writes exactly the same.
func (p *Processor) write(ctx context.Context, d *decided) error {
	mark := time.Now()
	lap := func(stage string) {
		p.m.stage.WithLabelValues(stage).Observe(time.Since(mark).Seconds())
		mark = time.Now()
	}
	ingested := d.now.UTC().Truncate(time.Second)
	if len(d.rows) > 0 {
		if err := p.retry(ctx, "insert events", func() error { return insertEvents(ctx, p.conn, p.db, d.rows, ingested) }); err != nil {
			return err
		}
		lap("insert_events")
	}
	// The DLQ goes before the rejections insert: that insert carries the checkpoint, and
	// once it is in, a restart skips the batch, so a DLQ record not yet written would never
	// be. A crash in between re-sends some DLQ records; their key (source partition and
	// offset) tells a replay tool they are the same.
	if len(d.dlq) > 0 {
		if err := p.retry(ctx, "write DLQ", func() error { return p.dlq.WriteMessages(ctx, d.dlq...) }); err != nil {
			return err
		}
		for _, r := range d.rejs {
			if r.r != nil { // checkpoint rows carry no rejection
				p.m.dlq.WithLabelValues(string(r.r.Reason)).Inc()
			}
		}
		lap("write_dlq")
	}
	if err := p.retry(ctx, "insert rejections", func() error { return insertRejections(ctx, p.conn, p.db, d.rejs, ingested) }); err != nil {
		return err
	}
	lap("insert_rejections")
	p.m.batchSize.Observe(float64(d.size))
	p.m.batchSeconds.Observe(time.Since(d.start).Seconds())
	return nil
}

// retry runs fn until it succeeds or ctx ends, backing off exponentially: backpressure, not
// loss. While it retries, nothing is read or committed.
func (p *Processor) retry(ctx context.Context, what string, fn func() error) error {
	err := group.Retry(ctx, p.cfg.MaxBackoff, fn, func(err error) {
		p.m.retrying.Set(1)
		p.m.writeErrors.WithLabelValues(what).Inc()
		p.log.Warn("write failed; backing off", "what", what, "err", group.ErrText(err))
	})
	if err == nil {
		p.m.retrying.Set(0)
	}
	return err
}

func (p *Processor) loadWithRetry(ctx context.Context, parts []int) (map[int]*partitionState, error) {
	var state map[int]*partitionState
	err := p.retry(ctx, "read high-water marks", func() error {
		var err error
		state, err = loadState(ctx, p.conn, p.db, parts)
		if err != nil {
			return err
		}
		if p.cfg.DedupeHorizon > 0 {
			ids, err := recentEventIDs(ctx, p.conn, p.db, parts, p.now().Add(-p.cfg.DedupeHorizon), p.cfg.DedupeMax)
			if err != nil {
				return err
			}
			parsed := make([]eventID, 0, len(ids))
			for _, s := range ids {
				if id, ok := parseEventID(s); ok {
					parsed = append(parsed, id)
				}
			}
			p.dedupe.warm(parsed, p.now())
		}
		return nil
	})
	return state, err
}

// dlqMessage is what the DLQ topic gets: the reason in headers, and the message's content-free
// form when it has one (decision/keep.go); the header kept says which. The key is the source position, so a replay tool can tell a
// re-sent DLQ record (after a crash) from a new one.
func dlqMessage(m kafka.Message, r *decision.Rejection) kafka.Message {
	kept := "metadata"
	if r.Payload != nil {
		kept = "payload"
	}
	h := []kafka.Header{
		{Key: "reason", Value: []byte(r.Reason)},
		{Key: "class", Value: []byte(r.Class.String())},
		{Key: "field", Value: []byte(r.Field)},
		{Key: "tenant_id", Value: []byte(r.Tenant)},
		{Key: "schema", Value: []byte(r.Schema)},
		{Key: "event_id", Value: []byte(r.EventID)},
		{Key: "payload_hmac", Value: []byte(r.Hash)},
		{Key: "kept", Value: []byte(kept)},
	}
	return kafka.Message{
		Key:     []byte(fmt.Sprintf("%s/%d/%d", m.Topic, m.Partition, m.Offset)),
		Value:   r.Payload,
		Headers: h,
	}
}
