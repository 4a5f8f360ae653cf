package topic_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
	k.RawPartitions, k.DLQPartitions = 4, 2
	t.Cleanup(func() { _ = topic.Delete(context.Background(), k.Brokers, k.RawTopic, k.DLQTopic) })

	first, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{k.RawTopic: 4, k.DLQTopic: 2}
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
	if len(specs) != 2 || specs[0].Name != "usage.raw" || specs[0].Partitions != 6 || specs[1].Name != "usage.dlq" || specs[1].Partitions != 3 {
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
	k.RawTopic, k.DLQTopic = servicetest.Name(t, "raw."), servicetest.Name(t, "dlq.")
	k.RawPartitions, k.DLQPartitions = 2, 1
	t.Cleanup(func() { _ = topic.Delete(context.Background(), k.Brokers, k.RawTopic, k.DLQTopic) })
	if _, err := topic.Ensure(ctx, k.Brokers, topic.Specs(k)); err != nil {
		t.Fatal(err)
	}
	if err := topic.Delete(ctx, k.Brokers, k.RawTopic, k.DLQTopic); err != nil {
		t.Fatal(err)
	}
	if err := topic.WaitGone(ctx, k.Brokers, []string{k.RawTopic, k.DLQTopic}, time.Minute); err != nil {
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
