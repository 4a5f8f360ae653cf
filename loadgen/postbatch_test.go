package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestPostBatchResendsPerEventRetries: a 200 reply in which Kafka took some events and not
// others ("retry") must make the sender resend exactly the others, with the same bytes, and
// count each event once.
func TestPostBatchResendsPerEventRetries(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{} // line → times posted
	refuse := map[string]bool{"e1": true, "e3": true}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		type result struct {
			Status string `json:"status"`
			Reason string `json:"reason,omitempty"`
		}
		var reply struct {
			Accepted int      `json:"accepted"`
			Rejected int      `json:"rejected"`
			Retry    int      `json:"retry"`
			Results  []result `json:"results"`
		}
		sc := bufio.NewScanner(r.Body)
		mu.Lock()
		defer mu.Unlock()
		for sc.Scan() {
			line := sc.Text()
			seen[line]++
			switch {
			case strings.Contains(line, "bad"):
				reply.Rejected++
				reply.Results = append(reply.Results, result{"rejected", "malformed_json"})
			case refuse[line] && seen[line] == 1: // Kafka refused it the first time
				reply.Retry++
				reply.Results = append(reply.Results, result{"retry", "unavailable"})
			default:
				reply.Accepted++
				reply.Results = append(reply.Results, result{Status: "accepted"})
			}
		}
		_ = json.NewEncoder(w).Encode(reply)
	}))
	defer srv.Close()
	body := []byte("e0\ne1\nbad\ne3\ne4\n")
	acc, rej, retried, err := postBatch(context.Background(), srv.Client(), srv.URL, "tok", body)
	if err != nil {
		t.Fatal(err)
	}
	if acc != 4 || rej["malformed_json"] != 1 || retried != 1 {
		t.Errorf("accepted %d, rejected %v, retried %d; want 4, 1 malformed_json, 1", acc, rej, retried)
	}
	want := map[string]int{"e0": 1, "e1": 2, "bad": 1, "e3": 2, "e4": 1}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("posted %v, want %v", seen, want)
	}
}
