package topic

import (
	"context"
	"errors"
	"time"

	"github.com/segmentio/kafka-go"
)

// TransientWithin is how long a read of offsets or records asks again after a transient answer.
const TransientWithin = 15 * time.Second

// RetryTransient calls f until it succeeds or fails with anything but a Kafka error the
// protocol calls retriable (kafka.Error.Temporary: a partition whose leader is being elected
// just after the topic was created or a broker restarted, a broker whose metadata are out of
// date), every 300 ms for up to within; then it returns the last error. A read that fails
// because the cluster is changing under it is asked again, not reported as a broken topic.
func RetryTransient[T any](ctx context.Context, within time.Duration, f func() (T, error)) (T, error) {
	deadline := time.Now().Add(within)
	for {
		out, err := f()
		var ke kafka.Error
		if err == nil || !errors.As(err, &ke) || !ke.Temporary() || time.Now().After(deadline) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return out, errors.Join(err, ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}
