package topic_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/pipeline/topic"
)

func TestEnsureCreatesThenChecks(t *testing.T) {
	cfg := servicetest.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := cfg.Kafka
	k.RawTopic = servicetest.Name(t, "raw.")
	k.DLQTopic = servicetest.Name(t, "dlq.")
	k.ReleaseTopic = servicetest.Name(t, "rel.")
	k.RawPartitions, k.DLQPartitions = 4, 2
	t.Cleanup(func() { _ = topic.Delete(context.Background(), k.Brokers, k.RawTopic, k.DLQTopic, k.ReleaseTopic) })

	first, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{k.RawTopic: 4, k.DLQTopic: 2, k.ReleaseTopic: 1}
	for _, s := range first {
		if !s.Created || s.Partitions != want[s.Name] {
			t.Errorf("first run: %+v, want created with %d partitions", s, want[s.Name])
		}
	}
	second, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range second {
		if s.Created || s.Partitions != want[s.Name] {
			t.Errorf("second run: %+v, want existing with %d partitions", s, want[s.Name])
		}
	}
	// Asking for more partitions than exist is reported, never "fixed" behind the operator's back.
	k.RawPartitions = 8
	if _, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k)); !errors.Is(err, topic.ErrPartitionMismatch) {
		t.Fatalf("got %v, want ErrPartitionMismatch", err)
	}
}

func TestSpecsFollowConfig(t *testing.T) {
	c := config.Default().Kafka
	specs := topic.Specs(c)
	if len(specs) != 3 || specs[0].Name != "usage.raw" || specs[0].Partitions != 6 || specs[1].Name != "usage.dlq" || specs[1].Partitions != 3 ||
		specs[2].Name != "usage.releases" || specs[2].Partitions != 1 {
		t.Fatalf("specs = %+v", specs)
	}
}

// Deleting is asynchronous; after WaitGone the same topic can be created again at once (what
// 'shukei demo --fresh' relies on).
func TestDeleteWaitGoneRecreate(t *testing.T) {
	cfg := servicetest.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := cfg.Kafka
	k.RawTopic, k.DLQTopic, k.ReleaseTopic = servicetest.Name(t, "raw."), servicetest.Name(t, "dlq."), servicetest.Name(t, "rel.")
	k.RawPartitions, k.DLQPartitions = 2, 1
	t.Cleanup(func() { _ = topic.Delete(context.Background(), k.Brokers, k.RawTopic, k.DLQTopic, k.ReleaseTopic) })
	if _, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k)); err != nil {
		t.Fatal(err)
	}
	if err := topic.Delete(ctx, k.Brokers, k.RawTopic, k.DLQTopic, k.ReleaseTopic); err != nil {
		t.Fatal(err)
	}
	if err := topic.WaitGone(ctx, k.Brokers, []string{k.RawTopic, k.DLQTopic, k.ReleaseTopic}, time.Minute); err != nil {
		t.Fatal(err)
	}
	st, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k))
	if err != nil {
		t.Fatalf("create again after WaitGone: %v", err)
	}
	for _, s := range st {
		if !s.Created {
			t.Errorf("%s was not created again: %+v", s.Name, s)
		}
	}
}

// describeTopic reads settings straight from the broker with DescribeConfigs (not through the
// package), with whether each is the topic's own (ConfigSource DYNAMIC_TOPIC_CONFIG).
func describeTopic(t *testing.T, brokers []string, name string, names ...string) map[string]string {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	resp, err := client.DescribeConfigs(context.Background(), &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: name, ConfigNames: names},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Resources) != 1 || resp.Resources[0].Error != nil {
		t.Fatalf("describe %s: %+v", name, resp.Resources)
	}
	out := map[string]string{}
	for _, e := range resp.Resources[0].ConfigEntries {
		v := e.ConfigValue
		if e.ConfigSource != 1 {
			v += " (inherited)"
		}
		out[e.ConfigName] = v
	}
	return out
}

// The raw and DLQ topics are created with the configured retention.ms (and a segment.ms of at
// most an hour), as the topic's own settings, read back from the broker.
func TestEnsureSetsRetention(t *testing.T) {
	cfg := servicetest.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := cfg.Kafka
	k.RawTopic, k.DLQTopic, k.ReleaseTopic = servicetest.Name(t, "raw."), servicetest.Name(t, "dlq."), servicetest.Name(t, "rel.")
	k.RawPartitions, k.DLQPartitions = 2, 1
	k.RawRetention, k.DLQRetention = 48*time.Hour, 10*24*time.Hour
	t.Cleanup(func() { _ = topic.Delete(context.Background(), k.Brokers, k.RawTopic, k.DLQTopic, k.ReleaseTopic) })

	st, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		k.RawTopic: {"retention.ms": "172800000", "segment.ms": "3600000"},
		k.DLQTopic: {"retention.ms": "864000000", "segment.ms": "3600000"},
		// The release log: 400 days, the same for every configuration.
		k.ReleaseTopic: {"retention.ms": "34560000000", "segment.ms": "3600000"},
	}
	for _, s := range st {
		if !s.Created || len(s.Changed) != 0 || !reflect.DeepEqual(s.Config, want[s.Name]) {
			t.Errorf("status %+v, want created with %v and nothing changed", s, want[s.Name])
		}
		if got := describeTopic(t, k.Brokers, s.Name, "retention.ms", "segment.ms"); !reflect.DeepEqual(got, want[s.Name]) {
			t.Errorf("broker says %s has %v, want %v", s.Name, got, want[s.Name])
		}
	}
}

// An existing topic whose retention differs (or that only inherits the broker's) is corrected,
// and says so; its other settings are left alone (IncrementalAlterConfigs, not AlterConfigs,
// which would reset them). A second run changes nothing.
func TestEnsureCorrectsRetentionOfExistingTopic(t *testing.T) {
	cfg := servicetest.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := cfg.Kafka
	k.RawTopic, k.DLQTopic, k.ReleaseTopic = servicetest.Name(t, "raw."), servicetest.Name(t, "dlq."), servicetest.Name(t, "rel.")
	k.RawPartitions, k.DLQPartitions = 2, 1
	t.Cleanup(func() { _ = topic.Delete(context.Background(), k.Brokers, k.RawTopic, k.DLQTopic, k.ReleaseTopic) })
	// As someone else made them: the raw topic kept for a day, with a setting of its own; the
	// DLQ with nothing of its own (the broker's default retention).
	if _, err := topic.Ensure(ctx, k.Brokers, []topic.Spec{
		{Name: k.RawTopic, Partitions: 2, ReplicationFactor: 1, Config: map[string]string{"retention.ms": "86400000", "max.message.bytes": "500000"}},
		{Name: k.DLQTopic, Partitions: 1, ReplicationFactor: 1},
	}); err != nil {
		t.Fatal(err)
	}
	if got := describeTopic(t, k.Brokers, k.DLQTopic, "retention.ms"); !strings.HasSuffix(got["retention.ms"], "(inherited)") {
		t.Fatalf("the DLQ topic should start with the broker's retention: %v", got)
	}

	st, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k))
	if err != nil {
		t.Fatal(err)
	}
	changed := map[string][]string{}
	for _, s := range st {
		if s.Created && s.Name != k.ReleaseTopic { // the release log did not exist yet
			t.Errorf("%s was created again", s.Name)
		}
		for _, c := range s.Changed {
			changed[s.Name] = append(changed[s.Name], c.String())
		}
	}
	if got, want := changed[k.RawTopic], []string{"retention.ms 86400000 -> 604800000", "segment.ms 604800000 (broker default) -> 3600000"}; !reflect.DeepEqual(got, want) {
		t.Errorf("raw topic changes %q, want %q", got, want)
	}
	if got := changed[k.DLQTopic]; len(got) != 2 || !strings.HasPrefix(got[0], "retention.ms ") || !strings.HasSuffix(got[0], " (broker default) -> 2592000000") {
		t.Errorf("DLQ topic changes %q, want its inherited retention.ms made 2592000000 and segment.ms set", got)
	}
	if got, want := describeTopic(t, k.Brokers, k.RawTopic, "retention.ms", "segment.ms", "max.message.bytes"),
		map[string]string{"retention.ms": "604800000", "segment.ms": "3600000", "max.message.bytes": "500000"}; !reflect.DeepEqual(got, want) {
		t.Errorf("raw topic after Ensure: %v, want %v", got, want)
	}
	if got, want := describeTopic(t, k.Brokers, k.DLQTopic, "retention.ms"), map[string]string{"retention.ms": "2592000000"}; !reflect.DeepEqual(got, want) {
		t.Errorf("DLQ topic after Ensure: %v, want %v", got, want)
	}

	again, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range again {
		if len(s.Changed) != 0 {
			t.Errorf("second run changed %s: %v", s.Name, s.Changed)
		}
	}
}

// The horizon of a key: the partition the Murmur2 writers (collector, processor, load
// generator) really put its messages in, the oldest and newest retained records with
// plausible times, the topic's retention, and when everything written so far is gone.
func TestHorizonOfKey(t *testing.T) {
	cfg := servicetest.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := cfg.Kafka
	k.RawTopic, k.DLQTopic, k.ReleaseTopic = servicetest.Name(t, "raw."), servicetest.Name(t, "dlq."), servicetest.Name(t, "rel.")
	k.RawPartitions, k.DLQPartitions = 6, 1
	t.Cleanup(func() { _ = topic.Delete(context.Background(), k.Brokers, k.RawTopic, k.DLQTopic, k.ReleaseTopic) })
	if _, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k)); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: k.RawTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	tenants := []string{"acme", "globex", "initech", "umbrella", "hooli", "tyrell", "wonka", "stark"}
	var msgs []kafka.Message
	for i := range 40 {
		ten := tenants[i%len(tenants)]
		msgs = append(msgs, kafka.Message{Key: []byte(ten), Value: []byte(fmt.Sprintf(`{"n":%d}`, i))})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	after := time.Now().Add(time.Second)

	landed := map[string]map[int]bool{}
	count := map[int]int64{}
	for _, m := range servicetest.ReadTopic(t, k.Brokers, k.RawTopic) {
		if landed[string(m.Key)] == nil {
			landed[string(m.Key)] = map[int]bool{}
		}
		landed[string(m.Key)][m.Partition] = true
		count[m.Partition]++
	}
	for _, ten := range tenants {
		if len(landed[ten]) != 1 || !landed[ten][topic.KeyPartition([]byte(ten), 6)] {
			t.Errorf("%s landed in partitions %v, KeyPartition says %d", ten, landed[ten], topic.KeyPartition([]byte(ten), 6))
		}
	}

	h, err := topic.HorizonOf(ctx, k.Brokers, k.RawTopic, []byte("acme"))
	if err != nil {
		t.Fatal(err)
	}
	p := topic.KeyPartition([]byte("acme"), 6)
	if !h.Exists || h.Partitions != 6 || h.Partition != p || len(h.Retained) != 1 || h.Retained[0].Partition != p {
		t.Fatalf("horizon %+v, want partition %d of 6", h, p)
	}
	r := h.Retained[0]
	if r.First != 0 || r.Next != count[p] {
		t.Errorf("retained offsets [%d, %d), want [0, %d)", r.First, r.Next, count[p])
	}
	if r.Oldest.Before(before) || r.Oldest.After(after) || r.Newest.Before(r.Oldest) || r.Newest.After(after) {
		t.Errorf("record times %v .. %v, written between %v and %v", r.Oldest, r.Newest, before, after)
	}
	if h.Retention != 168*time.Hour || !h.TopicLevel || h.Segment != time.Hour || h.CheckInterval <= 0 || h.DeleteDelay < 0 {
		t.Errorf("retention %s (topic-level %v), segment %s, check %s, delete delay %s", h.Retention, h.TopicLevel, h.Segment, h.CheckInterval, h.DeleteDelay)
	}
	if want := r.Newest.Add(h.Retention + h.Segment + h.CheckInterval + h.DeleteDelay); !h.GoneBy.Equal(want) {
		t.Errorf("gone by %v, want %v", h.GoneBy, want)
	}
	if h.GoneBy.Before(before.Add(168*time.Hour)) || h.GoneBy.After(after.Add(170*time.Hour)) {
		t.Errorf("gone by %v is not about a week and an hour from now", h.GoneBy)
	}

	// Not keyed by what we look for: every partition, the horizon of the newest.
	all, err := topic.HorizonOf(ctx, k.Brokers, k.RawTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	if all.Partition != -1 || len(all.Retained) != 6 {
		t.Errorf("keyless horizon %+v", all)
	}
	// The empty DLQ topic holds nothing; a missing topic is not an error.
	if d, err := topic.HorizonOf(ctx, k.Brokers, k.DLQTopic, nil); err != nil || !d.Exists || !d.GoneBy.IsZero() || d.Retention != 720*time.Hour {
		t.Errorf("empty DLQ: %+v %v", d, err)
	}
	if m, err := topic.HorizonOf(ctx, k.Brokers, servicetest.Name(t, "missing."), []byte("acme")); err != nil || m.Exists {
		t.Errorf("missing topic: %+v %v", m, err)
	}
}

// Three replicas and more get min.insync.replicas=2 (without touching the spec passed in or
// overriding a value of its own); fewer keep the broker's default.
func TestDurableAtThreeReplicas(t *testing.T) {
	base := topic.Spec{Name: "usage.raw", Partitions: 6, ReplicationFactor: 3, Config: map[string]string{topic.RetentionMs: "1000"}}
	got := topic.Durable(base)
	if got.Config[topic.MinInsyncReplicas] != "2" || got.Config[topic.RetentionMs] != "1000" {
		t.Errorf("RF 3: %v", got.Config)
	}
	if _, ok := base.Config[topic.MinInsyncReplicas]; ok {
		t.Error("Durable changed the spec it was given")
	}
	for _, rf := range []int{1, 2} {
		s := base
		s.ReplicationFactor = rf
		if _, ok := topic.Durable(s).Config[topic.MinInsyncReplicas]; ok {
			t.Errorf("RF %d: min.insync.replicas set", rf)
		}
	}
	own := base
	own.Config = map[string]string{topic.MinInsyncReplicas: "3"}
	if v := topic.Durable(own).Config[topic.MinInsyncReplicas]; v != "3" {
		t.Errorf("a spec's own min.insync.replicas overridden: %s", v)
	}
}
