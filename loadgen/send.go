package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/segmentio/kafka-go"
)

// Stats are what a send did.
type Stats struct {
	Sent     int            // messages handed over
	Accepted int            // acknowledged by the collector (or written to Kafka)
	Rejected map[string]int // refused at the door, by reason
	Retried  int            // requests answered 503 or 429 and sent again
	Elapsed  time.Duration
}

// Rate is messages per second over the send.
func (s Stats) Rate() float64 { return float64(s.Sent) / max(s.Elapsed.Seconds(), 1e-9) }

// Refused is how many messages were refused, and by which reasons ("reason n, …", sorted).
func (s Stats) Refused() (n int, reasons string) {
	var rs []string
	for r, k := range s.Rejected {
		n += k
		rs = append(rs, fmt.Sprintf("%s %d", r, k))
	}
	slices.Sort(rs)
	return n, strings.Join(rs, ", ")
}

// Options tune a send.
type Options struct {
	Rate     float64   // messages per second; 0: as fast as possible
	Batch    int       // events per request or Kafka write (default 500)
	Workers  int       // concurrent requests (default 4)
	Progress io.Writer // a bar on a terminal, plain lines otherwise; nil: silent
	// MaxSpan is the longest event-time span of one tenant's batch (default 24h): a batch is
	// sent once it is full or its events span this long, as an SDK flushes on a timer. Without
	// it a small tenant's whole history would go in one late batch, after every other tenant's
	// newer events, and the aggregator's event-time windows would count it as late unless their
	// allowed lateness exceeds the span.
	MaxSpan time.Duration
}

func (o *Options) defaults() {
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.MaxSpan <= 0 {
		o.MaxSpan = 24 * time.Hour
	}
}

// pacer spreads a send over time at a target rate.
type pacer struct {
	start time.Time
	rate  float64
}

func (p pacer) wait(ctx context.Context, sent int) error {
	if p.rate <= 0 {
		return nil
	}
	d := time.Until(p.start.Add(time.Duration(float64(sent) / p.rate * float64(time.Second))))
	if d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// progress reports a send: a progress bar with rate and ETA on a terminal, a plain line every
// few seconds otherwise.
type progress struct {
	bar   *progressbar.ProgressBar
	w     io.Writer
	total int
	last  time.Time
	start time.Time
	done  int
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, start: time.Now(), last: time.Now()}
	if w == nil {
		return p
	}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("events"),
				progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("ev"),
				progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
		}
	}
	return p
}

func (p *progress) add(n int) {
	p.done += n
	switch {
	case p.bar != nil:
		_ = p.bar.Add(n)
	case p.w != nil && (time.Since(p.last) > 5*time.Second || p.done == p.total):
		el := time.Since(p.start).Seconds()
		rate := float64(p.done) / max(el, 1e-9)
		eta := time.Duration(float64(p.total-p.done)/max(rate, 1e-9)) * time.Second
		fmt.Fprintf(p.w, "sent %d/%d events (%.0f/s, ETA %s)\n", p.done, p.total, rate, eta.Round(time.Second))
		p.last = time.Now()
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// SendHTTP posts the generator's messages to a collector (POST /v1/events, NDJSON), each with
// its tenant's ingest token (tokens: tenant → token; messages of tenants without one — unknown
// tenants — go with any token and are refused for it). 503 and 429 answers are retried after
// their Retry-After: backpressure and the tenant's rate, not loss.
func SendHTTP(ctx context.Context, url string, tokens map[string]string, g *Generator, o Options) (Stats, error) {
	o.defaults()
	var anyToken string
	for _, t := range tokens {
		anyToken = t
		break
	}
	st := Stats{Rejected: map[string]int{}}
	prog := newProgress(o.Progress, g.Remaining())
	start := time.Now()
	pace := pacer{start: start, rate: o.Rate}
	type batch struct {
		token string
		body  bytes.Buffer
		n     int
		first time.Time
	}
	work := make(chan *batch, o.Workers*2)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for range o.Workers {
		wg.Go(func() {
			for b := range work {
				acc, rej, retried, err := postBatch(ctx, client, url, b.token, b.body.Bytes())
				mu.Lock()
				st.Accepted += acc
				st.Retried += retried
				for k, v := range rej {
					st.Rejected[k] += v
				}
				if err != nil && firstErr == nil {
					firstErr = err
				}
				prog.add(b.n)
				mu.Unlock()
			}
		})
	}
	pending := map[string]*batch{}
	flush := func(tenant string) error {
		b := pending[tenant]
		delete(pending, tenant)
		if err := pace.wait(ctx, st.Sent); err != nil {
			return err
		}
		select {
		case work <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	var err error
	for err == nil {
		m, ok := g.Next()
		if !ok {
			break
		}
		tok, known := tokens[m.Tenant]
		key := m.Tenant
		if !known {
			tok, key = anyToken, "?"+m.Tenant
		}
		if b := pending[key]; b != nil && m.At.Sub(b.first) > o.MaxSpan {
			if err = flush(key); err != nil {
				break
			}
		}
		b := pending[key]
		if b == nil {
			b = &batch{token: tok, first: m.At}
			pending[key] = b
		}
		b.body.Write(m.Body)
		b.body.WriteByte('\n')
		b.n++
		st.Sent++
		if b.n >= o.Batch || !known {
			err = flush(key)
		}
	}
	for key := range pending {
		if err == nil {
			err = flush(key)
		}
	}
	close(work)
	wg.Wait()
	prog.finish()
	st.Elapsed = time.Since(start)
	if err == nil {
		err = firstErr
	}
	return st, err
}

func postBatch(ctx context.Context, client *http.Client, url, token string, body []byte) (accepted int, rejected map[string]int, retried int, err error) {
	rejected = map[string]int{}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/events", bytes.NewReader(body))
		if err != nil {
			return accepted, rejected, retried, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/x-ndjson")
		resp, err := client.Do(req)
		if err != nil {
			if attempt < 20 && ctx.Err() == nil {
				retried++
				time.Sleep(500 * time.Millisecond)
				continue
			}
			return accepted, rejected, retried, fmt.Errorf("post to the collector: %w", err)
		}
		var reply struct {
			Accepted int `json:"accepted"`
			Rejected int `json:"rejected"`
			Retry    int `json:"retry"`
			Results  []struct {
				Status string `json:"status"`
				Reason string `json:"reason"`
			} `json:"results"`
			Error string `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&reply)
		resp.Body.Close()
		switch {
		case (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests) && attempt < 60:
			// Backpressure (in flight) or the tenant's rate: wait as told, then send again.
			retried++
			wait := time.Second
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				wait = min(time.Duration(s)*time.Second, 30*time.Second)
			}
			time.Sleep(wait)
			continue
		case resp.StatusCode != http.StatusOK:
			n := bytes.Count(body, []byte{'\n'})
			rejected[fmt.Sprintf("http_%d", resp.StatusCode)] += n
			return accepted, rejected, retried, nil
		}
		lines := bytes.SplitAfter(body, []byte{'\n'})
		var again []byte
		for i, r := range reply.Results {
			switch r.Status {
			case "rejected":
				rejected[r.Reason]++
			case "retry": // Kafka took the others but not this one: resend it, same event_id
				if i < len(lines) {
					again = append(again, lines[i]...)
				}
			}
		}
		accepted += reply.Accepted
		if len(again) == 0 {
			return accepted, rejected, retried, nil
		}
		if attempt >= 60 {
			return accepted, rejected, retried, fmt.Errorf("the collector answered retry for %d events 60 times", reply.Retry)
		}
		retried++
		body = again
		time.Sleep(time.Second)
	}
}

// SendKafka writes the generator's messages straight to the raw topic, keyed by tenant (what
// a collector does), bypassing the collector's own checks.
func SendKafka(ctx context.Context, brokers []string, topic string, g *Generator, o Options) (Stats, error) {
	o.defaults()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 5000, BatchBytes: 16 << 20, BatchTimeout: 10 * time.Millisecond, Compression: kafka.Lz4}
	defer w.Close()
	st := Stats{Rejected: map[string]int{}}
	prog := newProgress(o.Progress, g.Remaining())
	start := time.Now()
	pace := pacer{start: start, rate: o.Rate}
	chunk := max(o.Batch, 5000)
	msgs := make([]kafka.Message, 0, chunk)
	send := func() error {
		if len(msgs) == 0 {
			return nil
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return fmt.Errorf("write to %s: %w", topic, err)
		}
		st.Accepted += len(msgs)
		prog.add(len(msgs))
		msgs = msgs[:0]
		return nil
	}
	for {
		m, ok := g.Next()
		if !ok {
			break
		}
		msgs = append(msgs, kafka.Message{Key: []byte(m.Tenant), Value: m.Body})
		st.Sent++
		if len(msgs) == chunk || o.Rate > 0 && len(msgs) >= o.Batch {
			if err := pace.wait(ctx, st.Sent); err != nil {
				return st, err
			}
			if err := send(); err != nil {
				return st, err
			}
		}
	}
	err := send()
	prog.finish()
	st.Elapsed = time.Since(start)
	return st, err
}
