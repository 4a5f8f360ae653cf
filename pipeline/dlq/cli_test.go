package dlq

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/config"
)

// The commands' arguments are checked before any broker is asked: a bad key, dimension or
// look-back fails as its parser says, and nothing is written.
func TestCommandArgumentsFailBeforeKafka(t *testing.T) {
	ctx := context.Background()
	src := Source{Brokers: []string{"127.0.0.1:1"}, Topic: "usage.dlq"}
	var b strings.Builder
	_, want := ParseKey("not-a-key")
	if err := Show(ctx, &b, src, "not-a-key"); err == nil || err.Error() != want.Error() {
		t.Errorf("Show: %v, want %v", err, want)
	}
	_, want = ParseBy("reason,colour")
	if err := StatsTo(ctx, &b, src, "reason,colour", "", false); err == nil || err.Error() != want.Error() {
		t.Errorf("StatsTo --by: %v, want %v", err, want)
	}
	_, want = ParseSince("yesterday-ish", time.Now())
	if err := StatsTo(ctx, &b, src, DefaultBy, "yesterday-ish", true); err == nil || err.Error() != want.Error() {
		t.Errorf("StatsTo --since: %v, want %v", err, want)
	}
	cfg := config.Default()
	cfg.ClickHouse.Addr, cfg.Kafka.Brokers = []string{"127.0.0.1:1"}, src.Brokers
	if err := ReplayConfigured(ctx, &b, cfg, nil, ReplayOptions{}, "yesterday-ish", false); err == nil || err.Error() != want.Error() {
		t.Errorf("ReplayConfigured --since: %v, want %v", err, want)
	}
	if b.Len() != 0 {
		t.Errorf("wrote %q", b.String())
	}
}

// SourceOf is the configured DLQ topic on the configured brokers.
func TestSourceOf(t *testing.T) {
	k := config.Default().Kafka
	k.Brokers, k.DLQTopic = []string{"b1:9092", "b2:9092"}, "x.dlq"
	if s := SourceOf(k); strings.Join(s.Brokers, ",") != "b1:9092,b2:9092" || s.Topic != "x.dlq" || s.Stall != 0 {
		t.Errorf("%+v", s)
	}
}
