package collector

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
)

const beaconType8 = "text/plain;charset=UTF-8" // what the SDK's Blob, and so sendBeacon, sends

// captureLogs points the harness's collector at a buffer; call it before the first request.
func captureLogs(h *harness) *servicetest.Output {
	l := &servicetest.Output{}
	h.c.log = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return l
}

// beaconOf is a beacon as the SDK writes it: the token first.
func beaconOf(t *testing.T, token string, events ...any) []byte {
	t.Helper()
	if events == nil {
		events = []any{}
	}
	return ordered(t, "token", token, "events", events)
}

// ordered is a JSON object with its members in the given order (json.Marshal sorts a map's).
func ordered(t *testing.T, kv ...any) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteByte('{')
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(mustJSON(t, kv[i]))
		b.WriteByte(':')
		b.Write(mustJSON(t, kv[i+1]))
	}
	b.WriteByte('}')
	return b.Bytes()
}

// sendBeacon posts like navigator.sendBeacon: no Authorization header, the body's type only.
func sendBeacon(t *testing.T, url string, body []byte, contentType string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Origin", "https://app.example.com")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestBeaconLandsOnlyGoodEventsInKafka(t *testing.T) {
	h := start(t, nil)
	logs := captureLogs(h)
	good := []map[string]any{
		featureUse("acme", "app.record.create"),
		featureUse("acme", "space.post.reaction"),
		featureUse("acme", "app.record.view"),
	}
	email := featureUse("acme", "app.record.create")
	email["data"].(map[string]any)["feature_id"] = "taro.yamada@example.co.jp"

	resp, b := sendBeacon(t, h.url+"/v1/beacon", beaconOf(t, testToken, good[0], email, good[1], good[2]), beaconType8)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 since one event was rejected: %s", resp.StatusCode, b)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("no CORS header on the beacon reply: %v", resp.Header)
	}
	var reply Reply
	if err := json.Unmarshal(b, &reply); err != nil {
		t.Fatalf("reply %s: %v", b, err)
	}
	if reply.Accepted != 3 || reply.Rejected != 1 || reply.Results[1].Reason != "input_data.email" || reply.Results[1].EventID != "" {
		t.Errorf("reply %+v", reply)
	}
	for _, leak := range []string{testToken, "taro.yamada"} {
		if bytes.Contains(b, []byte(leak)) {
			t.Errorf("reply repeats %q: %s", leak, b)
		}
	}

	msgs := readAll(t, h.cfg.Kafka.Brokers, h.topic, 3)
	got := map[string]bool{}
	for _, m := range msgs {
		if string(m.Key) != "acme" {
			t.Errorf("key %q, want the tenant", m.Key)
		}
		if bytes.Contains(m.Value, []byte(testToken)) {
			t.Errorf("the token reached Kafka: %s", m.Value)
		}
		var ev map[string]any
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			t.Fatal(err)
		}
		got[ev["event_id"].(string)] = true
	}
	for _, g := range good {
		if !got[g["event_id"].(string)] {
			t.Errorf("kafka lacks %s; holds %v", g["event_id"], got)
		}
	}
	if strings.Contains(logs.String(), testToken) {
		t.Errorf("the token was logged:\n%s", logs)
	}
}

func TestBeaconFullyAcceptedIsNoContent(t *testing.T) {
	h := start(t, nil)
	for _, ct := range []string{beaconType8, "text/plain", "application/json", "Text/Plain; charset=utf-8"} {
		t.Run(ct, func(t *testing.T) {
			resp, b := sendBeacon(t, h.url+"/v1/beacon", beaconOf(t, testToken, featureUse("acme", "app.record.create")), ct)
			if resp.StatusCode != http.StatusNoContent || len(b) != 0 {
				t.Errorf("status %d body %q, want 204 and nothing", resp.StatusCode, b)
			}
		})
	}
	readAll(t, h.cfg.Kafka.Brokers, h.topic, 4)
	if v := testutil.ToFloat64(h.c.m.requests.WithLabelValues("204", "")); v != 4 {
		t.Errorf("requests{code=204} = %v, want 4", v)
	}
}

func TestBeaconRequests(t *testing.T) {
	h := start(t, func(c *config.Config) { c.Collector.MaxEvents = 5; c.Collector.MaxBodyBytes = 64 << 10 })
	logs := captureLogs(h)
	ev := func() map[string]any { return featureUse("acme", "app.record.create") }
	six := []any{ev(), ev(), ev(), ev(), ev(), ev()}
	f := func(name, path string, body []byte, ct string, status int) {
		t.Run(name, func(t *testing.T) {
			resp, b := sendBeacon(t, h.url+path, body, ct)
			if resp.StatusCode != status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, b)
			}
			for _, tok := range []string{testToken, "tok-globex", "tok-nobody"} {
				if bytes.Contains(b, []byte(tok)) {
					t.Errorf("reply repeats the token %q: %s", tok, b)
				}
			}
		})
	}
	f("bad token", "/v1/beacon", beaconOf(t, "tok-nobody", ev()), beaconType8, 401)
	f("no token", "/v1/beacon", mustJSON(t, map[string]any{"events": []any{ev()}}), beaconType8, 401)
	f("empty token", "/v1/beacon", beaconOf(t, "", ev()), beaconType8, 401)
	f("token of another tenant", "/v1/beacon", beaconOf(t, "tok-globex", ev()), beaconType8, 200) // tenant_mismatch
	// A token in the URL is never looked at: that is where logs keep it.
	f("token in the query only", "/v1/beacon?token="+testToken, mustJSON(t, map[string]any{"events": []any{ev()}}), beaconType8, 401)
	f("body too large", "/v1/beacon", append(beaconOf(t, testToken, ev()), bytes.Repeat([]byte(" "), 65<<10)...), beaconType8, 413)
	f("too many events", "/v1/beacon", beaconOf(t, testToken, six...), beaconType8, 413)
	f("event too large", "/v1/beacon", beaconOf(t, testToken, map[string]any{"pad": strings.Repeat("a", 9<<10)}), beaconType8, 200)
	f("form type", "/v1/beacon", beaconOf(t, testToken, ev()), "application/x-www-form-urlencoded", 415)
	f("no type", "/v1/beacon", beaconOf(t, testToken, ev()), "", 415)
	f("latin-1", "/v1/beacon", beaconOf(t, testToken, ev()), "text/plain;charset=ISO-8859-1", 415)
	f("not json", "/v1/beacon", []byte("token="+testToken), beaconType8, 400)
	f("events not an array", "/v1/beacon", ordered(t, "token", testToken, "events", ev()), beaconType8, 400)
	f("unknown field", "/v1/beacon", ordered(t, "token", testToken, "events", []any{}, "extra", 1), beaconType8, 400)
	// The token comes first: a beacon whose events come before it is not read past its start.
	f("events before the token", "/v1/beacon", ordered(t, "events", []any{ev()}, "token", testToken), beaconType8, 401)
	f("trailing data", "/v1/beacon", append(beaconOf(t, testToken, ev()), []byte(" {}")...), beaconType8, 400)
	f("empty events", "/v1/beacon", beaconOf(t, testToken), beaconType8, 204)

	// None of those put an event in Kafka: the only well-formed one came with another tenant's token.
	readAll(t, h.cfg.Kafka.Brokers, h.topic, 0)
	if strings.Contains(logs.String(), "tok-") {
		t.Errorf("a token was logged:\n%s", logs)
	}
}

// Kafka down: the beacon is answered like /v1/events (503 with results and Retry-After), and
// the collector's warning, the one line it logs on this path, holds no token.
func TestBeaconKafkaDownLogsNoToken(t *testing.T) {
	h := start(t, func(c *config.Config) {
		c.Kafka.Brokers = []string{"127.0.0.1:1"} // nothing listens there
		c.Collector.WriteTimeout = 2 * time.Second
	})
	logs := captureLogs(h)
	resp, b := sendBeacon(t, h.url+"/v1/beacon", beaconOf(t, testToken, featureUse("acme", "app.record.create")), beaconType8)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q, want 503 with Retry-After: %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	var reply Reply
	if err := json.Unmarshal(b, &reply); err != nil || reply.Retry != 1 {
		t.Errorf("reply %s (%v)", b, err)
	}
	out := logs.String()
	if !strings.Contains(out, "kafka write failed") {
		t.Errorf("expected the Kafka warning in the captured logs, got:\n%s", out)
	}
	if strings.Contains(out, testToken) || bytes.Contains(b, []byte(testToken)) {
		t.Errorf("the token was logged or echoed:\nlogs: %s\nreply: %s", out, b)
	}
}
