package group

import (
	"context"
	"testing"
	"time"
)

// The group loop itself runs in every processor and aggregator integration test; here, the
// backoff's arithmetic.
func TestBackoffDoublesUpToItsMaximumAndStopsOnCancel(t *testing.T) {
	b := NewBackoff(400 * time.Millisecond)
	var seen []time.Duration
	for range 4 {
		seen = append(seen, b.cur)
		b.cur = min(2*b.cur, b.max) // what Wait does after sleeping
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("delays %v, want %v", seen, want)
		}
	}
	b.Reset()
	if b.cur != 100*time.Millisecond {
		t.Fatalf("Reset left %v", b.cur)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b = NewBackoff(time.Hour)
	b.cur = time.Hour
	if b.Wait(ctx) {
		t.Fatal("Wait on a cancelled context reported true")
	}
	if !NewBackoff(time.Second).Wait(context.Background()) {
		t.Fatal("Wait without cancellation reported false")
	}
}
