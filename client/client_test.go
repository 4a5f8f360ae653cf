package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/pipeline/collector"
)

const token = "tok-client-test"

// realCollector runs the collector on loopback in front of the real broker and returns its URL
// and the topic it writes.
func realCollector(t *testing.T) (string, []string, string) {
	t.Helper()
	cfg := servicetest.Kafka(t)
	cfg.Kafka.RawTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 2)
	cfg.Collector.IngestTokens = []string{collector.TokenHash("acme", token)}
	w := collector.NewKafkaWriter(cfg.Kafka, cfg.Collector)
	t.Cleanup(func() { _ = w.Close() })
	c, err := collector.New(cfg, collector.Deps{Writer: w, Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String(), cfg.Kafka.Brokers, cfg.Kafka.RawTopic
}

// faultyNetwork sits between the SDK and the collector. fault(n) decides what happens to the
// n-th request: "" passes it, "503" answers 503 without forwarding, "lose" forwards it (the
// collector and Kafka take it) but answers 502, as if the reply was lost on the way back.
func faultyNetwork(t *testing.T, target string, fault func(n int) string) (*httptest.Server, *atomic.Int32) {
	u, _ := url.Parse(target)
	proxy := httputil.NewSingleHostReverseProxy(u)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch fault(int(n.Add(1))) {
		case "503":
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case "lose":
			rec := httptest.NewRecorder()
			proxy.ServeHTTP(rec, r)
			http.Error(w, "bad gateway", http.StatusBadGateway)
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func use(feature string) event.Event {
	return event.Event{
		Envelope: event.Envelope{
			User:   "u-7",
			Client: event.Client{OS: event.OSMacOS, OSVersion: "14", DeviceKind: event.DeviceDesktop},
		},
		Data: &event.FeatureUse{FeatureID: feature, Count: 1},
	}
}

func eventIDs(t *testing.T, brokers []string, topicName string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range servicetest.ReadTopic(t, brokers, topicName) {
		var ev struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			t.Fatal(err)
		}
		out[ev.EventID]++
	}
	return out
}

func TestRetriesKeepEventIDs(t *testing.T) {
	target, brokers, topicName := realCollector(t)
	// Request 1: reply lost after Kafka took it. Request 2: busy. Then all is well.
	srv, requests := faultyNetwork(t, target, func(n int) string {
		switch n {
		case 1:
			return "lose"
		case 2:
			return "503"
		}
		return ""
	})
	c, err := New(Config{Endpoint: srv.URL, Token: token, TenantID: "acme", Source: "go-sdk-test",
		FlushAt: 100, FlushInterval: 50 * time.Millisecond, MinBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tracked := map[string]bool{}
	for i := range 250 {
		ev := use("app.record.create")
		if i%2 == 1 {
			ev.Data = &event.FeatureUse{FeatureID: "space.post.reaction", Count: 2, RecordsRegistered: 1}
		}
		ev.EventID = uuid.NewString()
		tracked[ev.EventID] = true
		if err := c.Track(ev); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Sent != 250 || st.Rejected != 0 || st.Dropped != 0 || st.Retried == 0 {
		t.Errorf("stats %+v; want 250 sent, some retried", st)
	}
	got := eventIDs(t, brokers, topicName)
	dups := 0
	for id, n := range got {
		if !tracked[id] {
			t.Errorf("kafka holds an event id the SDK never made: %s", id)
		}
		dups += n - 1
	}
	if len(got) != 250 {
		t.Errorf("kafka holds %d distinct event ids, want 250", len(got))
	}
	// The lost reply made the SDK resend a batch that Kafka already held: the copies carry the
	// same event_id, which is what lets the processor keep one.
	if dups == 0 {
		t.Errorf("no resent copies: the lost-reply fault did not happen (%d requests)", requests.Load())
	}
	t.Logf("%d requests, %d distinct events, %d resent copies with the same event_id", requests.Load(), len(got), dups)
}

func TestRejectedEventsAreNotResent(t *testing.T) {
	target, _, _ := realCollector(t)
	srv, requests := faultyNetwork(t, target, func(int) string { return "" })
	var mu sync.Mutex
	var reasons []string
	// The token speaks for acme; events naming globex are refused by the collector.
	c, err := New(Config{Endpoint: srv.URL, Token: token, TenantID: "globex", Source: "go-sdk-test",
		FlushAt: 10, FlushInterval: time.Hour, OnError: func(err error) {
			var r *Rejected
			if errors.As(err, &r) {
				mu.Lock()
				reasons = append(reasons, r.Reason)
				mu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := c.Track(use("app.record.create")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Rejected != 10 || st.Sent != 0 || st.Retried != 0 {
		t.Errorf("stats %+v", st)
	}
	if requests.Load() != 1 {
		t.Errorf("%d requests; rejected events must not be resent", requests.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reasons) != 10 || reasons[0] != collector.ReasonTenantMismatch {
		t.Errorf("reasons %v", reasons)
	}
}

func TestQueueDropsOldestWhenFull(t *testing.T) {
	c, err := New(Config{Endpoint: "http://127.0.0.1:1", Token: "x", TenantID: "acme", Source: "s",
		MaxQueue: 10, FlushAt: 1000, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 25 {
		if err := c.Track(use("app.record.create")); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		ids = append(ids, c.queue[len(c.queue)-1].id)
		c.mu.Unlock()
	}
	st := c.Stats()
	if st.Dropped != 15 || st.Queued != 10 {
		t.Fatalf("stats %+v, want 15 dropped and 10 queued", st)
	}
	c.mu.Lock()
	for i, q := range c.queue {
		if q.id != ids[15+i] {
			t.Errorf("queue[%d] is not the %dth newest event", i, 15+i)
		}
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = c.Close(ctx)
}

func TestTrackRefusesInvalidEvents(t *testing.T) {
	c, err := New(Config{Endpoint: "http://127.0.0.1:1", Token: "x", TenantID: "acme", Source: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	bad := use("Taro Yamada")
	if err := c.Track(bad); err == nil {
		t.Error("Track accepted a feature id with a space")
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New accepted an empty config")
	}
}
