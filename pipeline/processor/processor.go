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
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/databases"
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

	dedupe  *dedupe
	deleted *deletions // the deleted tenants, for the fence
	shards  []Shard    // where events go: one, conn, on a single server
	// beforeRepairInsert, when set (tests), runs between repairMarts' last check and its insert.
	beforeRepairInsert func()
	// lease is the current generation's (runGeneration): no packet without it (fence).
	lease *group.Lease
	gen   int32 // the current generation's id, the first 8 hex digits of its inserts' query ids
	debug bool  // the log takes debug records (batch offsets)
	// closing counts abandoned inserts left idle until ClickHouse drops them (abort): Run
	// waits for them, since the process's exit would close them early, and 18.16 would store
	// what they received.
	closing sync.WaitGroup
	// disc ends abandoned inserts at once, keeping nothing of them; nil when the processor's
	// connections were not dialled through it (abort then waits until ClickHouse dropped them).
	disc *discarder
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
	// Shards are where events go on a ClickHouse cluster (ClusterShards); empty on one server,
	// where Conn takes them.
	Shards []Shard
	// discarder dialled the connections inserts go through (Open); nil: abandoned inserts are
	// left idle until ClickHouse drops them.
	discarder *discarder
}

// New builds a processor.
func New(cfg config.Config, d Deps) *Processor {
	if len(d.Shards) == 0 {
		d.Shards = []Shard{{Write: d.Conn, Replicas: []driver.Conn{d.Conn}}}
	}
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
		deleted: &deletions{load: d.Cache.Tombstones},
		shards:  d.Shards,
		disc:    d.discarder,
		debug:   d.Log != nil && d.Log.Enabled(context.Background(), slog.LevelDebug),
		rawCopy: d.RawCopy,
	}
}

// Run joins the consumer group and processes until ctx ends. Each generation of the group
// (one assignment of partitions) is processed by runGeneration; a rebalance ends it and the
// next one starts from the store's high-water marks.
func (p *Processor) Run(ctx context.Context) error {
	defer p.dlq.Close()
	defer p.closing.Wait()
	return group.Run(ctx, group.Config{ID: p.cfg.GroupID, Brokers: p.kcfg.Brokers, Topic: p.kcfg.RawTopic, MaxBackoff: p.cfg.MaxBackoff, SessionTimeout: sessionTimeout},
		group.StandardHooks("processor", p.log, p.m.kafkaErrors, p.m.assigned), p.runGeneration)
}

type fetched struct {
	msg kafka.Message
	err error
}

// chunkRows is how many messages the processor decides at a time and sends to ClickHouse as one
// block of its batch's insert. ClickHouse joins the blocks of one insert into one before it
// writes anything (openEventsInsert), so the event store and its marts see one block, one part,
// per batch of up to batch_size events — their cost per event falls steeply with the block's
// size — while the processor holds the decoded events of a chunk, not of a batch.
const chunkRows = 8192

// writeError is a failed write. The processor abandons everything it had not finished storing
// and, after a backoff, resumes from what the store holds, as after a restart.
type writeError struct {
	what string
	err  error
}

func (e *writeError) Error() string { return e.what + ": " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// runGeneration processes the assigned partitions until the generation ends. A failed write
// is backpressure, not loss: nothing more is read or committed, and once the store answers
// again processing resumes from its high-water marks, so nothing is stored twice.
func (p *Processor) runGeneration(ctx context.Context, gen *kafka.Generation, parts []int) error {
	if len(parts) == 0 {
		<-ctx.Done()
		return nil
	}
	// Nothing is sent to ClickHouse for this generation unless its lease is valid (fence).
	p.lease = group.StartLease(ctx, p.kcfg.Brokers, gen, leaseFor)
	p.gen = gen.ID
	backoff := group.NewBackoff(p.cfg.MaxBackoff)
	fencedLast := false // a second fence in a row backs off like a failed write
	stored := func() {
		backoff.Reset()
		p.m.retrying.Set(0)
		fencedLast = false
	}
	for {
		err := p.process(ctx, gen, parts, stored)
		var we *writeError
		if ctx.Err() != nil || !errors.As(err, &we) {
			return err
		}
		if errors.Is(err, errDeletedSinceDecided) && !fencedLast { // not a failure: decided again at once
			p.log.Info("a tenant was deleted while its batch was in flight; the batch is decided again")
			fencedLast = true
			continue
		}
		fencedLast = false
		if lost := p.lease.Check(); lost != nil && !errors.Is(lost, group.ErrLeaseExpired) {
			// The coordinator said the generation is over: not a failure, and nothing to retry;
			// the group ends this generation's context within a heartbeat (returning ends it
			// too, should it not).
			p.log.Info("the generation is over; its unfinished batch was abandoned", "generation", gen.ID, "reason", lost)
			select {
			case <-ctx.Done():
			case <-time.After(sessionTimeout):
			}
			return nil
		}
		p.m.retrying.Set(1)
		p.m.writeErrors.WithLabelValues(we.what).Inc()
		p.log.Warn("write failed; backing off", "what", we.what, "err", group.ErrText(we.err))
		if !backoff.Wait(ctx) {
			return nil
		}
	}
}

// process reads the partitions from the store's high-water marks on and stores them in three
// stages that overlap: deciding chunks (this goroutine), streaming each batch's accepted events
// into the batch's open insert (stream), and finishing batches in order: the insert's commit,
// the DLQ, the rejections with the checkpoints, the offsets (finish). It returns when ctx
// ends, on a read error or on the first write error; what was not finished is abandoned.
func (p *Processor) process(ctx context.Context, gen *kafka.Generation, parts []int, stored func()) error {
	state, err := p.loadWithRetry(ctx, parts)
	if err != nil {
		return err
	}
	if p.log.Enabled(ctx, slog.LevelDebug) {
		for _, part := range parts {
			st := state[part]
			p.log.Debug("resuming partition from the store's high-water marks", "generation", gen.ID, "partition", part, "checkpoint", st.lo, "stored_beyond", len(st.done))
		}
	}
	// Ids of batches that were decided but not stored must not count as stored.
	defer p.dedupe.dropPending()

	pctx, abandon := context.WithCancel(ctx)
	defer abandon()
	var (
		once  sync.Once
		first error
	)
	fail := func(err error) {
		if err != nil && pctx.Err() == nil { // an error caused by abandoning is not the cause
			once.Do(func() { first = err; abandon() })
		}
	}
	msgs, readers, stopReading := p.read(pctx, parts, state)
	defer stopReading()
	if p.rawCopy {
		fail(p.copyLoop(pctx, gen, msgs, state))
		return first
	}

	// Each hand-off holds one item, so a slow ClickHouse stops reading (backpressure, not
	// buffering): at most a batch being finished, one being streamed and a chunk in between.
	chunks := make(chan *decided, 1)
	batches := make(chan *batch, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(batches)
		fail(p.stream(pctx, chunks, batches))
	}()
	go func() {
		defer wg.Done()
		fail(p.finish(pctx, gen, batches, readers, stored))
	}()
	fail(p.decideLoop(pctx, msgs, state, chunks))
	close(chunks)
	wg.Wait()
	for b := range batches { // handed over but never finished
		p.abort(b)
	}
	return first
}

// read starts one reader per partition from the store's high-water mark; stop ends them.
func (p *Processor) read(ctx context.Context, parts []int, state map[int]*partitionState) (*inbox, map[int]*kafka.Reader, func()) {
	msgs := newInbox(chunkRows)
	readers := map[int]*kafka.Reader{}
	var wg sync.WaitGroup
	readCtx, stopReading := context.WithCancel(ctx)
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
			msgs.put(readCtx, fetched{err: err})
			break
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
				if !msgs.put(readCtx, fetched{m, err}) || err != nil {
					return
				}
			}
		}()
	}
	return msgs, readers, func() { stopReading(); wg.Wait() }
}

// decideLoop cuts the messages into batches of at most batch_size, each closed at the latest
// batch_timeout after its first message, and decides each batch a chunk at a time.
func (p *Processor) decideLoop(ctx context.Context, msgs *inbox, state map[int]*partitionState, chunks chan<- *decided) error {
	for {
		var (
			dctx     *decision.Context
			deadline time.Time
			n        int
		)
		for last := false; !last; {
			ms, err := p.collect(ctx, msgs, min(chunkRows, p.cfg.BatchSize-n), &deadline)
			if err != nil || ctx.Err() != nil {
				return err
			}
			if dctx == nil {
				dctx = p.decisionContext()
			}
			c := p.decide(ms, state, dctx)
			n += len(ms)
			last = n >= p.cfg.BatchSize || !time.Now().Before(deadline)
			c.last = last
			select {
			case chunks <- c:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// collect gathers up to limit messages. With *deadline zero it first waits for a message and
// sets *deadline batch_timeout after it; then it gathers until limit or the deadline.
func (p *Processor) collect(ctx context.Context, msgs *inbox, limit int, deadline *time.Time) ([]kafka.Message, error) {
	batch := make([]kafka.Message, 0, limit)
	var err error
	if deadline.IsZero() {
		if batch, err = msgs.take(ctx, batch, limit, time.Time{}); len(batch) == 0 || err != nil {
			return p.readFailed(batch, err)
		}
		*deadline = time.Now().Add(p.cfg.BatchTimeout)
	}
	for len(batch) < limit && ctx.Err() == nil && time.Now().Before(*deadline) {
		if batch, err = msgs.take(ctx, batch, limit-len(batch), *deadline); err != nil {
			return p.readFailed(batch, err)
		}
	}
	if ctx.Err() != nil {
		return nil, nil
	}
	return batch, nil
}

// readFailed is collect's answer when a partition reader failed or ctx ended.
func (p *Processor) readFailed(batch []kafka.Message, err error) ([]kafka.Message, error) {
	if err != nil {
		p.m.kafkaErrors.Inc()
		return nil, fmt.Errorf("read partition: %w", err)
	}
	return batch, nil
}

// decided is a chunk after the decision.
type decided struct {
	rows       []row
	rejs       []rejected
	dlq        []kafka.Message
	claimed    int64               // the dedupe's sequence after this chunk's ids, confirmed once stored
	tenants    map[string]struct{} // the tenants of its rows and rejections, for the fence
	next       map[int]int64       // offset to commit per partition
	rejectedBy map[event.Reason]int
	skipped    int
	size       int
	now        time.Time // the batch's decision time
	last       bool      // the batch's last chunk
}

// batch is the chunks of one insert, as stream hands them to finish.
type batch struct {
	ins        []*eventsInsert // one per shard, nil while no event of the shard was accepted
	rejs       []rejected
	dlq        []kafka.Message
	claimed    int64
	tenants    map[string]string // tenant → its tombstone, for the fence
	next       map[int]int64
	rejectedBy map[event.Reason]int
	stored     int
	skipped    int
	size       int
	now        time.Time
	start      time.Time
	span       map[int][2]int64 // per partition, the first and last offset of its stored events
}

func (b *batch) add(c *decided) {
	b.rejs = append(b.rejs, c.rejs...)
	b.dlq = append(b.dlq, c.dlq...)
	b.claimed = max(b.claimed, c.claimed)
	for part, next := range c.next {
		b.next[part] = max(b.next[part], next)
	}
	for reason, n := range c.rejectedBy {
		b.rejectedBy[reason] += n
	}
	b.stored += len(c.rows)
	b.skipped += c.skipped
	b.size += c.size
}

// discard makes ClickHouse fail every open insert of the batch (eventsInsert.discard); false
// when one could not be.
func (b *batch) discard() bool {
	all := true
	for _, in := range b.ins {
		if in != nil && !in.ended && !in.discard() {
			all = false
		}
	}
	return all
}

func (b *batch) abort() {
	for _, in := range b.ins {
		if in != nil {
			in.abort()
		}
	}
}

// spans is the batch's stored offsets for a log line: partition:first-last.
func (b *batch) spans() string {
	parts := make([]int, 0, len(b.span))
	for part := range b.span {
		parts = append(parts, part)
	}
	sort.Ints(parts)
	var sb strings.Builder
	for i, part := range parts {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%d:%d-%d", part, b.span[part][0], b.span[part][1])
	}
	return sb.String()
}

// inserting says whether any shard's insert is open.
func (b *batch) inserting() bool {
	for _, in := range b.ins {
		if in != nil {
			return true
		}
	}
	return false
}

// outcome is one message's decision.
type outcome struct {
	t    decision.Tagged
	rej  *decision.Rejection
	skip bool
}

// decisionContext is what the decision of one batch reads: its time and the registry's state
// when the batch began.
func (p *Processor) decisionContext() *decision.Context {
	return &decision.Context{
		Now:     p.now(),
		Limits:  p.limits,
		Tenants: p.cache.Snapshot(),
		Keyring: p.keyring,
		Policy:  p.policy,
		HashKey: p.hashKey,
	}
}

// decide runs the decision for every message of the chunk, in parallel (it is pure), then
// classifies in order: skipped (already stored), duplicate, rejected or stored.
func (p *Processor) decide(msgs []kafka.Message, state map[int]*partitionState, dctx *decision.Context) *decided {
	start := time.Now()
	out := make([]outcome, len(msgs))
	workers := min(runtime.GOMAXPROCS(0), 1+len(msgs)/1000)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(msgs); i += workers {
				m := msgs[i]
				if st := state[m.Partition]; st == nil || st.stored(m.Offset) {
					out[i].skip = true
					continue
				}
				out[i].t, out[i].rej = decision.DecideMessage(m.Key, m.Value, dctx)
			}
		}()
	}
	wg.Wait()

	// The ids of accepted events are claimed in one step, in message order: an id stored,
	// pending in a batch not yet stored, or earlier in this chunk is a duplicate.
	ids := make([]eventID, 0, len(msgs))
	for i := range out {
		o := &out[i]
		if o.skip || o.rej != nil {
			continue
		}
		id, ok := parseEventID(o.t.Event.EventID)
		if !ok {
			// An accepted event's id is always a UUID; were it not, storing it unchecked
			// could store a retry twice.
			o.rej = decision.Duplicate(o.t, msgs[i].Value, dctx)
			continue
		}
		ids = append(ids, id)
	}
	fresh := make([]bool, len(ids))
	d := &decided{next: map[int]int64{}, now: dctx.Now, size: len(msgs), rows: make([]row, 0, len(msgs)), rejectedBy: map[event.Reason]int{}, tenants: map[string]struct{}{}}
	d.claimed = p.dedupe.claim(ids, dctx.Now, fresh)
	k := 0
	for i, m := range msgs {
		d.next[m.Partition] = max(d.next[m.Partition], m.Offset+1)
		o := &out[i]
		if o.skip {
			d.skipped++
			continue
		}
		if o.rej == nil {
			if !fresh[k] {
				o.rej = decision.Duplicate(o.t, m.Value, dctx)
			}
			k++
		}
		if o.rej != nil {
			d.rejs = append(d.rejs, rejected{r: o.rej, partition: m.Partition, offset: m.Offset})
			d.dlq = append(d.dlq, dlqMessage(m, o.rej))
			d.rejectedBy[o.rej.Reason]++
			if o.rej.Tenant != "" {
				d.tenants[o.rej.Tenant] = struct{}{}
			}
			continue
		}
		d.rows = append(d.rows, row{t: &out[i].t, partition: m.Partition, offset: m.Offset})
		d.tenants[o.t.Event.TenantID] = struct{}{}
	}
	p.m.stage.WithLabelValues("decide").Observe(time.Since(start).Seconds())
	return d
}

// stream writes each batch's accepted events into one insert, a chunk at a time, and hands the
// batch to finish once its last chunk is in. Only finish commits an insert; one left open (ctx
// ended, a write failed) is aborted.
func (p *Processor) stream(ctx context.Context, chunks <-chan *decided, batches chan<- *batch) error {
	var b *batch
	defer func() {
		if b != nil {
			p.abort(b)
		}
	}()
	n := len(p.shards)
	cols := make([]*eventColumns, n) // scratch, a shard's reused chunk after chunk
	parts := make([][]row, n)
	for c := range chunks {
		if b == nil {
			b = &batch{ins: make([]*eventsInsert, n), next: map[int]int64{}, rejectedBy: map[event.Reason]int{}, tenants: map[string]string{}, now: c.now, start: time.Now(), span: map[int][2]int64{}}
		}
		for t := range c.tenants {
			if _, ok := b.tenants[t]; !ok {
				b.tenants[t] = decision.TenantTombstone(p.hashKey, t)
			}
		}
		if len(c.rows) > 0 {
			mark := time.Now()
			if n == 1 {
				parts[0] = c.rows
			} else {
				for s := range parts {
					parts[s] = parts[s][:0]
				}
				for _, r := range c.rows {
					s := shardOf(r.t.Tenant, p.shards)
					parts[s] = append(parts[s], r)
				}
			}
			if err := p.fence(ctx, b); err != nil { // before any packet that keeps an insert alive
				return err
			}
			for s, rows := range parts {
				if len(rows) == 0 {
					continue
				}
				if b.ins[s] == nil {
					ins, err := p.openEventsInsert(ctx, p.shards[s].Write, b.now)
					if err != nil {
						return &writeError{"insert events", err}
					}
					b.ins[s] = ins
				}
				if cols[s] == nil {
					cols[s] = newEventColumns(chunkRows)
				}
				if err := p.leased(); err != nil { // opening may have taken a while
					return err
				}
				if err := b.ins[s].add(rows, cols[s]); err != nil {
					return &writeError{"insert events", err}
				}
			}
			p.m.stage.WithLabelValues("send_events").Observe(time.Since(mark).Seconds())
		}
		for _, r := range c.rows {
			if !p.debug {
				break // the spans are for the debug log only: no per-row work on the hot path
			}
			sp, ok := b.span[r.partition]
			if !ok {
				sp = [2]int64{r.offset, r.offset}
			}
			b.span[r.partition] = [2]int64{min(sp[0], r.offset), max(sp[1], r.offset)}
		}
		b.add(c)
		if c.last {
			select {
			case batches <- b:
				b = nil
			case <-ctx.Done():
				return nil
			}
		}
	}
	return nil
}

// finish stores each batch in order and commits its offsets: the events insert is committed,
// then the DLQ is written, then the rejections with one checkpoint row per partition.
func (p *Processor) finish(ctx context.Context, gen *kafka.Generation, batches <-chan *batch, readers map[int]*kafka.Reader, stored func()) error {
	for b := range batches {
		if err := p.store(ctx, b); err != nil {
			p.abort(b)
			return err
		}
		p.dedupe.confirm(b.claimed)
		p.log.Debug("batch stored", "decided", b.now, "events", b.stored, "offsets", b.spans(), "next", b.next)
		p.m.events.WithLabelValues("stored", "").Add(float64(b.stored))
		p.m.skipped.Add(float64(b.skipped))
		for reason, n := range b.rejectedBy {
			p.m.events.WithLabelValues("rejected", string(reason)).Add(float64(n))
		}
		stored()
		if err := gen.CommitOffsets(map[string]map[int]int64{p.kcfg.RawTopic: b.next}); err != nil {
			// Not fatal for correctness: the store already holds the batch.
			p.m.kafkaErrors.Inc()
			return fmt.Errorf("commit offsets: %w", err)
		}
		for part, off := range b.next {
			p.m.committed.WithLabelValues(strconv.Itoa(part)).Set(float64(off))
		}
		for part, r := range readers {
			p.m.lag.WithLabelValues(strconv.Itoa(part)).Set(float64(r.Lag()))
		}
	}
	return nil
}

// store commits a batch: events, then the DLQ topic, then rejections with the checkpoints.
func (p *Processor) store(ctx context.Context, b *batch) error {
	mark := time.Now()
	lap := func(stage string) {
		p.m.stage.WithLabelValues(stage).Observe(time.Since(mark).Seconds())
		mark = time.Now()
	}
	if b.inserting() {
		// Shard after shard: a batch cut short between two leaves the first shard's events
		// stored beyond the checkpoint, which resuming reads back as done (loadState).
		for _, in := range b.ins {
			if in == nil {
				continue
			}
			if err := p.fence(ctx, b); err != nil {
				return err
			}
			if err := in.commit(); err != nil {
				return &writeError{"insert events", err}
			}
		}
		lap("insert_events")
	}
	// The DLQ goes before the rejections insert: that insert carries the checkpoint, and
	// once it is in, a restart skips the batch, so a DLQ record not yet written would never
	// be. A crash in between re-sends some DLQ records; their key (source partition and
	// offset) tells a replay tool they are the same.
	if len(b.dlq) > 0 {
		if err := p.dlq.WriteMessages(ctx, b.dlq...); err != nil {
			return &writeError{"write DLQ", err}
		}
		for reason, n := range b.rejectedBy { // every rejection has its DLQ record
			p.m.dlq.WithLabelValues(string(reason)).Add(float64(n))
		}
		lap("write_dlq")
	}
	rejs := b.rejs
	for part, next := range b.next {
		rejs = append(rejs, rejected{partition: part, offset: next - 1}) // checkpoint
	}
	id := p.insertID()
	// One block, written only at the insert's end, as the events' (a fence after the data may
	// still give it up).
	settings := OneBlockSettings(len(rejs))
	settings["receive_timeout"] = int(insertIdle.Seconds())
	ictx, cancel := p.insertContext(clickhouse.Context(ctx, clickhouse.WithSettings(settings), clickhouse.WithQueryID(id)))
	defer cancel()
	giveUp := func() {
		if p.disc == nil || !p.disc.discard(id) {
			time.Sleep(insertDropped) // its last packet was sent before now
		}
	}
	if p.disc != nil {
		defer p.disc.forget(id)
	}
	if err := insertRejections(ictx, p.conn, p.db, rejs, b.now.UTC().Truncate(time.Second), func() error { return p.fence(ctx, b) }, giveUp); err != nil {
		var we *writeError
		if errors.As(err, &we) {
			return err
		}
		return &writeError{"insert rejections", err}
	}
	lap("insert_rejections")
	p.m.batchSize.Observe(float64(b.size))
	p.m.batchSeconds.Observe(time.Since(b.start).Seconds())
	return nil
}

// abort abandons a batch's open inserts. Closing an insert's connection makes ClickHouse 18.16
// store what it received (it takes the close for the end of the data), so an abandoned batch's
// inserts are left idle until ClickHouse has dropped them (insertDropped after their last
// packet) and closed only then: after the fence has stopped a batch (whose inserts hold rows of
// a deleted tenant), and after any other abandonment too — a write failed on another shard, the
// generation ended — or the rows would land a moment after the high-water marks read next (here,
// or by the instance given the partition) and be decided again: stored twice, or refused as
// duplicates of themselves.
//
// The wait runs on its own: what is decided next may go ahead at once, since an insert left
// idle stores nothing.
func (p *Processor) abort(b *batch) {
	if !b.inserting() {
		return
	}
	p.log.Debug("batch abandoned with its insert open", "decided", b.now, "events", b.stored, "offsets", b.spans())
	if b.discard() {
		b.abort()
		return
	}
	p.closing.Add(1)
	go func() {
		defer p.closing.Done()
		time.Sleep(insertDropped) // its last packet was sent before now, or before the fence
		b.abort()
		p.log.Debug("abandoned batch closed", "decided", b.now, "offsets", b.spans())
	}()
}

// replicas are every replica of every shard.
func (p *Processor) replicas() []driver.Conn {
	var out []driver.Conn
	for _, s := range p.shards {
		out = append(out, s.Replicas...)
	}
	return out
}

// errDeletedSinceDecided is a batch that holds a tenant deleted after the batch was decided.
var errDeletedSinceDecided = errors.New("the batch holds a tenant deleted since it was decided; deciding it again")

// fence is the check before every packet of a batch's inserts (promise 8): a chunk of events,
// the end of the events insert, the rejections and their end. Were one of the batch's tenants
// deleted since the batch was decided (with the registry as it was then), the batch is
// abandoned and decided again, and the tenant's events are refused as deleted.
//
// Why that bounds what a deletion can miss: ClickHouse ends an insert that receives nothing for
// insertIdle and keeps nothing of it; a connection closed mid-insert (a crash) makes it keep
// what it received, at once. So an insert's rows are stored, if ever, within insertDropped of its
// last packet, and each packet follows a read of the deleted tenants started at most
// fenceFresh before the check that let it go. A deletion that waits CommitWindow after its
// tombstone therefore finds every row a batch decided before it could bring — but for a
// process paused between a passing check and the send it lets go, whose rows retention's sweep
// of deleted tenants removes (retention.Keeper.Sweep).
func (p *Processor) fence(ctx context.Context, b *batch) error {
	if err := ctx.Err(); err != nil { // the generation ended: its partitions may be another's
		return &writeError{"fence", err}
	}
	if len(b.tenants) > 0 {
		gone, err := p.deleted.current(ctx)
		if err != nil {
			return &writeError{"read deleted tenants", err}
		}
		for _, tomb := range b.tenants {
			if gone[tomb] {
				p.m.fenced.Inc()
				if err := p.cache.Refresh(ctx); err != nil { // the next decision must know it
					return &writeError{"read the registry", err}
				}
				return &writeError{"fence", errDeletedSinceDecided}
			}
		}
	}
	return p.leased() // last: reading the deleted tenants may have taken a while
}

// leased is nil while the generation's lease is valid (the check before every packet).
func (p *Processor) leased() error {
	if p.lease == nil {
		return nil
	}
	if err := p.lease.Check(); err != nil {
		p.m.leaseExpired.Inc()
		return &writeError{"lease", err}
	}
	return nil
}

// insertID is a query id for one of the generation's inserts: a uuid whose first 8 hex digits
// are the generation's id, so that the next generation's instances can tell its inserts from
// theirs in system.processes (awaitEarlierInserts).
func (p *Processor) insertID() string {
	return fmt.Sprintf("%08x", uint32(p.gen)) + uuid.NewString()[8:]
}

// earlierInsertsWait bounds how long a generation waits for an earlier one's inserts: they end
// within insertDropped of their last packet unless the server itself is stalled.
const earlierInsertsWait = 2 * insertDropped

// awaitEarlierInserts waits, before the high-water marks are read, until no server holds an
// insert of this group's earlier generations into the store — the server's side of handing a
// partition on: an instance paused past its session whose insert was already sent (a commit
// the server has not finished writing, a packet it has not read yet) lands before the marks
// are read, not after. Past earlierInsertsWait it warns and goes on.
func (p *Processor) awaitEarlierInserts(ctx context.Context) error {
	into := []string{"startsWith(query, 'INSERT INTO " + p.db + ".events')", "startsWith(query, 'INSERT INTO " + p.db + ".rejections')"}
	for _, m := range databases.Marts { // repairMarts' inserts
		into = append(into, "startsWith(query, 'INSERT INTO "+databases.Purpose(p.db, m)+".')")
	}
	q := "SELECT count() FROM system.processes WHERE match(query_id, '^[0-9a-f]{8}-') AND substring(query_id, 1, 8) < ? AND (" +
		strings.Join(into, " OR ") + ")"
	gen := fmt.Sprintf("%08x", uint32(p.gen))
	deadline := time.Now().Add(earlierInsertsWait)
	for {
		open := uint64(0)
		for _, r := range p.replicas() {
			var n uint64
			if err := r.QueryRow(ctx, q, gen).Scan(&n); err != nil {
				return fmt.Errorf("inserts of earlier generations: %w", err)
			}
			open += n
		}
		if open == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			p.log.Warn("inserts of an earlier generation still run; reading the high-water marks anyway", "inserts", open, "waited", earlierInsertsWait)
			return nil
		}
		p.log.Info("waiting for inserts of an earlier generation to end before reading the high-water marks", "inserts", open)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// The processor's consumer-group session and lease: why a paused instance stores nothing its
// partitions' next owner stores too.
//
// Every packet of an insert goes out only while the instance's lease is valid (fence): within
// leaseFor of sending a heartbeat the group coordinator accepted. The coordinator gives the
// partitions to another member no sooner than sessionTimeout after that heartbeat. What the
// paused instance sent can still land after its last packet: an open insert until ClickHouse
// drops it (insertDropped after its last packet, keeping nothing) — unless the process is
// killed first, when ClickHouse 18.16 stores what the insert received, at that moment. So with
// sessionTimeout ≥ leaseFor + insertDropped + a margin, whatever lands lands before the next
// owner reads the high-water marks. (An instance that leaves the group in order has
// discarded its open inserts before: discarder.)
const (
	leaseFor       = 2 * time.Second
	sessionTimeout = 20 * time.Second
)

// fenceFresh is how old a read of the deleted tenants the fence may rely on.
const fenceFresh = time.Second

// deletions is the processor's view of the deleted tenants for the fence: read afresh when the
// last read started more than fenceFresh ago.
type deletions struct {
	mu   sync.Mutex
	read time.Time // when the last read started (monotonic)
	gone map[string]bool
	load func(context.Context) (map[string]bool, error)
}

func (d *deletions) current(ctx context.Context) (map[string]bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.read.IsZero() && time.Since(d.read) <= fenceFresh {
		return d.gone, nil
	}
	start := time.Now()
	gone, err := d.load(ctx)
	if err != nil {
		return nil, err
	}
	d.read, d.gone = start, gone
	return gone, nil
}

// CommitWindow is the longest after a tenant's tombstone that a batch decided before it may
// still bring rows of the tenant to the store (fence): a deletion waits this long after the
// tombstone before it deletes.
const CommitWindow = insertDropped + fenceFresh + 5*time.Second

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
		if err := p.awaitEarlierInserts(ctx); err != nil {
			return err
		}
		var err error
		state, err = loadState(ctx, p.conn, p.replicas(), p.db, parts)
		if err != nil {
			return err
		}
		for part, st := range state {
			if len(st.done) > 0 {
				// A batch was cut after some of its events were stored. ClickHouse writes the
				// event store before the views fill the marts, each on its own: a server that
				// stopped in between kept the events without their marts' rows (repairMarts).
				p.log.Info("resuming after a batch cut short: its stored events are kept, the purpose marts checked against them",
					"partition", part, "stored_beyond_checkpoint", len(st.done), "checkpoint", st.lo)
			}
		}
		if err := p.repairMarts(ctx, state); err != nil {
			return err
		}
		if p.cfg.DedupeHorizon > 0 {
			var ids []string
			for _, s := range p.shards {
				some, err := recentEventIDs(ctx, s.Replicas[0], p.db, parts, p.now().Add(-p.cfg.DedupeHorizon), p.cfg.DedupeMax)
				if err != nil {
					return err
				}
				ids = append(ids, some...)
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
