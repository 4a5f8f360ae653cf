package processor

import (
	"context"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// inbox hands messages from the partition readers to the decider in bulk. A reader appends
// each message under a lock; the decider takes everything waiting at once. A channel would cost
// a select on each side of every message (about 8% of the processor's CPU, profiled under
// make bench); here a message costs a lock, and a channel is touched once per hand-off.
//
// It holds at most max messages: a reader waits for room, so a slow ClickHouse stops reading
// (backpressure, not buffering). A read error is delivered in order, after the messages read
// before it.
type inbox struct {
	mu    sync.Mutex
	buf   []fetched
	max   int
	ready chan struct{} // a token when buf went from empty to not
	room  chan struct{} // a token when the decider took from a full buf
}

func newInbox(max int) *inbox {
	return &inbox{max: max, buf: make([]fetched, 0, max), ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// put adds f, waiting while the inbox is full; false when ctx ended first.
func (b *inbox) put(ctx context.Context, f fetched) bool {
	waited := false
	b.mu.Lock()
	for len(b.buf) >= b.max {
		b.mu.Unlock()
		select {
		case <-b.room:
		case <-ctx.Done():
			return false
		}
		waited = true
		b.mu.Lock()
	}
	b.buf = append(b.buf, f)
	first, more := len(b.buf) == 1, len(b.buf) < b.max
	b.mu.Unlock()
	if first {
		signal(b.ready)
	}
	if waited && more {
		signal(b.room) // the next reader waiting for room (a spare token only costs a recheck)
	}
	return true
}

// take appends up to limit waiting messages to dst. With none waiting it waits until one
// arrives, the deadline (if not zero) passes or ctx ends. A read error among them is returned
// once the messages before it are in dst.
func (b *inbox) take(ctx context.Context, dst []kafka.Message, limit int, deadline time.Time) ([]kafka.Message, error) {
	var expired <-chan time.Time
	for {
		b.mu.Lock()
		if n := min(limit, len(b.buf)); n > 0 {
			wasFull := len(b.buf) >= b.max
			var err error
			for i := range n {
				if err = b.buf[i].err; err != nil {
					n = i + 1
					break
				}
				dst = append(dst, b.buf[i].msg)
			}
			rest := copy(b.buf, b.buf[n:])
			clear(b.buf[rest:])
			b.buf = b.buf[:rest]
			b.mu.Unlock()
			if wasFull {
				signal(b.room)
			}
			return dst, err
		}
		b.mu.Unlock()
		if expired == nil && !deadline.IsZero() {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-b.ready:
		case <-expired:
			return dst, nil
		case <-ctx.Done():
			return dst, nil
		}
	}
}

// signal leaves a token on c unless one is there.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
