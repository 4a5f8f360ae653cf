package topic

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// A read that meets a partition whose leader is being elected (as just after 'shukei topics'
// created it) is asked again until it answers; anything else fails at once, and a transient
// answer that never clears fails once the time is up, with the broker's error.
func TestRetryTransient(t *testing.T) {
	ctx := context.Background()
	calls := 0
	got, err := RetryTransient(ctx, 5*time.Second, func() (int, error) {
		if calls++; calls < 3 {
			return 0, fmt.Errorf("offsets of t partition 0: %w", kafka.NotLeaderForPartition)
		}
		return 42, nil
	})
	if err != nil || got != 42 || calls != 3 {
		t.Errorf("after two 'not leader' answers: %d, %v after %d calls; want 42 after 3", got, err, calls)
	}

	calls = 0
	_, err = RetryTransient(ctx, 5*time.Second, func() (int, error) {
		calls++
		return 0, fmt.Errorf("offsets of t partition 0: %w", kafka.TopicAuthorizationFailed)
	})
	if !errors.Is(err, kafka.TopicAuthorizationFailed) || calls != 1 {
		t.Errorf("a lasting refusal: %v after %d calls; want it at once", err, calls)
	}

	calls = 0
	_, err = RetryTransient(ctx, 0, func() (int, error) { calls++; return 0, errors.New("connection refused") })
	if err == nil || calls != 1 {
		t.Errorf("an error that is not Kafka's: %v after %d calls; want it at once", err, calls)
	}

	calls = 0
	start := time.Now()
	_, err = RetryTransient(ctx, 700*time.Millisecond, func() (int, error) { calls++; return 0, kafka.LeaderNotAvailable })
	if !errors.Is(err, kafka.LeaderNotAvailable) || calls < 2 || time.Since(start) < 700*time.Millisecond {
		t.Errorf("a leader that never comes: %v after %d calls in %v; want the broker's error after the time given", err, calls, time.Since(start))
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = RetryTransient(cctx, time.Minute, func() (int, error) { return 0, kafka.NotLeaderForPartition })
	if !errors.Is(err, context.Canceled) || !errors.Is(err, kafka.NotLeaderForPartition) {
		t.Errorf("a cancelled caller: %v; want both the cancellation and the broker's error", err)
	}
}
