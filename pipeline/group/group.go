// Package group runs a Kafka consumer group the way Shukei's stages need it: join, hand each
// generation (one assignment of partitions) to the stage until a rebalance or shutdown ends it,
// rejoin with backoff when joining fails. The processor and the aggregator are both consumer
// groups on the raw topic and differ only in what a generation does.
package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/ops"
)

// Config names the group and its topic.
type Config struct {
	ID      string
	Brokers []string
	Topic   string
	// MaxBackoff is the longest wait between attempts to join.
	MaxBackoff time.Duration
	// SessionTimeout is how long after a member's last heartbeat the coordinator gives its
	// partitions to others; 0: DefaultSessionTimeout.
	SessionTimeout time.Duration
}

// DefaultSessionTimeout is a member's session timeout unless its Config says otherwise.
const DefaultSessionTimeout = 10 * time.Second

// PartitionWatchInterval is how often each member checks the topic for added partitions.
const PartitionWatchInterval = 5 * time.Second

// Hooks report what happens, for metrics and logs. Any may be nil.
type Hooks struct {
	JoinFailed func(err error)
	Assigned   func(generation int32, partitions []int)
	Ended      func(err error) // a generation ended with an error (the group rejoins)
}

// Counter and Gauge are what StandardHooks records into (Prometheus metrics fit).
type (
	Counter interface{ Inc() }
	Gauge   interface{ Set(float64) }
)

// StandardHooks logs a role's group events and counts them: join failures into joinErrors, the
// number of partitions held into assigned.
func StandardHooks(role string, log *slog.Logger, joinErrors Counter, assigned Gauge) Hooks {
	return Hooks{
		JoinFailed: func(err error) {
			joinErrors.Inc()
			log.Warn("joining the "+role+" group failed; retrying", "err", err)
		},
		Assigned: func(gen int32, parts []int) {
			assigned.Set(float64(len(parts)))
			log.Info(role+" partitions assigned", "generation", gen, "partitions", len(parts))
		},
		Ended: func(err error) { log.Warn(role+" generation ended with an error; rejoining", "err", err) },
	}
}

// Generation processes one assignment until ctx ends (a rebalance or shutdown).
type Generation func(ctx context.Context, gen *kafka.Generation, partitions []int) error

// Run joins the group and runs each generation until ctx ends; it returns nil on shutdown.
func Run(ctx context.Context, c Config, h Hooks, run Generation) error {
	session := c.SessionTimeout
	if session == 0 {
		session = DefaultSessionTimeout
	}
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                c.ID,
		Brokers:           c.Brokers,
		Topics:            []string{c.Topic},
		StartOffset:       kafka.FirstOffset,
		SessionTimeout:    session,
		RebalanceTimeout:  30 * time.Second,
		HeartbeatInterval: time.Second,
		JoinGroupBackoff:  time.Second,
		Timeout:           10 * time.Second,
		// Partitions added to the live topic end the generation within PartitionWatchInterval,
		// and the group rejoins with them assigned: without it they would be read by nobody
		// until some member restarts.
		WatchPartitionChanges:  true,
		PartitionWatchInterval: PartitionWatchInterval,
	})
	if err != nil {
		return fmt.Errorf("consumer group %s: %w", c.ID, err)
	}
	defer cg.Close()
	b := NewBackoff(c.MaxBackoff)
	for {
		gen, err := cg.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if h.JoinFailed != nil {
				h.JoinFailed(err)
			}
			if !b.Wait(ctx) {
				return nil
			}
			continue
		}
		b.Reset()
		assigned := gen.Assignments[c.Topic]
		parts := make([]int, len(assigned))
		for i, a := range assigned {
			parts[i] = a.ID
		}
		if h.Assigned != nil {
			h.Assigned(gen.ID, parts)
		}
		done := make(chan struct{})
		gen.Start(func(gctx context.Context) {
			defer close(done)
			// The generation ends on a rebalance (gctx) or on shutdown (ctx), whichever first.
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stop := context.AfterFunc(gctx, cancel)
			defer stop()
			if err := run(rctx, gen, parts); err != nil && rctx.Err() == nil && h.Ended != nil {
				h.Ended(err)
			}
		})
		select {
		case <-done:
		case <-ctx.Done():
			<-done
			return nil
		}
	}
}

// Backoff is exponential backoff with jitter, from 100ms up to a maximum.
type Backoff struct{ cur, max time.Duration }

// NewBackoff starts at 100ms.
func NewBackoff(maxWait time.Duration) *Backoff {
	return &Backoff{cur: 100 * time.Millisecond, max: maxWait}
}

// Reset goes back to 100ms after a success.
func (b *Backoff) Reset() { b.cur = 100 * time.Millisecond }

// Wait sleeps for the current delay (plus up to half of it), doubles it, and reports false if
// ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	d := b.cur + time.Duration(rand.Int64N(int64(b.cur)/2+1))
	b.cur = min(2*b.cur, b.max)
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// ErrText is an error's text for a log line, cut at 512 bytes: a client may put every message
// of a failed batch into its error (kafka-go's WriteErrors), and one such line per retry would
// flood the log.
func ErrText(err error) string {
	s := err.Error()
	if len(s) > 512 {
		s = s[:512] + fmt.Sprintf("… (%d bytes more)", len(s)-512)
	}
	return s
}

// retryStale runs fn, and again at once, up to three more times, while it fails on a
// connection the server dropped (EOF, reset) rather than one it refused: after a server
// restarted, a pool still holds connections to its old process, each failing once before it
// is discarded, and backing off on each (doubling up to the maximum) would keep a role idle
// long after the server is back. A refused dial (the server still down) is backed off at once.
func retryStale(fn func() error) error {
	err := fn()
	for i := 0; i < 3 && ops.Unreachable(err) && !errors.Is(err, syscall.ECONNREFUSED); i++ {
		err = fn()
	}
	return err
}

// Retry runs fn until it succeeds or ctx ends, calling failed after each failure and waiting
// with backoff before the next attempt: backpressure, not loss. It returns nil on success and
// ctx's error when ctx ended first.
func Retry(ctx context.Context, maxWait time.Duration, fn func() error, failed func(err error)) error {
	b := NewBackoff(maxWait)
	for {
		err := retryStale(fn)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failed(err)
		if !b.Wait(ctx) {
			return ctx.Err()
		}
	}
}
