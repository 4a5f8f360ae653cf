package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSendHTTPBatchesSpanAtMostMaxSpan: with ten days of sparse history, no request carries
// events of one tenant spanning more than Options.MaxSpan of event time (else a small tenant's
// whole history would arrive in one late batch), and every event is still sent once.
func TestSendHTTPBatchesSpanAtMostMaxSpan(t *testing.T) {
	g, err := New(Config{Tenants: 20, Seed: 4, Events: 3000, Days: 10})
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, ten := range g.Tenants() {
		tokens[ten.ID] = "tok-" + ten.ID
	}
	var mu sync.Mutex
	var widest time.Duration
	requests, events := 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var first, last time.Time
		n := 0
		sc := bufio.NewScanner(r.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			n++
			var ev struct {
				OccurredAt time.Time `json:"occurred_at"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.OccurredAt.IsZero() {
				continue
			}
			if first.IsZero() || ev.OccurredAt.Before(first) {
				first = ev.OccurredAt
			}
			if ev.OccurredAt.After(last) {
				last = ev.OccurredAt
			}
		}
		mu.Lock()
		requests++
		events += n
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer tok-") {
			t.Errorf("a request without its tenant's token: %q", r.Header.Get("Authorization"))
		}
		widest = max(widest, last.Sub(first))
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]int{"accepted": n})
	}))
	defer srv.Close()
	st, err := SendHTTP(context.Background(), srv.URL, tokens, g, Options{Batch: 500, MaxSpan: 6 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if st.Sent != 3000 || events != 3000 {
		t.Errorf("sent %d, the collector got %d events; want 3000 each", st.Sent, events)
	}
	// Within an hour the generator's events are unordered, so a batch may reach an hour back.
	if widest > 7*time.Hour {
		t.Errorf("a batch spans %s of event time, want ≤ MaxSpan (6h) + the hour's disorder", widest)
	}
	if requests > 3000/2 {
		t.Errorf("%d requests for 3,000 events: batches should still hold several events", requests)
	}
}
