package collector

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Slow clients (slowloris) cannot hold the collector: each connection that sends its headers a
// byte at a time is cut off by the header timeout, and real requests are answered meanwhile.
func TestSlowlorisIsCutOff(t *testing.T) {
	h := start(t, nil)
	addr := strings.TrimPrefix(h.url, "http://")
	const n = 200
	var wg sync.WaitGroup
	closed := make(chan time.Duration, n)
	for range n {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			start := time.Now()
			_, _ = io.WriteString(c, "POST /v1/events HTTP/1.1\r\nHost: x\r\n")
			for time.Since(start) < 20*time.Second {
				if _, err := io.WriteString(c, "X-Slow: a\r\n"); err != nil {
					break
				}
				_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
					break // the server closed the connection
				}
			}
			closed <- time.Since(start)
		})
	}
	// While they trickle, a real request is answered at once.
	time.Sleep(time.Second)
	t0 := time.Now()
	resp, _ := post(t, h.url, testToken, mustJSON(t, []any{featureUse("acme", "app.record.create")}))
	if resp.StatusCode != http.StatusOK || time.Since(t0) > 2*time.Second {
		t.Errorf("a request among %d slow connections: %d after %s", n, resp.StatusCode, time.Since(t0))
	}
	wg.Wait()
	close(closed)
	for d := range closed {
		if d > 10*time.Second {
			t.Fatalf("a slow connection was held %s (header timeout 5s)", d)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// 10⁵ tenants' worth of made-up tokens: each is refused with 401, nothing crashes, and the
// heap does not grow with the number of tokens tried.
func TestHundredThousandTokensTried(t *testing.T) {
	h := start(t, nil)
	body := mustJSON(t, []any{featureUse("acme", "app.record.create")})
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	client := &http.Client{Transport: tr}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 100_000
	var wg sync.WaitGroup
	work := make(chan int)
	var mu sync.Mutex
	codes := map[int]int{}
	for range 16 {
		wg.Go(func() {
			for i := range work {
				req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/events", strings.NewReader(string(body)))
				req.Header.Set("Authorization", fmt.Sprintf("Bearer shk_guess_%08d", i))
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, bufio.NewReader(resp.Body))
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if codes[http.StatusUnauthorized] != n {
		t.Fatalf("answers to %d made-up tokens: %v", n, codes)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 64<<20 {
		t.Errorf("heap grew by %d MiB over %d refused tokens", grown>>20, n)
	}
	// The collector still serves the real token.
	if resp, _ := post(t, h.url, testToken, body); resp.StatusCode != http.StatusOK {
		t.Errorf("after the guesses: %d", resp.StatusCode)
	}
}
