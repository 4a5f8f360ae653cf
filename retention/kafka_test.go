package retention_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/pipeline/topic"
	"github.com/shukei/shukei/retention"
)

// The Kafka horizon of a tenant: the raw topic's partition its events really went to (written
// as the collector writes them, Murmur2 on the tenant id), the DLQ's partitions (keyed by source
// position, the tenant in a header), plausible record times, the configured retention, and
// when everything written so far is gone.
func TestTopicHorizonsOfTenant(t *testing.T) {
	cfg := servicetest.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := cfg.Kafka
	k.RawTopic, k.DLQTopic = servicetest.Name(t, "raw."), servicetest.Name(t, "dlq.")
	k.RawPartitions, k.DLQPartitions = 6, 2
	k.RawRetention, k.DLQRetention = 72*time.Hour, 240*time.Hour
	t.Cleanup(func() { _ = topic.Delete(context.Background(), k.Brokers, k.RawTopic, k.DLQTopic) })
	if _, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k)); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	raw := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: k.RawTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	var msgs []kafka.Message
	for i := range 30 {
		ten := []string{"acme", "globex", "initech"}[i%3]
		msgs = append(msgs, kafka.Message{Key: []byte(ten), Value: []byte(`{}`)})
	}
	if err := raw.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	dlq := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: k.DLQTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	if err := dlq.WriteMessages(ctx, kafka.Message{Key: []byte(k.RawTopic + "/0/3"), Headers: []kafka.Header{{Key: "tenant_id", Value: []byte("acme")}}}); err != nil {
		t.Fatal(err)
	}
	dlq.Close()
	after := time.Now().Add(time.Second)

	acme := -1
	perPartition := map[int]int64{}
	for _, m := range servicetest.ReadTopic(t, k.Brokers, k.RawTopic) {
		if string(m.Key) == "acme" {
			acme = m.Partition
		}
		perPartition[m.Partition]++
	}
	hs, err := retention.TopicHorizons(ctx, k, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].Role != "raw" || hs[1].Role != "dlq" {
		t.Fatalf("horizons %+v", hs)
	}
	r, d := hs[0], hs[1]
	if !r.Keyed || r.Partition != acme || r.Partitions != 6 || len(r.Retained) != 1 || r.Retained[0].Next != perPartition[acme] {
		t.Errorf("raw horizon %+v, want partition %d (where acme's events are, %d records) of 6", r.Horizon, acme, perPartition[acme])
	}
	if r.Retention != 72*time.Hour || r.Configured != "259200000" || !r.TopicLevel {
		t.Errorf("raw retention %s (configured %s, topic-level %v), want 72h", r.Retention, r.Configured, r.TopicLevel)
	}
	o, _ := r.Oldest()
	if o.Oldest.Before(before) || o.Oldest.After(after) {
		t.Errorf("oldest raw record at %v, written between %v and %v", o.Oldest, before, after)
	}
	if r.GoneBy.Before(before.Add(72*time.Hour)) || r.GoneBy.After(after.Add(72*time.Hour+time.Hour+r.CheckInterval+r.DeleteDelay)) {
		t.Errorf("raw gone by %v: not 72h and at most an hour and the check interval after the writes", r.GoneBy)
	}
	if d.Keyed || d.Partition != -1 || len(d.Retained) != 2 || d.Retention != 240*time.Hour {
		t.Errorf("DLQ horizon %+v, want every one of 2 partitions, 240h", d.Horizon)
	}
	if n, ok := d.Newest(); !ok || n.Newest.Before(before) || n.Newest.After(after) || !d.GoneBy.Equal(n.Newest.Add(240*time.Hour+d.Segment+d.CheckInterval+d.DeleteDelay)) {
		t.Errorf("DLQ newest %+v, gone by %v", n, d.GoneBy)
	}
}
