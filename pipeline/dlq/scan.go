package dlq

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/pipeline/topic"
)

// Source is the DLQ topic to read.
type Source struct {
	Brokers []string
	Topic   string
	// Stall bounds the wait for one message below a partition's end offset (default 30 s):
	// a partition that stops answering ends the scan with an error, never a hang.
	Stall time.Duration
}

// SourceOf is the configured DLQ topic (kafka.dlq_topic) on the configured brokers.
func SourceOf(k config.Kafka) Source { return Source{Brokers: k.Brokers, Topic: k.DLQTopic} }

// Bounds is the range of one partition a scan reads: [Start, End).
type Bounds struct {
	Partition  int
	Start, End int64
}

// Scanned says what a scan covered.
type Scanned struct {
	Partitions []Bounds
	Messages   int
}

// Scan reads the partitions of the DLQ topic (all when parts is empty) from their first offset
// — or from the first record at or after since — up to the end offsets taken when the scan
// starts, and calls fn for each message, one at a time, in offset order per partition. Records
// written while it runs are not read: every scan is bounded. Records older than since that the
// time index lets through are skipped here, so fn sees only m.Time >= since.
func (s Source) Scan(ctx context.Context, since time.Time, parts []int, fn func(kafka.Message) error) (Scanned, error) {
	bounds, err := s.bounds(ctx, since, parts)
	if err != nil {
		return Scanned{}, err
	}
	sc := Scanned{Partitions: bounds}
	stall := s.Stall
	if stall <= 0 {
		stall = 30 * time.Second
	}
	for _, b := range bounds {
		if b.Start >= b.End {
			continue
		}
		n, err := s.readPartition(ctx, b, since, stall, fn)
		sc.Messages += n
		if err != nil {
			return sc, err
		}
	}
	return sc, nil
}

func (s Source) readPartition(ctx context.Context, b Bounds, since time.Time, stall time.Duration, fn func(kafka.Message) error) (int, error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   s.Brokers,
		Topic:     s.Topic,
		Partition: b.Partition,
		MinBytes:  1,
		MaxBytes:  16 << 20,
		MaxWait:   250 * time.Millisecond,
	})
	defer r.Close()
	if err := r.SetOffset(b.Start); err != nil {
		return 0, fmt.Errorf("DLQ topic %s partition %d: seek to offset %d: %w", s.Topic, b.Partition, b.Start, err)
	}
	n := 0
	for {
		rctx, cancel := context.WithTimeout(ctx, stall)
		m, err := r.ReadMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			// Offsets below End that hold no record (a transaction marker, a compacted
			// record) leave the reader past them without a message.
			if r.Offset() >= b.End {
				return n, nil
			}
			return n, fmt.Errorf("DLQ topic %s partition %d: nothing read at offset %d (the end is %d) for %s: %w; is the broker up? (scripts/services.sh status)",
				s.Topic, b.Partition, r.Offset(), b.End, stall, err)
		}
		if m.Offset >= b.End {
			return n, nil
		}
		if since.IsZero() || !m.Time.Before(since) {
			n++
			if err := fn(m); err != nil {
				return n, err
			}
		}
		if m.Offset+1 >= b.End {
			return n, nil
		}
	}
}

// bounds lists the partitions to read with their start and end offsets.
func (s Source) bounds(ctx context.Context, since time.Time, parts []int) ([]Bounds, error) {
	if s.Topic == "" {
		return nil, errors.New("no DLQ topic configured (kafka.dlq_topic)")
	}
	if err := topic.Reachable(ctx, s.Brokers, 10*time.Second); err != nil {
		return nil, fmt.Errorf("%w (is it running? scripts/services.sh status; kafka.brokers is %v)", err, s.Brokers)
	}
	counts, err := topic.Partitions(ctx, s.Brokers, s.Topic)
	if err != nil {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("the DLQ topic %s does not exist: create it with 'shukei topics', or check kafka.dlq_topic", s.Topic)
		}
		return nil, fmt.Errorf("DLQ topic %s: %w", s.Topic, err)
	}
	n := counts[s.Topic]
	if n == 0 {
		return nil, fmt.Errorf("the DLQ topic %s has no partitions (create it with 'shukei topics')", s.Topic)
	}
	if len(parts) == 0 {
		for p := range n {
			parts = append(parts, p)
		}
	}
	for _, p := range parts {
		if p < 0 || p >= n {
			return nil, fmt.Errorf("DLQ topic %s has no partition %d (it has %d)", s.Topic, p, n)
		}
	}
	cl := &kafka.Client{Addr: kafka.TCP(s.Brokers...), Timeout: 30 * time.Second}
	// One request per kind of offset: a partition may appear only once in a request.
	listOnce := func(req func(int) kafka.OffsetRequest) (map[int]kafka.PartitionOffsets, error) {
		var reqs []kafka.OffsetRequest
		for _, p := range parts {
			reqs = append(reqs, req(p))
		}
		res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{s.Topic: reqs}})
		if err != nil {
			return nil, fmt.Errorf("offsets of the DLQ topic %s: %w", s.Topic, err)
		}
		out := map[int]kafka.PartitionOffsets{}
		for _, po := range res.Topics[s.Topic] {
			if po.Error != nil {
				return nil, fmt.Errorf("offsets of the DLQ topic %s partition %d: %w", s.Topic, po.Partition, po.Error)
			}
			out[po.Partition] = po
		}
		return out, nil
	}
	// A transient answer (a leader being elected just after the topic was created or a broker
	// restarted) is asked again for a while; anything else is an error at once.
	list := func(req func(int) kafka.OffsetRequest) (map[int]kafka.PartitionOffsets, error) {
		return topic.RetryTransient(ctx, topic.TransientWithin, func() (map[int]kafka.PartitionOffsets, error) { return listOnce(req) })
	}
	first, err := list(kafka.FirstOffsetOf)
	if err != nil {
		return nil, err
	}
	last, err := list(kafka.LastOffsetOf)
	if err != nil {
		return nil, err
	}
	var at map[int]kafka.PartitionOffsets
	if !since.IsZero() {
		if at, err = list(func(p int) kafka.OffsetRequest { return kafka.TimeOffsetOf(p, since) }); err != nil {
			return nil, err
		}
	}
	out := make([]Bounds, 0, len(parts))
	for _, p := range parts {
		b := Bounds{Partition: p, Start: first[p].FirstOffset, End: last[p].LastOffset}
		if b.Start < 0 {
			b.Start = 0
		}
		if at != nil {
			// The broker answers the first offset whose time is at or after since; none
			// (no such record) leaves Offsets empty: nothing to read.
			start := b.End
			for off := range at[p].Offsets {
				if off >= 0 {
					start = max(off, b.Start)
				}
			}
			b.Start = start
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out, nil
}
