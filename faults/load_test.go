//go:build faults || cluster

package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shukei/shukei/loadgen"
)

// item is one event as a client holds it until the collector answers for it: resent with the
// same bytes (same event_id, same occurred_at) until it is accepted or rejected.
type item struct {
	tenant string
	id     string // event_id, "" for a body that does not decode
	body   []byte
}

// sender is a well-behaved collector client: per-tenant NDJSON batches, every event resent
// until it gets an answer (a 503, a dropped connection or a per-event "retry" all mean
// resend), at a steady rate. It records which events the collector acknowledged.
type sender struct {
	url    string
	tokens map[string]string
	any    string // a tenant whose token carries events naming no registered tenant
	client *http.Client

	mu       sync.Mutex
	pending  map[string][]item // by tenant
	acked    map[string]string // event_id → tenant
	rejected map[string]string // event_id → reason the collector gave
	reasons  map[string]int    // reason → events rejected by the collector

	// loseEvery makes one 200 reply in loseEvery count as lost (0: none).
	loseEvery int64

	generated, posts, resent, lostReplies atomic.Int64
	httpErrs, unavailable                 atomic.Int64
	fatal                                 atomic.Value // string: an answer a client cannot act on
}

func newSender(base string, tokens map[string]string) *sender {
	s := &sender{url: base + "/v1/events", tokens: tokens, client: &http.Client{Timeout: 20 * time.Second},
		pending: map[string][]item{}, acked: map[string]string{}, rejected: map[string]string{}, reasons: map[string]int{}}
	for t := range tokens {
		if s.any == "" || t < s.any {
			s.any = t
		}
	}
	return s
}

// restamp gives a generated event the current time: the stack runs in real time here.
func restamp(m loadgen.Message, now time.Time) item {
	it := item{tenant: m.Tenant, body: m.Body}
	var ev map[string]any
	if json.Unmarshal(m.Body, &ev) != nil {
		return it // malformed on purpose: the collector must say so
	}
	ev["occurred_at"] = now.UTC().Format(time.RFC3339Nano)
	it.id, _ = ev["event_id"].(string)
	it.body, _ = json.Marshal(ev)
	return it
}

// run generates rate events a second from g until ctx ends, and posts the pending ones
// with workers goroutines.
func (s *sender) run(ctx context.Context, g *loadgen.Generator, rate, workers int) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		per := max(rate/50, 1)
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				s.mu.Lock()
				for range per {
					m, ok := g.Next()
					if !ok {
						break
					}
					it := restamp(m, now)
					if _, known := s.tokens[it.tenant]; !known {
						it.tenant = s.any // names a tenant with no token: the collector must refuse it
					}
					s.pending[it.tenant] = append(s.pending[it.tenant], it)
					s.generated.Add(1)
				}
				s.mu.Unlock()
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if !s.postOne(ctx) {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
}

// drain posts until nothing is pending or within passes.
func (s *sender) drain(within time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for ctx.Err() == nil {
		if !s.postOne(ctx) && s.left() == 0 {
			return 0
		}
	}
	return s.left()
}

func (s *sender) left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.pending {
		n += len(p)
	}
	return n
}

// take removes up to 200 pending events of one tenant.
func (s *sender) take() (string, []item) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, p := range s.pending {
		if len(p) == 0 {
			delete(s.pending, t)
			continue
		}
		n := min(len(p), 200)
		batch := append([]item(nil), p[:n]...)
		if n == len(p) {
			delete(s.pending, t)
		} else {
			s.pending[t] = p[n:]
		}
		return t, batch
	}
	return "", nil
}

func (s *sender) lostReply() bool {
	return s.loseEvery > 0 && s.posts.Load()%s.loseEvery == 0
}

func (s *sender) requeue(tenant string, items []item) {
	s.mu.Lock()
	s.pending[tenant] = append(s.pending[tenant], items...)
	s.mu.Unlock()
	s.resent.Add(int64(len(items)))
}

// postOne posts one batch and settles what the answer settles; false if nothing was pending.
func (s *sender) postOne(ctx context.Context) bool {
	tenant, batch := s.take()
	if batch == nil {
		return false
	}
	var body bytes.Buffer
	for _, it := range batch {
		body.Write(it.body)
		body.WriteByte('\n')
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url, &body)
	req.Header.Set("Authorization", "Bearer "+s.tokens[tenant])
	req.Header.Set("Content-Type", "application/x-ndjson")
	s.posts.Add(1)
	resp, err := s.client.Do(req)
	if err != nil {
		s.httpErrs.Add(1)
		s.requeue(tenant, batch)
		time.Sleep(200 * time.Millisecond) // the collector is restarting
		return true
	}
	defer resp.Body.Close()
	var reply struct {
		Results []struct {
			Index   int    `json:"index"`
			EventID string `json:"event_id"`
			Status  string `json:"status"`
			Reason  string `json:"reason"`
		} `json:"results"`
	}
	derr := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&reply)
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable:
		s.unavailable.Add(1)
		s.requeue(tenant, batch)
		time.Sleep(500 * time.Millisecond)
		return true
	case resp.StatusCode != http.StatusOK:
		s.fatal.Store(fmt.Sprintf("collector answered %d to a batch of %d", resp.StatusCode, len(batch)))
		return true
	case derr != nil || len(reply.Results) != len(batch):
		// A reply cut short by a SIGKILL mid-answer: nothing is settled, resend all.
		s.httpErrs.Add(1)
		s.requeue(tenant, batch)
		return true
	}
	if s.lostReply() {
		// The reply was lost on the way (a proxy or the network cut it): the client cannot
		// know Kafka has these events and sends them again, same event_ids.
		s.lostReplies.Add(1)
		s.requeue(tenant, batch)
		return true
	}
	var again []item
	s.mu.Lock()
	for i, r := range reply.Results {
		it := batch[i]
		switch r.Status {
		case "accepted":
			s.acked[it.id] = tenant
		case "rejected":
			s.reasons[r.Reason]++
			if it.id != "" {
				s.rejected[it.id] = r.Reason
			}
		default: // retry
			again = append(again, it)
		}
	}
	s.mu.Unlock()
	if len(again) > 0 {
		s.requeue(tenant, again)
	}
	return true
}

// prober asks the query service for reports at a steady pace, as a dashboard would, and
// counts what it was answered.
type prober struct {
	base, token     string
	answered, other atomic.Int64
	errs            atomic.Int64
}

func (p *prober) run(ctx context.Context) {
	reqs := []string{
		"dp_budget?purpose=external_aggregate",
		"feature_ranking?" + url.Values{"purpose": {"service_improvement"}, "week": {"today"}}.Encode(),
		"dp_releases?purpose=external_aggregate",
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; ctx.Err() == nil; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/v1/reports/"+reqs[i%len(reqs)], nil)
		req.Header.Set("Authorization", "Bearer "+p.token)
		resp, err := client.Do(req)
		if err != nil {
			p.errs.Add(1)
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				p.answered.Add(1)
			} else {
				p.other.Add(1)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
