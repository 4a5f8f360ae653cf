package attack

// Promise 13: "No token, no slot." (docs/promises.md; brief: ABUSE.md)

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowKind is one way to hold a connection to the collector without a valid token.
type slowKind struct {
	name    string
	head    func(i int) []byte // request line, headers and the first part of the body
	trickle func(i int) []byte // what is written every interval afterwards
	every   time.Duration
	workers int
}

// slowStats is what the attack saw of one kind.
type slowStats struct {
	mu       sync.Mutex
	opened   int
	answered map[int]int
	answerIn []time.Duration // from the request's first byte to the status line
	dialErrs int
}

type slowAttack struct {
	addr   string
	kinds  []slowKind
	stats  []*slowStats
	open   atomic.Int64
	peak   atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (a *slowAttack) start() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for k, kind := range a.kinds {
		a.stats = append(a.stats, &slowStats{answered: map[int]int{}})
		st := a.stats[k]
		for i := range kind.workers {
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				for ctx.Err() == nil {
					a.one(ctx, kind, st, i)
					select {
					case <-ctx.Done():
					case <-time.After(200 * time.Millisecond):
					}
				}
			}()
		}
	}
}

// one opens one connection of a kind and keeps trickling until the collector answers or
// closes it, or the attack ends.
func (a *slowAttack) one(ctx context.Context, kind slowKind, st *slowStats, i int) {
	conn, err := abDial(a.addr)
	if err != nil {
		st.mu.Lock()
		st.dialErrs++
		st.mu.Unlock()
		return
	}
	defer conn.Close()
	n := a.open.Add(1)
	for {
		p := a.peak.Load()
		if n <= p || a.peak.CompareAndSwap(p, n) {
			break
		}
	}
	defer a.open.Add(-1)
	began := time.Now()
	st.mu.Lock()
	st.opened++
	st.mu.Unlock()
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		status, err := abRawStatus(bufio.NewReader(conn))
		if err == nil {
			st.mu.Lock()
			st.answered[status]++
			st.answerIn = append(st.answerIn, time.Since(began))
			st.mu.Unlock()
		}
	}()
	if _, err := conn.Write(kind.head(i)); err != nil {
		<-answered
		return
	}
	tick := time.NewTicker(kind.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			conn.Close()
			<-answered
			return
		case <-answered:
			return
		case <-tick.C:
			_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := conn.Write(kind.trickle(i)); err != nil {
				conn.Close()
				<-answered
				return
			}
		}
	}
}

func (a *slowAttack) stop() {
	a.cancel()
	a.wg.Wait()
}

func rawRequest(path string, headers []string, body string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: collector\r\n", path)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return []byte(b.String())
}

// TestAbuseSlowUploadsWithoutTokenTakeNoSlot: 250 connections (max_in_flight is 32) send
// headers and then trickle a body forever — beacons whose token never ends, beacons with a
// wrong token and a huge body, beacons with the events first and the token last,
// POST /v1/events without or with a bad Authorization — and are reopened as soon as the
// collector answers them. Meanwhile a tenant's POST /v1/events must keep answering 200 with
// every event accepted and stored (checked after a processor run); its p50/p99 are logged
// against the same requests with no attack. First, each kind of bad-token request alone must
// be answered without the rest of its body.
func TestAbuseSlowUploadsWithoutTokenTakeNoSlot(t *testing.T) {
	const maxInFlight = 32
	s := newStack(t, 2*time.Second)
	s.env = append(s.env, "SHUKEI_LOG_LEVEL=info") // 250 refused connections a moment at debug would be the test's bottleneck
	tenant := "slow-" + randHex(3)
	token := s.addTenant(tenant, "contracted")
	s.start("collector", "SHUKEI_COLLECTOR_MAX_IN_FLIGHT="+strconv.Itoa(maxInFlight), "SHUKEI_COLLECTOR_TENANT_IN_FLIGHT=16")
	addr := s.addrs["collector"]
	base := "http://" + addr
	oneEvent, _, _ := abFeature(tenant, "app.record.create", time.Now().Add(-30*time.Second))

	// ---- 1. each bad-token request alone is answered before its body is complete ----
	wrongToken := "shk_" + randHex(20)
	nearMiss := token[:len(token)-1] + "a" // the real token, its last character changed
	if nearMiss == token {
		nearMiss = token[:len(token)-1] + "b"
	}
	probes := []struct {
		name string
		req  []byte
	}{
		{"beacon with a wrong token, the rest of a 100 kB body never sent", rawRequest("/v1/beacon",
			[]string{"Content-Type: text/plain;charset=UTF-8", "Content-Length: 100000"}, `{"token":"`+wrongToken+`","events":[`)},
		{"beacon with a near-miss of the real token", rawRequest("/v1/beacon",
			[]string{"Content-Type: text/plain;charset=UTF-8", "Content-Length: 100000"}, `{"token":"`+nearMiss+`","events":[`)},
		{"beacon with the events first (token last), body unfinished", rawRequest("/v1/beacon",
			[]string{"Content-Type: text/plain;charset=UTF-8", "Content-Length: 100000"}, `{"events":[`+string(oneEvent)+`,`)},
		{"beacon whose token runs past 4 KiB, unfinished", rawRequest("/v1/beacon",
			[]string{"Content-Type: text/plain;charset=UTF-8", "Content-Length: 100000"}, `{"token":"shk_`+strings.Repeat("x", 5000))},
		{"beacon with a wrong token, chunked, unfinished", rawRequest("/v1/beacon",
			[]string{"Content-Type: text/plain;charset=UTF-8", "Transfer-Encoding: chunked"}, chunk(`{"token":"`+wrongToken+`","events":[`))},
		{"POST /v1/events without Authorization, body unfinished", rawRequest("/v1/events",
			[]string{"Content-Type: application/x-ndjson", "Content-Length: 100000"}, string(oneEvent)+"\n")},
		{"POST /v1/events with a wrong bearer token, body unfinished", rawRequest("/v1/events",
			[]string{"Authorization: Bearer " + wrongToken, "Content-Type: application/x-ndjson", "Content-Length: 100000"}, string(oneEvent)+"\n")},
		{"POST /v1/events with a near-miss of the real token, body unfinished", rawRequest("/v1/events",
			[]string{"Authorization: Bearer " + nearMiss, "Content-Type: application/x-ndjson", "Content-Length: 100000"}, string(oneEvent)+"\n")},
		{"POST /v1/events with Basic auth carrying the real token, body unfinished", rawRequest("/v1/events",
			[]string{"Authorization: Basic " + token, "Content-Type: application/x-ndjson", "Content-Length: 100000"}, string(oneEvent)+"\n")},
	}
	for _, p := range probes {
		conn, err := abDial(addr)
		if err != nil {
			t.Fatalf("dial the collector: %v", err)
		}
		began := time.Now()
		if _, err := conn.Write(p.req); err != nil {
			t.Errorf("%s: write: %v", p.name, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		status, err := abRawStatus(bufio.NewReader(conn))
		took := time.Since(began)
		conn.Close()
		switch {
		case err != nil:
			t.Errorf("promise 13: %s: no answer within 3 s while the body is unfinished (%v): the collector waits for the body of a request without a valid token", p.name, err)
		case status < 400 || status >= 500:
			t.Errorf("promise 13: %s: answered %d, want a 4xx refusal", p.name, status)
		default:
			t.Logf("%s: answered %d after %s, body unfinished", p.name, status, took.Round(time.Millisecond))
		}
	}

	// ---- 2. the legitimate tenant, without and then with the attack ----
	client := &http.Client{Timeout: 20 * time.Second}
	var acceptedIDs []string
	var mu sync.Mutex
	measure := func(label string, n int) []time.Duration {
		var ds []time.Duration
		var bad []string
		for range n {
			time.Sleep(50 * time.Millisecond)
			body, ids := abBatch(tenant, 20)
			a := abPost(client, base, token, body)
			ds = append(ds, a.took)
			if a.allAccepted(len(ids)) {
				mu.Lock()
				acceptedIDs = append(acceptedIDs, ids...)
				mu.Unlock()
			} else {
				bad = append(bad, a.String())
			}
		}
		if len(bad) > 0 {
			t.Errorf("promise 13 (%s): %d of %d requests of the tenant were not answered 200 with every event accepted; first: %s", label, len(bad), n, strings.Join(bad[:min(3, len(bad))], " | "))
		}
		return ds
	}
	const requests = 60
	_ = measure("warm-up", 5)
	quiet := measure("no attack", requests)

	attack := &slowAttack{addr: addr, kinds: []slowKind{
		{name: "beacon, token never ends (or JSON whitespace before it forever)", workers: 100, every: time.Second,
			head: func(i int) []byte {
				start := `{"token":"shk_`
				if i%2 == 1 {
					start = `{`
				}
				return rawRequest("/v1/beacon", []string{"Content-Type: text/plain;charset=UTF-8", "Content-Length: 500000"}, start)
			},
			trickle: func(i int) []byte {
				if i%2 == 1 {
					return []byte(" ")
				}
				return []byte("x")
			}},
		{name: "beacon, wrong token then a huge chunked body", workers: 50, every: 100 * time.Millisecond,
			head: func(int) []byte {
				return rawRequest("/v1/beacon", []string{"Content-Type: text/plain;charset=UTF-8", "Transfer-Encoding: chunked"}, chunk(`{"token":"shk_`+randHex(20)+`","events":[`))
			},
			trickle: func(int) []byte { return []byte(chunk(strings.Repeat(string(oneEvent)+",", 8))) }},
		{name: "beacon, events first and the token last", workers: 50, every: time.Second,
			head: func(int) []byte {
				return rawRequest("/v1/beacon", []string{"Content-Type: text/plain;charset=UTF-8", "Content-Length: 900000"}, `{"events":[`+string(oneEvent))
			},
			trickle: func(int) []byte { return append([]byte(","), oneEvent...) }},
		{name: "/v1/events without or with a bad Authorization, slow body", workers: 50, every: time.Second,
			head: func(i int) []byte {
				var h []string
				switch i % 4 {
				case 1:
					h = []string{"Authorization: Bearer shk_" + randHex(20)}
				case 2:
					h = []string{"Authorization: Bearer " + nearMiss}
				case 3:
					h = []string{"Authorization: Bearer"}
				}
				return rawRequest("/v1/events", append(h, "Content-Type: application/x-ndjson", "Content-Length: 500000"), string(oneEvent)[:40])
			},
			trickle: func(int) []byte { return []byte(" ") }},
	}}
	attack.start()
	defer attack.stop()
	time.Sleep(5 * time.Second) // every connection opened and trickling for a while
	var beaconAns abAnswer
	var beaconIDs []string
	var loaded []time.Duration
	{
		var evs [][]byte
		for range 5 {
			b, id, _ := abFeature(tenant, "app.record.create", time.Now().Add(-30*time.Second))
			evs = append(evs, b)
			beaconIDs = append(beaconIDs, id)
		}
		body := `{"token":"` + token + `","events":[` + string(bytes.Join(evs, []byte(","))) + `]}`
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/beacon", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
		beaconAns = abDo(client, req)
	}
	loaded = measure("under attack", requests)
	openDuring := attack.open.Load()
	attack.stop()

	if beaconAns.status < 200 || beaconAns.status > 299 {
		t.Errorf("promise 13: the tenant's own beacon during the attack was answered %s", beaconAns)
	} else {
		acceptedIDs = append(acceptedIDs, beaconIDs...)
		t.Logf("the tenant's beacon during the attack: HTTP %d after %s", beaconAns.status, beaconAns.took.Round(time.Millisecond))
	}
	qp50, qp99 := abPercentile(quiet, 50), abPercentile(quiet, 99)
	lp50, lp99 := abPercentile(loaded, 50), abPercentile(loaded, 99)
	t.Logf("POST /v1/events of 20 events, %d requests each: no attack p50 %s p99 %s; under attack p50 %s p99 %s; ratio p50 ×%.2f p99 ×%.2f",
		requests, qp50.Round(100*time.Microsecond), qp99.Round(100*time.Microsecond), lp50.Round(100*time.Microsecond), lp99.Round(100*time.Microsecond),
		float64(lp50)/float64(max(qp50, 1)), float64(lp99)/float64(max(qp99, 1)))
	if lp99 > 5*time.Second {
		t.Errorf("promise 13: under attack the tenant's p99 was %s (no attack: %s): ingest did not keep answering", lp99, qp99)
	}
	var total int
	for k, kind := range attack.kinds {
		st := attack.stats[k]
		var codes []string
		for c, n := range st.answered {
			codes = append(codes, fmt.Sprintf("%d×%d", n, c))
			if c < 400 || c >= 500 {
				t.Errorf("promise 13: attack %q was answered %d (%d times); a request without a valid token must be refused (4xx)", kind.name, c, n)
			}
		}
		sort.Strings(codes)
		total += st.opened
		t.Logf("attack %q: %d workers, %d connections opened, answered %v (median after %s), %d dial errors", kind.name, kind.workers, st.opened, codes,
			abPercentile(st.answerIn, 50).Round(time.Millisecond), st.dialErrs)
	}
	t.Logf("attack connections: %d opened in all, at most %d open at once, %d open at the end of the measurement (max_in_flight %d)", total, attack.peak.Load(), openDuring, maxInFlight)
	if attack.peak.Load() < 2*maxInFlight {
		t.Errorf("harness: at most %d attack connections were open at once, not more than twice max_in_flight (%d): the attack did not hold enough", attack.peak.Load(), maxInFlight)
	}

	// ---- 3. every accepted event is stored ----
	end := s.endOffsets(s.raw, s.rawParts)
	var n int
	for _, o := range end {
		n += int(o)
	}
	s.runProcessor(n, 2*time.Minute)
	stored := s.storedEventIDs()
	var missingIDs []string
	for _, id := range acceptedIDs {
		found := false
		for _, tb := range stored[id] {
			if tb == s.db+".events" {
				found = true
			}
		}
		if !found {
			missingIDs = append(missingIDs, id)
		}
	}
	if len(missingIDs) > 0 {
		t.Errorf("promise 13: %d of %d events the collector accepted for the tenant are not in %s.events (first %s)", len(missingIDs), len(acceptedIDs), s.db, missingIDs[0])
	} else {
		t.Logf("all %d accepted events of the tenant are stored", len(acceptedIDs))
	}
}

// chunk is s as one chunk of a chunked body.
func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// TestAbuseTenantOverItsShareGets429: with collector.tenant_rate 20 events/s and a burst of
// 100 (= max_events), one tenant sending far more gets 429 with Retry-After and none of a
// 429'd request's events reaches Kafka or ClickHouse, while another tenant sending under its
// rate at the same time is never refused; resending after Retry-After is accepted. Then a
// tenant holding collector.tenant_in_flight (4) slow requests gets 429 for its next one while
// another tenant gets 200.
func TestAbuseTenantOverItsShareGets429(t *testing.T) {
	const rate, burst, inFlight = 20, 100, 4
	s := newStack(t, 2*time.Second)
	greedy, other, holder := "greedy-"+randHex(3), "other-"+randHex(3), "holder-"+randHex(3)
	tokG, tokO, tokH := s.addTenant(greedy, "contracted"), s.addTenant(other, "contracted"), s.addTenant(holder, "contracted")
	s.start("collector",
		"SHUKEI_COLLECTOR_TENANT_RATE="+strconv.Itoa(rate), "SHUKEI_COLLECTOR_TENANT_BURST="+strconv.Itoa(burst),
		"SHUKEI_COLLECTOR_MAX_EVENTS="+strconv.Itoa(burst), "SHUKEI_COLLECTOR_MAX_IN_FLIGHT=32",
		"SHUKEI_COLLECTOR_TENANT_IN_FLIGHT="+strconv.Itoa(inFlight))
	base := "http://" + s.addrs["collector"]
	client := &http.Client{Timeout: 20 * time.Second}

	type req struct {
		ids []string
		ans abAnswer
		at  time.Time
	}
	var refusedIDs []string // events of 429'd requests never sent again
	accepted := map[string]bool{}
	var mu sync.Mutex

	// ---- 1. the greedy tenant: 3 senders of 100-event requests, as fast as they can, 6 s ----
	var greedyReqs []*req
	var otherReqs []*req
	stopAt := time.Now().Add(6 * time.Second)
	began := time.Now()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stopAt) {
				body, ids := abBatch(greedy, burst)
				r := &req{ids: ids, at: time.Now()}
				r.ans = abPost(client, base, tokG, body)
				mu.Lock()
				greedyReqs = append(greedyReqs, r)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond) // far over the rate, without starving two shared cores
			}
		}()
	}
	wg.Add(1)
	go func() { // the other tenant: 5 events every 500 ms (10/s, half its rate)
		defer wg.Done()
		for time.Now().Before(stopAt) {
			body, ids := abBatch(other, 5)
			r := &req{ids: ids, at: time.Now()}
			r.ans = abPost(client, base, tokO, body)
			mu.Lock()
			otherReqs = append(otherReqs, r)
			mu.Unlock()
			time.Sleep(500 * time.Millisecond)
		}
	}()
	wg.Wait()
	elapsed := time.Since(began)

	var ok200, got429 int
	var last429 *req
	var bad []string
	for _, r := range greedyReqs {
		switch {
		case r.ans.allAccepted(len(r.ids)):
			ok200++
			for _, id := range r.ids {
				accepted[id] = true
			}
		case r.ans.status == http.StatusTooManyRequests:
			got429++
			if _, ok := abRetryAfter(r.ans.retryAfter); !ok {
				bad = append(bad, "429 without a valid Retry-After: "+r.ans.String())
			}
			if last429 == nil || r.at.After(last429.at) {
				last429 = r
			}
		default:
			bad = append(bad, "neither 200 with every event accepted nor 429: "+r.ans.String())
		}
	}
	for _, r := range greedyReqs {
		if r.ans.status == http.StatusTooManyRequests && r != last429 {
			refusedIDs = append(refusedIDs, r.ids...)
		}
	}
	reportList(t, "promise 13: a tenant over collector.tenant_rate gets 429 with Retry-After", bad)
	acceptedN := ok200 * burst
	allowed := burst + int(float64(rate)*elapsed.Seconds()) + burst // bucket + refill + one request of slack
	t.Logf("greedy tenant: %d requests of %d events in %s: %d accepted whole (%d events), %d answered 429 (last Retry-After %q); the bucket allows about %d",
		len(greedyReqs), burst, elapsed.Round(time.Millisecond), ok200, acceptedN, got429, func() string {
			if last429 != nil {
				return last429.ans.retryAfter
			}
			return ""
		}(), burst+int(float64(rate)*elapsed.Seconds()))
	if got429 == 0 {
		t.Errorf("promise 13: a tenant sending %d requests of %d events in %s (tenant_rate %d/s, burst %d) never got 429", len(greedyReqs), burst, elapsed.Round(time.Millisecond), rate, burst)
	}
	if acceptedN > allowed {
		t.Errorf("promise 13: the greedy tenant got %d events accepted in %s, more than tenant_rate %d/s with a burst of %d allows (%d with a request of slack)", acceptedN, elapsed.Round(time.Millisecond), rate, burst, allowed)
	}
	var otherBad []string
	for _, r := range otherReqs {
		if !r.ans.allAccepted(len(r.ids)) {
			otherBad = append(otherBad, r.ans.String())
			continue
		}
		for _, id := range r.ids {
			accepted[id] = true
		}
	}
	reportList(t, fmt.Sprintf("promise 13: another tenant under its rate, while the greedy one was refused, must never be refused (%d requests)", len(otherReqs)), otherBad)

	// ---- 2. resending the last 429'd request after its Retry-After is accepted ----
	if last429 != nil {
		wait, _ := abRetryAfter(last429.ans.retryAfter)
		time.Sleep(wait + 100*time.Millisecond - time.Since(last429.at.Add(last429.ans.took)))
		// The same events again (same event ids).
		a := abPost(client, base, tokG, rebuildBatch(greedy, last429.ids))
		if !a.allAccepted(len(last429.ids)) {
			t.Errorf("promise 13: the greedy tenant's request resent %s after a 429 with Retry-After %q was answered %s", wait, last429.ans.retryAfter, a)
			refusedIDs = append(refusedIDs, last429.ids...)
		} else {
			t.Logf("resent after Retry-After %q: accepted", last429.ans.retryAfter)
			for _, id := range last429.ids {
				accepted[id] = true
			}
		}
	}

	// ---- 3. a tenant holding its share of the slots ----
	var holds []net.Conn
	partial, _, _ := abFeature(holder, "app.record.create", time.Now().Add(-30*time.Second))
	for range inFlight {
		c, err := abDial(s.addrs["collector"])
		if err != nil {
			t.Fatal(err)
		}
		holds = append(holds, c)
		// A valid token, then an event that never ends.
		if _, err := c.Write(rawRequest("/v1/events", []string{"Authorization: Bearer " + tokH, "Content-Type: application/x-ndjson", "Content-Length: 200000"}, string(partial)[:60])); err != nil {
			t.Fatal(err)
		}
	}
	trickleStop := make(chan struct{})
	go func() {
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-trickleStop:
				return
			case <-tk.C:
				for _, c := range holds {
					_, _ = c.Write([]byte(" "))
				}
			}
		}
	}()
	time.Sleep(700 * time.Millisecond)
	body, heldIDs := abBatch(holder, 5)
	aH := abPost(client, base, tokH, body)
	bodyO, idsO := abBatch(other, 5)
	aO := abPost(client, base, tokO, bodyO)
	close(trickleStop)
	for _, c := range holds {
		c.Close()
	}
	if aH.status != http.StatusTooManyRequests {
		t.Errorf("promise 13: a tenant holding tenant_in_flight (%d) slow requests sent one more and got %s, want 429 with Retry-After", inFlight, aH)
		if aH.allAccepted(len(heldIDs)) {
			for _, id := range heldIDs {
				accepted[id] = true
			}
		}
	} else {
		if _, ok := abRetryAfter(aH.retryAfter); !ok {
			t.Errorf("promise 13: the 429 for a tenant over tenant_in_flight has no valid Retry-After: %s", aH)
		}
		refusedIDs = append(refusedIDs, heldIDs...)
		t.Logf("tenant over tenant_in_flight: %s", aH)
	}
	if !aO.allAccepted(len(idsO)) {
		t.Errorf("promise 13: another tenant's request while one tenant held its slots was answered %s, want 200", aO)
	} else {
		for _, id := range idsO {
			accepted[id] = true
		}
	}
	time.Sleep(500 * time.Millisecond)
	body, ids := abBatch(holder, 5)
	if a := abPost(client, base, tokH, body); !a.allAccepted(len(ids)) {
		t.Errorf("once its slow requests were closed, the holding tenant's request was answered %s, want 200", a)
	} else {
		for _, id := range ids {
			accepted[id] = true
		}
	}

	// ---- 4. nothing of a 429'd request was taken: not in Kafka, not in ClickHouse ----
	inRaw := s.abEventIDs()
	var leaked, lost []string
	for _, id := range refusedIDs {
		if inRaw[id] > 0 {
			leaked = append(leaked, id)
		}
	}
	for id := range accepted {
		if inRaw[id] != 1 {
			lost = append(lost, fmt.Sprintf("%s ×%d", id, inRaw[id]))
		}
	}
	if len(leaked) > 0 {
		t.Errorf("promise 13 (nothing of that request taken): %d of %d events of 429'd requests are in the raw topic (first %s)", len(leaked), len(refusedIDs), leaked[0])
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d accepted events are not in the raw topic exactly once (first %s)", len(lost), len(accepted), lost[0])
	}
	var total int
	for _, n := range inRaw {
		total += n
	}
	s.runProcessor(total, 2*time.Minute)
	stored := s.storedEventIDs()
	rejected := s.abRejectedEventIDs()
	var kept []string
	for _, id := range refusedIDs {
		if len(stored[id]) > 0 || len(rejected[id]) > 0 {
			kept = append(kept, fmt.Sprintf("%s in %v rejections %v", id, stored[id], rejected[id]))
		}
	}
	if len(kept) > 0 {
		t.Errorf("promise 13 (nothing of that request taken): %d events of 429'd requests are in ClickHouse (first %s)", len(kept), kept[0])
	}
	t.Logf("%d events of 429'd requests: %d in the raw topic, %d in ClickHouse; %d accepted events, %d raw messages", len(refusedIDs), len(leaked), len(kept), len(accepted), total)
}

// rebuildBatch makes events of tenant with the given event ids (a resend of the same events).
func rebuildBatch(tenant string, ids []string) []byte {
	var buf bytes.Buffer
	for _, id := range ids {
		b, old, _ := abFeature(tenant, "app.record.create", time.Now().Add(-30*time.Second))
		buf.Write(bytes.Replace(b, []byte(old), []byte(id), 1))
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}
