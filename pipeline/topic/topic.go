// Package topic creates and describes the Kafka topics Shukei uses (usage.raw, usage.dlq),
// with the partition counts the configuration gives.
package topic

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// Specs returns the topics a configuration needs.
func Specs(c config.Kafka) []Spec {
	return []Spec{
		{Name: c.RawTopic, Partitions: c.RawPartitions, ReplicationFactor: c.ReplicationFactor},
		// DLQ records are kept longer than raw events: an operator needs time to replay them.
		{Name: c.DLQTopic, Partitions: c.DLQPartitions, ReplicationFactor: c.ReplicationFactor,
			Config: map[string]string{"retention.ms": fmt.Sprint((30 * 24 * time.Hour).Milliseconds())}},
	}
}

// Status is what Ensure did for one topic.
type Status struct {
	Name       string
	Partitions int
	Created    bool
}

// ErrPartitionMismatch means an existing topic has fewer partitions than configured. Shukei does
// not add partitions by itself: that would move tenants between partitions (the key's hash
// changes owner) while consumers run.
var ErrPartitionMismatch = errors.New("topic has fewer partitions than configured")

// Ensure creates each missing topic and checks the existing ones. It is idempotent.
func Ensure(ctx context.Context, brokers []string, specs []Spec) ([]Status, error) {
	if len(brokers) == 0 {
		return nil, errors.New("no Kafka brokers configured")
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	req := &kafka.CreateTopicsRequest{}
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
			errs = append(errs, fmt.Errorf("%w: %s has %d, configured %d; add partitions with Kafka's tools while consumers are stopped, or lower the setting", ErrPartitionMismatch, s.Name, n, s.Partitions))
		}
		out = append(out, Status{Name: s.Name, Partitions: n, Created: created[s.Name]})
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
