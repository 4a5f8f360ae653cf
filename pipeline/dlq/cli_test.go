package dlq

import (
	"context"
	"strings"
	"testing"
	"time"
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
	if b.Len() != 0 {
		t.Errorf("wrote %q", b.String())
	}
}
