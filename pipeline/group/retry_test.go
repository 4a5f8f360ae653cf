package group

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
)

// A connection the server dropped is tried again at once (the pool's next one may be fresh); a
// refused dial or the server's own error is returned for the backoff.
func TestRetryStale(t *testing.T) {
	stale := fmt.Errorf("inserts of earlier generations: query processing: failed to read first block packet from 127.0.0.1:19101 (conn_id=1): %w", io.EOF)
	own := errors.New("code: 60, table does not exist")
	for _, c := range []struct {
		name      string
		errs      []error
		wantCalls int
		wantErr   error
	}{
		{"stale twice, then fresh", []error{stale, stale, nil}, 3, nil},
		{"stale four times", []error{stale, stale, stale, stale, nil}, 4, stale},
		{"refused: the server is down", []error{fmt.Errorf("dial tcp 127.0.0.1:19103: connect: %w", syscall.ECONNREFUSED), nil}, 1, syscall.ECONNREFUSED},
		{"the server's own error", []error{own, nil}, 1, own},
	} {
		calls := 0
		err := retryStale(func() error { calls++; return c.errs[calls-1] })
		if calls != c.wantCalls || (c.wantErr == nil && err != nil) || (c.wantErr != nil && !errors.Is(err, c.wantErr)) {
			t.Errorf("%s: %d calls, error %v; want %d calls", c.name, calls, err, c.wantCalls)
		}
	}
}
