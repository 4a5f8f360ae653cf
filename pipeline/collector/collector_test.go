package collector

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
)

const testToken = "tok-acme-0123456789abcdef"

var testNow = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// harness runs a collector on loopback in front of the real broker.
type harness struct {
	url   string
	c     *Collector
	reg   *prometheus.Registry
	topic string
	cfg   config.Config
}

func start(t *testing.T, mutate func(*config.Config)) *harness {
	t.Helper()
	return startWithClock(t, mutate, func() time.Time { return testNow })
}

// startWithClock sets the collector's clock before it serves, so no request can race the change.
func startWithClock(t *testing.T, mutate func(*config.Config), clock func() time.Time) *harness {
	t.Helper()
	cfg := servicetest.Kafka(t)
	cfg.Kafka.RawTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 3)
	cfg.Collector.IngestTokens = []string{TokenHash("acme", testToken), TokenHash("globex", "tok-globex")}
	cfg.Collector.Listen = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	w := NewKafkaWriter(cfg.Kafka, cfg.Collector)
	t.Cleanup(func() { _ = w.Close() })
	reg := prometheus.NewRegistry()
	c, err := New(cfg, Deps{Writer: w, Registry: reg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: clock})
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &harness{url: "http://" + ln.Addr().String(), c: c, reg: reg, topic: cfg.Kafka.RawTopic, cfg: cfg}
}

func featureUse(tenant, feature string) map[string]any {
	return map[string]any{
		"event_id":    uuid.NewString(),
		"tenant_id":   tenant,
		"occurred_at": testNow.Add(-time.Minute).Format(time.RFC3339),
		"schema":      "feature_use/v1",
		"source":      "web-app",
		"user":        "u-1042",
		"client":      map[string]any{"os": "windows", "os_version": "11", "device_kind": "desktop"},
		"data":        map[string]any{"feature_id": feature, "count": 3, "records_registered": 1},
	}
}

func post(t *testing.T, url, token string, body []byte, headers ...string) (*http.Response, Reply) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/events", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply Reply
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusServiceUnavailable && bytes.Contains(b, []byte(`"results"`)) {
		if err := json.Unmarshal(b, &reply); err != nil {
			t.Fatalf("reply %s: %v", b, err)
		}
	}
	return resp, reply
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readAll(t *testing.T, brokers []string, topicName string, want int) []kafka.Message {
	t.Helper()
	out := servicetest.ReadTopic(t, brokers, topicName)
	if len(out) != want {
		t.Errorf("topic holds %d messages, want %d", len(out), want)
	}
	return out
}

func TestMixedBatchOnRealBroker(t *testing.T) {
	h := start(t, nil)
	good1 := featureUse("acme", "app.record.create")
	good2 := featureUse("acme", "space.post.reaction")
	email := featureUse("acme", "app.record.create")
	email["data"].(map[string]any)["feature_id"] = "taro.yamada@example.co.jp"
	other := featureUse("globex", "app.record.create") // a tenant the token does not speak for
	unknown := featureUse("acme", "app.record.create")
	unknown["note"] = "hello"
	old := featureUse("acme", "app.record.create")
	old["occurred_at"] = testNow.Add(-30 * 24 * time.Hour).Format(time.RFC3339)
	name := featureUse("acme", "app.record.create")
	name["user"] = "山田太郎"

	batch := []any{good1, email, other, good2, unknown, old, name}
	resp, reply := post(t, h.url, testToken, mustJSON(t, batch))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	want := []struct{ status, reason string }{
		{StatusAccepted, ""},
		{StatusRejected, "input_data.email"},
		{StatusRejected, ReasonTenantMismatch},
		{StatusAccepted, ""},
		{StatusRejected, "unknown_field"},
		{StatusRejected, "too_old"},
		{StatusRejected, "input_data.personal_name"},
	}
	if len(reply.Results) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(reply.Results), len(want), reply)
	}
	for i, w := range want {
		got := reply.Results[i]
		if got.Index != i || got.Status != w.status || got.Reason != w.reason {
			t.Errorf("event %d: %+v, want %s %s", i, got, w.status, w.reason)
		}
	}
	if reply.Accepted != 2 || reply.Rejected != 5 || reply.Retry != 0 {
		t.Errorf("counts %d/%d/%d", reply.Accepted, reply.Rejected, reply.Retry)
	}
	// The content of the input-data rejections is not echoed back.
	b := mustJSON(t, reply)
	for _, leak := range []string{"taro.yamada", "山田"} {
		if bytes.Contains(b, []byte(leak)) {
			t.Errorf("reply repeats content %q: %s", leak, b)
		}
	}

	// Exactly the accepted events are in Kafka, keyed by tenant, byte for byte.
	msgs := readAll(t, h.cfg.Kafka.Brokers, h.topic, 2)
	got := map[string]bool{}
	for _, m := range msgs {
		if string(m.Key) != "acme" {
			t.Errorf("key %q, want the tenant", m.Key)
		}
		var ev map[string]any
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			t.Fatal(err)
		}
		got[ev["event_id"].(string)] = true
	}
	if !got[good1["event_id"].(string)] || !got[good2["event_id"].(string)] {
		t.Errorf("kafka holds %v, want the two accepted events", got)
	}
	if v := testutil.ToFloat64(h.c.m.events.WithLabelValues(StatusRejected, "input_data.email")); v != 1 {
		t.Errorf("metric for input_data.email = %v", v)
	}
}

func TestRequestFormats(t *testing.T) {
	h := start(t, func(c *config.Config) { c.Collector.MaxEvents = 5; c.Collector.MaxBodyBytes = 64 << 10 })
	ev := func() []byte { return mustJSON(t, featureUse("acme", "app.record.create")) }

	var nd bytes.Buffer
	nd.Write(ev())
	nd.WriteString("\n\n")
	nd.Write(ev())
	nd.WriteString("\r\n")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("[" + string(ev()) + "," + string(ev()) + "," + string(ev()) + "]"))
	_ = zw.Close()
	bomb := gzipOf(t, bytes.Repeat([]byte(" "), 10<<20)) // 10 MiB of spaces, ~10 KiB compressed
	big := featureUse("acme", "app.record.create")
	big["data"].(map[string]any)["feature_id"] = strings.Repeat("a", 64)
	tooMany := "[" + strings.TrimSuffix(strings.Repeat(string(ev())+",", 6), ",") + "]"

	f := func(name string, token string, body []byte, status, accepted int, headers ...string) {
		t.Run(name, func(t *testing.T) {
			resp, reply := post(t, h.url, token, body, headers...)
			if resp.StatusCode != status {
				t.Fatalf("status %d, want %d", resp.StatusCode, status)
			}
			if reply.Accepted != accepted {
				t.Errorf("accepted %d, want %d (%+v)", reply.Accepted, accepted, reply)
			}
		})
	}
	f("ndjson", testToken, nd.Bytes(), 200, 2, "Content-Type", "application/x-ndjson")
	f("gzip array", testToken, gz.Bytes(), 200, 3, "Content-Encoding", "gzip")
	f("no token", "", ev(), 401, 0)
	f("unknown token", "tok-nobody", ev(), 401, 0)
	f("gzip bomb", testToken, bomb, 413, 0, "Content-Encoding", "gzip")
	f("corrupt gzip", testToken, gz.Bytes()[:len(gz.Bytes())/2], 400, 0, "Content-Encoding", "gzip")
	f("not gzip", testToken, ev(), 400, 0, "Content-Encoding", "gzip")
	f("brotli", testToken, ev(), 415, 0, "Content-Encoding", "br")
	f("too many events", testToken, []byte(tooMany), 413, 0)
	f("body too large", testToken, bytes.Repeat([]byte(" "), 65<<10), 413, 0)
	f("empty", testToken, nil, 400, 0)
	f("broken array", testToken, []byte("[{}, "), 400, 0)
	f("trailing data", testToken, []byte("[] []"), 400, 0)
	f("deeply nested", testToken, []byte("["+strings.Repeat("[", 5000)+strings.Repeat("]", 5000)+"]"), 200, 0)
}

func gzipOf(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = zw.Close()
	return buf.Bytes()
}

func TestKafkaDownAnswersRetry(t *testing.T) {
	h := start(t, func(c *config.Config) {
		c.Kafka.Brokers = []string{"127.0.0.1:1"} // nothing listens there
		c.Collector.WriteTimeout = 2 * time.Second
	})
	resp, reply := post(t, h.url, testToken, mustJSON(t, []any{featureUse("acme", "app.record.create")}))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if reply.Retry != 1 || reply.Accepted != 0 || reply.Results[0].Reason != ReasonUnavailable {
		t.Errorf("reply %+v", reply)
	}
	r, err := http.Get(h.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz %d after a failed write, want 503", r.StatusCode)
	}
}

func TestInFlightBound(t *testing.T) {
	h := start(t, func(c *config.Config) { c.Collector.MaxInFlight, c.Collector.TenantInFlight = 1, 1 })
	// Hold the only slot with a request whose body never finishes.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/events", pr)
	req.Header.Set("Authorization", "Bearer "+testToken)
	held := make(chan struct{})
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		close(held)
	}()
	_, _ = pw.Write([]byte("["))
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(h.c.m.inFlight) < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// Another tenant finds the collector's slots taken: 503. The same tenant finds its own
	// share taken: 429.
	resp, _ := post(t, h.url, "tok-globex", mustJSON(t, []any{featureUse("globex", "app.record.create")}))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("second request: %d Retry-After %q, want 503 with Retry-After 2", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	resp, _ = post(t, h.url, testToken, mustJSON(t, []any{featureUse("acme", "app.record.create")}))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("the same tenant's second request: %d Retry-After %q, want 429 with Retry-After 2", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	_, _ = pw.Write([]byte("]"))
	_ = pw.Close()
	<-held
	resp, _ = post(t, h.url, testToken, mustJSON(t, []any{featureUse("acme", "app.record.create")}))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("after the slot freed: %d", resp.StatusCode)
	}
}

// The public API serves health and readiness but no metrics (they are on collector.ops_listen,
// off the public network): a metric's labels must not reach the internet.
func TestHealthAndMetrics(t *testing.T) {
	h := start(t, nil)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 404} {
		r, err := http.Get(h.url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != want {
			t.Errorf("%s: %d", path, r.StatusCode)
		}
		if path == "/metrics" && bytes.Contains(b, []byte("shukei_collector")) {
			t.Errorf("the public API serves metrics:\n%s", b)
		}
	}
	post(t, h.url, testToken, mustJSON(t, []any{featureUse("acme", "app.record.create")}))
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "acme") || l.GetName() == "tenant" {
					t.Errorf("metric %s carries a tenant: %s=%s", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}
