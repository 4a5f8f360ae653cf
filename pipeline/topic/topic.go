// Package topic creates and describes the Kafka topics Shukei uses (usage.raw, usage.dlq),
// with the partition counts and the retention the configuration gives, and tells how long a
// topic still holds what was written to it (Horizon).
package topic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/config"
)

// Spec is a topic to ensure.
type Spec struct {
	Name              string
	Partitions        int
	ReplicationFactor int
	Config            map[string]string
}

// Specs returns the topics a configuration needs. Both get an explicit retention.ms (never the
// broker's default, never unbounded) and a segment.ms that keeps Kafka's deletion close to it:
// the raw topic's retention is the longest time a raw user id exists anywhere in Shukei.
func Specs(c config.Kafka) []Spec {
	def := config.Default().Kafka
	raw, dlq := c.RawRetention, c.DLQRetention
	if raw <= 0 {
		raw = def.RawRetention // a hand-made config.Kafka: never retention.ms=0 (delete at once)
	}
	if dlq <= 0 {
		dlq = def.DLQRetention
	}
	return []Spec{
		{Name: c.RawTopic, Partitions: c.RawPartitions, ReplicationFactor: c.ReplicationFactor, Config: RetentionConfig(raw)},
		// DLQ records are kept longer than raw events: an operator needs time to replay them.
		{Name: c.DLQTopic, Partitions: c.DLQPartitions, ReplicationFactor: c.ReplicationFactor, Config: RetentionConfig(dlq)},
		ReleaseSpec(c),
	}
}

// ReleaseLogRetention is how long the release log keeps its records: longer than the rolling
// year a budget spans. Its records are the published releases (and draws that lost to an
// earlier one, never published), no tenant-level data.
const ReleaseLogRetention = 400 * 24 * time.Hour

// ReleaseSpec is the release log's topic: one partition, so its order is total.
func ReleaseSpec(c config.Kafka) Spec {
	name := c.ReleaseTopic
	if name == "" {
		name = config.Default().Kafka.ReleaseTopic
	}
	return Spec{Name: name, Partitions: 1, ReplicationFactor: c.ReplicationFactor, Config: RetentionConfig(ReleaseLogRetention)}
}

// AuditLogRetention is how long the audit log's sequencer keeps its records. A writer reads it
// only from the last record the audit log holds, so days would do; a year keeps a record that
// no writer has materialised yet (its writer died after producing it) long after any writer
// of its database comes back.
const AuditLogRetention = 400 * 24 * time.Hour

// AuditSpec is the audit log's sequencer topic (audit.topic): one partition, whose order is
// the chain's (audit).
func AuditSpec(c config.Config) Spec {
	name := c.Audit.Topic
	if name == "" {
		name = config.Default().Audit.Topic
	}
	rf := c.Kafka.ReplicationFactor
	if rf < 1 {
		rf = 1
	}
	return Spec{Name: name, Partitions: 1, ReplicationFactor: rf, Config: RetentionConfig(AuditLogRetention)}
}

// Topic-level settings Shukei sets.
const (
	RetentionMs       = "retention.ms"
	SegmentMs         = "segment.ms"
	MinInsyncReplicas = "min.insync.replicas"
)

// Durable returns s with min.insync.replicas=2 when it is replicated three times or more (and
// sets none of its own): a write acknowledged by acks=all is then on two brokers at least, and
// one broker may be lost without losing it or stopping the writes. Below three replicas the
// broker's default stands (a single broker, or two where 2 would stop writes with one down).
func Durable(s Spec) Spec {
	if s.ReplicationFactor < 3 {
		return s
	}
	if _, ok := s.Config[MinInsyncReplicas]; ok {
		return s
	}
	c := maps.Clone(s.Config)
	if c == nil {
		c = map[string]string{}
	}
	c[MinInsyncReplicas] = "2"
	s.Config = c
	return s
}

// SegmentFor is the segment.ms Shukei gives a topic kept for retention. Kafka deletes records
// a whole log segment at a time, once the segment's newest record is older than retention.ms,
// and a segment takes records for up to segment.ms (7 days by default) from its first one: so
// a record can outlive retention.ms by segment.ms. An hour at most (a 24th of a shorter
// retention) keeps that margin small.
func SegmentFor(retention time.Duration) time.Duration {
	return max(time.Millisecond, min(time.Hour, retention/24).Truncate(time.Millisecond))
}

// RetentionConfig is the topic configuration for a retention: retention.ms and segment.ms.
func RetentionConfig(retention time.Duration) map[string]string {
	return map[string]string{
		RetentionMs: strconv.FormatInt(retention.Milliseconds(), 10),
		SegmentMs:   strconv.FormatInt(SegmentFor(retention).Milliseconds(), 10),
	}
}

// Status is what Ensure did for one topic.
type Status struct {
	Name       string
	Partitions int
	Created    bool
	// Config is the spec's settings as the broker reports them once Ensure is done.
	Config map[string]string
	// Changed lists the settings Ensure corrected on an existing topic.
	Changed []Change
}

// Change is one topic setting Ensure set because it differed from the spec.
type Change struct {
	Name, From, To string
	// Inherited: the topic had no value of its own and followed the broker's (From is the
	// broker's); the spec makes it explicit, so a changed broker default cannot move it.
	Inherited bool
}

func (c Change) String() string {
	from := c.From
	if c.Inherited {
		from += " (broker default)"
	}
	return fmt.Sprintf("%s %s -> %s", c.Name, from, c.To)
}

// ErrPartitionMismatch means an existing topic has fewer partitions than configured. Shukei does
// not add partitions by itself: that moves tenants between partitions (the key's hash changes
// owner), an operator's decision (docs/CLUSTER.md, Operations).
var ErrPartitionMismatch = errors.New("topic has fewer partitions than configured")

// Ensure creates each missing topic and checks the existing ones: it never adds partitions
// (ErrPartitionMismatch), but sets every setting of a spec's Config that an existing topic
// lacks or has another value of, and reads them back. It is idempotent.
func Ensure(ctx context.Context, brokers []string, specs []Spec) ([]Status, error) {
	if len(brokers) == 0 {
		return nil, errors.New("no Kafka brokers configured")
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	req := &kafka.CreateTopicsRequest{}
	specs = slices.Clone(specs)
	for i := range specs {
		specs[i] = Durable(specs[i])
	}
	for _, s := range specs {
		tc := kafka.TopicConfig{Topic: s.Name, NumPartitions: s.Partitions, ReplicationFactor: s.ReplicationFactor}
		for k, v := range s.Config {
			tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
		}
		req.Topics = append(req.Topics, tc)
	}
	resp, err := client.CreateTopics(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("create topics on %v: %w", brokers, err)
	}
	created := map[string]bool{}
	for name, terr := range resp.Errors {
		switch {
		case terr == nil:
			created[name] = true
		case errors.Is(terr, kafka.TopicAlreadyExists):
		default:
			return nil, fmt.Errorf("create topic %s: %w", name, terr)
		}
	}
	parts, err := Partitions(ctx, brokers, names(specs)...)
	if err != nil {
		return nil, err
	}
	var out []Status
	var errs []error
	for _, s := range specs {
		n := parts[s.Name]
		if n < s.Partitions {
			errs = append(errs, fmt.Errorf("%w: %s has %d, configured %d; add partitions with Kafka's tools (docs/CLUSTER.md, Operations), or lower the setting", ErrPartitionMismatch, s.Name, n, s.Partitions))
		}
		st := Status{Name: s.Name, Partitions: n, Created: created[s.Name]}
		if len(s.Config) > 0 {
			var err error
			st.Config, st.Changed, err = enforce(ctx, client, s)
			if err != nil {
				errs = append(errs, err)
			}
		}
		out = append(out, st)
	}
	return out, errors.Join(errs...)
}

// Partitions returns the partition count of each named topic. Topic creation is asynchronous in
// KRaft, so it waits briefly for metadata to show a just-created topic with a leader for every
// partition.
func Partitions(ctx context.Context, brokers []string, topics ...string) (map[string]int, error) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
		if err != nil {
			return nil, fmt.Errorf("metadata from %v: %w", brokers, err)
		}
		out := map[string]int{}
		var missing error
		for _, t := range meta.Topics {
			if t.Error != nil {
				missing = fmt.Errorf("topic %s: %w", t.Name, t.Error)
				continue
			}
			// A just-created partition is listed before its leader is elected; writes and
			// offset look-ups fail until then, so wait for every leader.
			for _, p := range t.Partitions {
				if p.Error != nil || p.Leader.ID < 0 || p.Leader.Host == "" {
					missing = fmt.Errorf("topic %s partition %d has no leader yet", t.Name, p.ID)
				}
			}
			out[t.Name] = len(t.Partitions)
		}
		if missing == nil || time.Now().After(deadline) {
			return out, missing
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Delete removes topics; tests use it to clean up after themselves.
func Delete(ctx context.Context, brokers []string, topics ...string) error {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	resp, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: topics})
	if err != nil {
		return err
	}
	var errs []error
	for name, terr := range resp.Errors {
		if terr != nil && !errors.Is(terr, kafka.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("delete %s: %w", name, terr))
		}
	}
	return errors.Join(errs...)
}

// WaitGone waits until the broker's metadata no longer lists any of topics (deletion is
// asynchronous; creating a topic of the same name before that fails).
func WaitGone(ctx context.Context, brokers, topics []string, within time.Duration) error {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	deadline := time.Now().Add(within)
	for {
		meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
		if err != nil {
			return fmt.Errorf("metadata from %v: %w", brokers, err)
		}
		var left []string
		for _, t := range meta.Topics {
			if t.Error == nil || !errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				left = append(left, t.Name)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topics %v still listed %s after their deletion", left, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Reachable dials the first broker that answers, to tell "down" from "misconfigured" early.
func Reachable(ctx context.Context, brokers []string, timeout time.Duration) error {
	var errs []error
	for _, b := range brokers {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			return c.Close()
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no Kafka broker reachable: %w", errors.Join(errs...))
}

func names(specs []Spec) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Name
	}
	return out
}

// EnsurePrinted creates the topics of k and the extra ones (the audit log's sequencer), like
// Ensure, and prints to out what it found, created and changed: 'shukei topics' and the demo.
func EnsurePrinted(ctx context.Context, out io.Writer, k config.Kafka, extra ...Spec) error {
	if err := Reachable(ctx, k.Brokers, k.DialTimeout); err != nil {
		return fmt.Errorf("%w (is it running? scripts/services.sh up)", err)
	}
	st, err := Ensure(ctx, k.Brokers, append(Specs(k), extra...))
	for _, s := range st {
		verb := "exists "
		if s.Created {
			verb = "created"
		}
		fmt.Fprintf(out, "%s  %s (%d partitions)", verb, s.Name, s.Partitions)
		if v, ok := s.Config[RetentionMs]; ok {
			fmt.Fprintf(out, ", retention.ms %s (%s)", v, millisText(v))
		}
		fmt.Fprintln(out)
		for _, c := range s.Changed {
			fmt.Fprintf(out, "         %s: set %s (it differed from the configuration)\n", s.Name, c)
		}
	}
	return err
}

// millisText renders a *.ms setting as a duration.
func millisText(v string) string {
	d, err := Millis(v)
	switch {
	case err != nil:
		return "?"
	case d < 0:
		return "unbounded"
	}
	return d.String()
}
