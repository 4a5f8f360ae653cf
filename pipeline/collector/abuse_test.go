package collector

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shukei/shukei/config"
)

// Ingest cannot be stopped without a token: 200 beacon uploads that never finish their token
// (a slowloris) hold no request slot, so every tenant's POST /v1/events keeps answering 200
// while they trickle. p99 is measured against the same requests without the uploads.
func TestSlowBeaconsWithoutTokenLeaveIngestAlone(t *testing.T) {
	h := start(t, nil)
	body := mustJSON(t, []any{featureUse("acme", "app.record.create")})
	measure := func(n int) []time.Duration {
		var lat []time.Duration
		for range n {
			t0 := time.Now()
			resp, _ := post(t, h.url, testToken, body)
			lat = append(lat, time.Since(t0))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("POST /v1/events answered %d during the slow uploads", resp.StatusCode)
			}
		}
		slices.Sort(lat)
		return lat
	}
	idle := measure(100)

	addr := strings.TrimPrefix(h.url, "http://")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 200 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// Headers and the start of a body whose token never ends; one more byte now and then.
		fmt.Fprintf(c, "POST /v1/beacon HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: 60000\r\n\r\n{\"token\":\"tok-%d", i)
	}
	stop := make(chan struct{})
	var trickle sync.WaitGroup
	trickle.Add(1)
	go func() {
		defer trickle.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				for _, c := range conns {
					_, _ = c.Write([]byte("a"))
				}
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	flood := measure(100)
	close(stop)
	trickle.Wait()
	if n := testutil.ToFloat64(h.c.m.inFlight); n != 0 {
		t.Errorf("%v requests in flight with only unauthenticated uploads open: they hold slots", n)
	}
	p99 := func(l []time.Duration) time.Duration { return l[len(l)*99/100] }
	t.Logf("POST /v1/events p99: %s idle, %s with 200 slow beacon uploads open (%.2f×)", p99(idle), p99(flood),
		float64(p99(flood))/float64(p99(idle)))
}

// One tenant over its rate gets 429 with the wait as Retry-After, none of its request taken;
// another tenant is not affected; after the wait the tenant sends again.
func TestTenantRateLimit(t *testing.T) {
	var clock atomic.Int64
	clock.Store(testNow.UnixNano())
	h := startWithClock(t, func(c *config.Config) {
		c.Collector.MaxEvents, c.Collector.TenantRate, c.Collector.TenantBurst = 20, 10, 20
	}, func() time.Time { return time.Unix(0, clock.Load()) })
	batch := func(tenant string, n int) []byte {
		var evs []any
		for range n {
			evs = append(evs, featureUse(tenant, "app.record.create"))
		}
		return mustJSON(t, evs)
	}
	if resp, reply := post(t, h.url, testToken, batch("acme", 20)); resp.StatusCode != http.StatusOK || reply.Accepted != 20 {
		t.Fatalf("acme's first 20: %d, %d accepted", resp.StatusCode, reply.Accepted)
	}
	resp, _ := post(t, h.url, testToken, batch("acme", 5))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("acme over its rate: %d Retry-After %q, want 429 and 1 (5 events at 10 a second)", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp, reply := post(t, h.url, "tok-globex", batch("globex", 20)); resp.StatusCode != http.StatusOK || reply.Accepted != 20 {
		t.Errorf("globex, within its own rate: %d, %d accepted", resp.StatusCode, reply.Accepted)
	}
	// A beacon counts the same.
	resp, b := sendBeacon(t, h.url+"/v1/beacon", beaconOf(t, testToken, featureUse("acme", "app.record.create")), beaconType8)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("acme's beacon over its rate: %d %s", resp.StatusCode, b)
	}
	clock.Add(int64(time.Second))
	if resp, reply := post(t, h.url, testToken, batch("acme", 5)); resp.StatusCode != http.StatusOK || reply.Accepted != 5 {
		t.Errorf("acme after the wait: %d, %d accepted", resp.StatusCode, reply.Accepted)
	}
	if n := testutil.ToFloat64(h.c.m.rateLimited); n != 6 {
		t.Errorf("rate-limited events metric %v, want 6", n)
	}
	// Exactly what was accepted is in Kafka: nothing of a refused request.
	readAll(t, h.cfg.Kafka.Brokers, h.topic, 45)
}

// A beacon is read only as far as its token before the token is checked.
func TestBeaconTokenFirst(t *testing.T) {
	h := start(t, nil)
	addr := strings.TrimPrefix(h.url, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A wrong token, then a long body that is never sent: the answer comes at once.
	fmt.Fprintf(c, "POST /v1/beacon HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: 60000\r\n\r\n{\"token\":\"tok-nobody\",\"events\":[")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer before the body ended: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", resp.StatusCode)
	}
}
