package topic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// KeyPartition is the partition of n that Shukei's writers put a message keyed by key in:
// kafka-go's Murmur2Balancer, which the collector, the processor's DLQ writer, the load
// generator and the demo use, and which is the Java client's default partitioner for keyed
// messages.
func KeyPartition(key []byte, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return kafka.Murmur2Balancer{Consistent: true}.Balance(kafka.Message{Key: key}, parts...)
}

// Retained is what one partition still holds: offsets [First, Next), the first record's
// timestamp and the newest timestamp of the last batch (zero when empty).
type Retained struct {
	Partition   int
	First, Next int64
	Oldest      time.Time
	Newest      time.Time
}

// Empty says whether the partition holds no record.
func (r Retained) Empty() bool { return r.Next <= r.First }

// Horizon says until when a topic still holds what was written to it for one key. Kafka cannot
// delete one key's records: they age out with their partition's log segments. A segment is
// deleted once its newest record is older than retention.ms, at the broker's next retention
// check, and its files leave the disk file.delete.delay.ms later; a segment takes records for
// at most segment.ms from its first one. So every record written so far is gone by the newest
// retained record's time plus retention.ms, segment.ms, the check interval and the delay.
type Horizon struct {
	Topic      string
	Exists     bool
	Partitions int
	// Partition is the key's partition, or -1 when the topic is not keyed by it: then any
	// partition may hold its records and Retained lists them all.
	Partition int
	Retained  []Retained
	// Retention is the topic's retention.ms; negative when unbounded (-1).
	Retention     time.Duration
	Segment       time.Duration // segment.ms
	DeleteDelay   time.Duration // file.delete.delay.ms
	CheckInterval time.Duration // the brokers' log.retention.check.interval.ms (5m if unreadable)
	// TopicLevel: retention.ms is the topic's own setting, not the broker's default.
	TopicLevel bool
	// GoneBy is when every record written so far to the partitions above has left the broker;
	// zero when they hold nothing, or when retention is unbounded.
	GoneBy time.Time
}

// Unbounded says whether the topic keeps records forever.
func (h Horizon) Unbounded() bool { return h.Retention < 0 }

// Oldest is the oldest retained record of the partitions, and Newest the newest.
func (h Horizon) Oldest() (Retained, bool) {
	var best Retained
	ok := false
	for _, r := range h.Retained {
		if !r.Empty() && (!ok || r.Oldest.Before(best.Oldest)) {
			best, ok = r, true
		}
	}
	return best, ok
}

// Newest is the partition whose last retained record is the newest.
func (h Horizon) Newest() (Retained, bool) {
	var best Retained
	ok := false
	for _, r := range h.Retained {
		if !r.Empty() && (!ok || r.Newest.After(best.Newest)) {
			best, ok = r, true
		}
	}
	return best, ok
}

// defaultCheckInterval is Kafka's log.retention.check.interval.ms default.
const defaultCheckInterval = 5 * time.Minute

// HorizonOf reads the horizon of topicName for key (nil: the topic is not keyed by what the
// caller looks for; every partition counts). A missing topic is not an error: it holds nothing.
func HorizonOf(ctx context.Context, brokers []string, topicName string, key []byte) (Horizon, error) {
	h := Horizon{Topic: topicName, Partition: -1}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topicName}})
	if err != nil {
		return h, fmt.Errorf("metadata from %v: %w", brokers, err)
	}
	if len(meta.Topics) != 1 || errors.Is(meta.Topics[0].Error, kafka.UnknownTopicOrPartition) {
		return h, nil
	}
	if err := meta.Topics[0].Error; err != nil {
		return h, fmt.Errorf("topic %s: %w", topicName, err)
	}
	h.Exists = true
	h.Partitions = len(meta.Topics[0].Partitions)
	if h.Partitions == 0 {
		return h, fmt.Errorf("topic %s has no partitions", topicName)
	}

	cfg, err := describe(ctx, client, topicName, []string{RetentionMs, SegmentMs, "file.delete.delay.ms"})
	if err != nil {
		return h, err
	}
	for name, dst := range map[string]*time.Duration{RetentionMs: &h.Retention, SegmentMs: &h.Segment, "file.delete.delay.ms": &h.DeleteDelay} {
		if *dst, err = Millis(cfg[name].Value); err != nil {
			return h, fmt.Errorf("topic %s: %s: %w", topicName, name, err)
		}
	}
	h.TopicLevel = cfg[RetentionMs].TopicLevel
	h.CheckInterval = checkInterval(ctx, client, meta.Brokers)

	var parts []int
	if key != nil {
		h.Partition = KeyPartition(key, h.Partitions)
		parts = []int{h.Partition}
	} else {
		for p := range h.Partitions {
			parts = append(parts, p)
		}
	}
	byPart, err := Offsets(ctx, client, topicName, parts)
	if err != nil {
		return h, err
	}
	for _, p := range parts {
		po := byPart[p]
		r := Retained{Partition: p, First: po.FirstOffset, Next: po.LastOffset}
		if !r.Empty() {
			if r.Oldest, _, err = recordTimes(ctx, client, topicName, p, r.First, r.Next); err != nil {
				return h, err
			}
			if _, r.Newest, err = recordTimes(ctx, client, topicName, p, r.Next-1, r.Next); err != nil {
				return h, err
			}
		}
		h.Retained = append(h.Retained, r)
	}
	if n, ok := h.Newest(); ok && !h.Unbounded() {
		h.GoneBy = n.Newest.Add(h.Retention + h.Segment + h.CheckInterval + h.DeleteDelay)
	}
	return h, nil
}

// Offsets reads the first and the next offset of each of topicName's partitions parts (in
// FirstOffset and LastOffset). A partition just created, or whose broker restarted, may answer
// "not leader" for a moment: asked again (RetryTransient), not reported as a broken topic.
func Offsets(ctx context.Context, client *kafka.Client, topicName string, parts []int) (map[int]kafka.PartitionOffsets, error) {
	reqs := make([]kafka.OffsetRequest, 0, 2*len(parts))
	for _, p := range parts {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	return RetryTransient(ctx, TransientWithin, func() (map[int]kafka.PartitionOffsets, error) {
		offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topicName: reqs}})
		if err != nil {
			return nil, fmt.Errorf("offsets of %s: %w", topicName, err)
		}
		byPart := map[int]kafka.PartitionOffsets{}
		for _, po := range offs.Topics[topicName] {
			byPart[po.Partition] = po
		}
		for _, p := range parts {
			po, ok := byPart[p]
			if !ok {
				return nil, fmt.Errorf("offsets of %s partition %d: no answer", topicName, p)
			}
			if po.Error != nil {
				return nil, fmt.Errorf("offsets of %s partition %d: %w", topicName, p, po.Error)
			}
		}
		return byPart, nil
	})
}

// recordTimes fetches from offset and returns the timestamp of the first record at or after
// it and the newest timestamp of the records fetched below next (the whole batch holding
// offset: Kafka judges a segment by its newest timestamp, not by its last record's).
func recordTimes(ctx context.Context, client *kafka.Client, topicName string, part int, offset, next int64) (first, newest time.Time, err error) {
	resp, err := RetryTransient(ctx, TransientWithin, func() (*kafka.FetchResponse, error) {
		resp, err := client.Fetch(ctx, &kafka.FetchRequest{Topic: topicName, Partition: part, Offset: offset, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: time.Second})
		if err == nil && resp.Error != nil {
			err = resp.Error
		}
		return resp, err
	})
	if err != nil {
		return first, newest, fmt.Errorf("read %s partition %d at offset %d: %w", topicName, part, offset, err)
	}
	if resp.Records == nil {
		return first, newest, fmt.Errorf("read %s partition %d at offset %d: no records", topicName, part, offset)
	}
	for {
		rec, err := resp.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return first, newest, fmt.Errorf("read %s partition %d at offset %d: %w", topicName, part, offset, err)
		}
		if rec.Offset >= offset && first.IsZero() {
			first = rec.Time
		}
		if rec.Offset < next && rec.Time.After(newest) {
			newest = rec.Time
		}
	}
	if first.IsZero() {
		return first, newest, fmt.Errorf("read %s partition %d: no record at or after offset %d", topicName, part, offset)
	}
	return first.UTC(), newest.UTC(), nil
}

// checkInterval is the longest log.retention.check.interval.ms of the brokers.
func checkInterval(ctx context.Context, client *kafka.Client, brokers []kafka.Broker) time.Duration {
	var out time.Duration
	for _, b := range brokers {
		resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
			{ResourceType: kafka.ResourceTypeBroker, ResourceName: strconv.Itoa(b.ID), ConfigNames: []string{"log.retention.check.interval.ms"}},
		}})
		if err != nil || len(resp.Resources) != 1 || resp.Resources[0].Error != nil {
			return max(out, defaultCheckInterval)
		}
		for _, e := range resp.Resources[0].ConfigEntries {
			if d, err := Millis(e.ConfigValue); err == nil && d > out {
				out = d
			}
		}
	}
	if out <= 0 {
		return defaultCheckInterval
	}
	return out
}
