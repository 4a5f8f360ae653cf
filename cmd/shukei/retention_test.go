package main

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/topic"
)

// 'shukei topics' sets the configured retention and corrects a topic that differs, saying so;
// 'shukei retention verify --tenant T' tells the tenant's partition of the raw topic and when
// Kafka will have aged its records out, and that Kafka cannot delete them one tenant at a time;
// 'shukei retention run' reports the aggregator state it deleted.
func TestTopicsRetentionAndVerifyHorizon(t *testing.T) {
	raw, dlq := ownServices(t)
	if out, err := runCLI(t, "migrate"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := runCLI(t, "topics", "--kafka.raw_retention=72h")
	if err != nil || !strings.Contains(out, "created  "+raw+" (6 partitions), retention.ms 259200000 (72h0m0s)") ||
		!strings.Contains(out, "created  "+dlq+" (3 partitions), retention.ms 2592000000 (720h0m0s)") {
		t.Fatalf("topics: %v\n%s", err, out)
	}
	// The retention of the raw topic as configured by default now differs: verify says so.
	cfg := config.Default()
	if err := cfg.ApplyEnv(os.Environ()); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(cfg.Kafka.Brokers...), Topic: raw, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	before := time.Now().UTC().Add(-time.Second)
	if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte("acme"), Value: []byte(`{}`)}, kafka.Message{Key: []byte("acme"), Value: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	out, err = runCLI(t, "retention", "verify", "--tenant", "acme")
	t.Logf("shukei retention verify --tenant acme:\n%s", out)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	part := topic.KeyPartition([]byte("acme"), 6)
	for _, want := range []string{
		"0 rows of acme left in",
		"kafka raw topic " + raw + ": records of acme are in partition " + strconv.Itoa(part) + " of 6",
		"retention.ms   259200000 (72h0m0s); configured 168h0m0s: run 'shukei topics'; segment.ms 3600000 (1h0m0s)",
		"oldest record  partition " + strconv.Itoa(part) + " offset 0 at ",
		"newest record  partition " + strconv.Itoa(part) + " offset 1 at ",
		"kafka dlq topic " + dlq + ": records of acme may be in any of its 3 partitions",
		"retained       nothing",
		"Kafka cannot delete one tenant's records",
		"at the latest  ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify does not say %q:\n%s", want, out)
		}
	}
	m := regexp.MustCompile(`gone by        (\S+): every record written for acme up to now`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("verify gives no horizon:\n%s", out)
	}
	gone, err := time.Parse(time.RFC3339, m[1])
	if err != nil || gone.Before(before.Add(73*time.Hour)) || gone.After(time.Now().Add(74*time.Hour)) {
		t.Errorf("gone by %v (%v): want 72h + 1h segment + check interval after the writes", gone, err)
	}

	// 'topics' with the default retention corrects the raw topic and says so.
	out, err = runCLI(t, "topics")
	if err != nil || !strings.Contains(out, "exists   "+raw+" (6 partitions), retention.ms 604800000 (168h0m0s)") ||
		!strings.Contains(out, raw+": set retention.ms 259200000 -> 604800000 (it differed from the configuration)") || strings.Contains(out, dlq+": set") {
		t.Errorf("topics again: %v\n%s", err, out)
	}

	// Partials of a window released long ago are deleted by the run, and reported.
	conn, err := ops.OpenClickHouse(context.Background(), cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	db := cfg.ClickHouse.Database
	ws := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	b, err := conn.PrepareBatch(context.Background(), "INSERT INTO "+db+"_aggregator.aggregate_state (kind, plan_hash, partition, window_start, window_end, metric, cell, tenants, state, closed_through, resume_offset, high_offset, at)")
	if err != nil {
		t.Fatal(err)
	}
	for p := range uint32(3) {
		if err := b.Append("partial", "p1", p, ws, ws.AddDate(0, 0, 1), "feature_adoption", "x", uint32(5), "", ws.AddDate(0, 0, 1), int64(0), int64(0), ws.AddDate(0, 0, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	rb, err := conn.PrepareBatch(context.Background(), "INSERT INTO "+db+"_external_aggregate.releases (release_id, plan_hash, window_start, window_end, metric, dims, value, released_at)")
	if err != nil {
		t.Fatal(err)
	}
	if err := rb.Append("r1", "p1", ws, ws.AddDate(0, 0, 1), "feature_adoption", "x", int64(4), ws.AddDate(0, 0, 1).Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := rb.Send(); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "retention", "run")
	if err != nil || !strings.Contains(out, "deleted 3 partial aggregates of window 2026-01-05T00:00:00Z/2026-01-06T00:00:00Z (plan p1, released 2026-01-06T03:00:00Z)") ||
		!strings.Contains(out, "aggregate_state: 3 rows deleted") {
		t.Errorf("retention run: %v\n%s", err, out)
	}
}
