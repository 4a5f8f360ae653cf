package loadgen

import (
	"strings"
	"testing"
	"time"
)

func TestStatsPrint(t *testing.T) {
	for _, c := range []struct {
		st    Stats
		where string
		want  string
	}{
		{Stats{Sent: 2000, Accepted: 2000, Elapsed: 2 * time.Second}, "Kafka",
			"sent 2000 events to Kafka in 2s (1000 events/s): accepted 2000, refused 0\n"},
		{Stats{Sent: 10, Accepted: 7, Rejected: map[string]int{"input_data.email": 2, "a": 1}, Retried: 3, Elapsed: 1500 * time.Microsecond}, "the collector",
			"sent 10 events to the collector in 2ms (6667 events/s): accepted 7, refused 3 (a 1, input_data.email 2); 3 requests retried after 503\n"},
	} {
		var b strings.Builder
		c.st.Print(&b, c.where)
		if b.String() != c.want {
			t.Errorf("got  %q\nwant %q", b.String(), c.want)
		}
	}
}
