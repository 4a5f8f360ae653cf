package processor

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// Four readers put 50,000 messages each through an inbox of 64 while the decider takes them
// in uneven amounts: every message arrives once, each reader's in its order, and the inbox
// never holds more than its bound.
func TestInboxDeliversEveryMessageInOrderWithinItsBound(t *testing.T) {
	const readers, each, bound = 4, 50_000, 64
	in := newInbox(bound)
	ctx := context.Background()
	var wg sync.WaitGroup
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if !in.put(ctx, fetched{msg: kafka.Message{Partition: r, Offset: int64(i)}}) {
					t.Error("put refused with ctx alive")
					return
				}
			}
		}()
	}
	next := make([]int64, readers)
	var got []kafka.Message
	for n, limit := 0, 1; n < readers*each; limit = limit%100 + 7 {
		in.mu.Lock()
		held := len(in.buf)
		in.mu.Unlock()
		if held > bound {
			t.Fatalf("the inbox holds %d messages, bound %d", held, bound)
		}
		var err error
		if got, err = in.take(ctx, got[:0], limit, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || len(got) > limit {
			t.Fatalf("took %d messages, limit %d", len(got), limit)
		}
		for _, m := range got {
			if m.Offset != next[m.Partition] {
				t.Fatalf("reader %d: got offset %d, want %d", m.Partition, m.Offset, next[m.Partition])
			}
			next[m.Partition]++
		}
		n += len(got)
	}
	wg.Wait()
	for r, n := range next {
		if n != each {
			t.Errorf("reader %d: %d of %d messages arrived", r, n, each)
		}
	}
}

// A read error comes after the messages read before it; a take with a deadline and nothing
// waiting returns when the deadline passes; a full inbox holds a reader until ctx ends.
func TestInboxErrorsDeadlinesAndCancel(t *testing.T) {
	ctx := context.Background()
	in := newInbox(3)
	boom := errors.New("boom")
	in.put(ctx, fetched{msg: kafka.Message{Offset: 1}})
	in.put(ctx, fetched{err: boom})
	in.put(ctx, fetched{msg: kafka.Message{Offset: 2}})
	got, err := in.take(ctx, nil, 10, time.Time{})
	if !errors.Is(err, boom) || len(got) != 1 || got[0].Offset != 1 {
		t.Errorf("take = %v, %v; want the message before the error, then the error", got, err)
	}
	got, _ = in.take(ctx, nil, 10, time.Time{})
	if len(got) != 1 || got[0].Offset != 2 {
		t.Errorf("after the error: %v", got)
	}

	start := time.Now()
	got, err = in.take(ctx, nil, 10, start.Add(50*time.Millisecond))
	if len(got) != 0 || err != nil || time.Since(start) < 50*time.Millisecond {
		t.Errorf("an empty take returned %v, %v after %v, before its deadline", got, err, time.Since(start))
	}

	for i := range 3 {
		in.put(ctx, fetched{msg: kafka.Message{Offset: int64(i)}})
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan bool)
	go func() { done <- in.put(cctx, fetched{}) }()
	select {
	case <-done:
		t.Fatal("put into a full inbox did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if <-done {
		t.Error("put into a full inbox reported success after ctx ended")
	}
}
