package bench

import (
	"context"
	"testing"
	"time"
)

// The rate is taken while there was a backlog: a final write that waited for its batch's
// timeout after the input ran out must not count as throughput.
func TestWaitRateOfLeavesOutTheFinalWait(t *testing.T) {
	start := time.Now()
	count := func() (uint64, error) {
		switch e := time.Since(start); {
		case e < 100*time.Millisecond:
			return 0, nil
		case e < 300*time.Millisecond:
			return 1000, nil
		case e < 500*time.Millisecond:
			return 2000, nil
		case e < 1500*time.Millisecond: // the input ran out; the last batch waits for its timeout
			return 3000, nil
		default:
			return 3500, nil
		}
	}
	rate, err := waitRateOf(context.Background(), count, 3500, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// 2,000 rows from the first write (0.1 s) to the last but one (0.5 s): 5,000 a second.
	// From the first to the last it would be 2,500 in 1.4 s, 1,786 a second.
	if rate < 4000 || rate > 6000 {
		t.Fatalf("rate %.0f rows/s, want about 5,000", rate)
	}

	// Two writes only: the rate runs to the last.
	start = time.Now()
	two := func() (uint64, error) {
		switch e := time.Since(start); {
		case e < 100*time.Millisecond:
			return 0, nil
		case e < 600*time.Millisecond:
			return 1000, nil
		default:
			return 2000, nil
		}
	}
	rate, err = waitRateOf(context.Background(), two, 2000, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rate < 1600 || rate > 2400 {
		t.Fatalf("rate %.0f rows/s with two writes, want about 2,000", rate)
	}
}
