// Package client is the Go SDK for sending usage events to Shukei's collector.
//
// Track buffers events and a background loop sends them in batches, by size and by interval.
// Every event gets its event_id when it is tracked and keeps it through every retry, so a retry
// can never count an event twice: the pipeline deduplicates by event_id. Memory is bounded:
// when the queue is full the oldest events are dropped and counted. Close flushes.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/shukei/shukei/event"
)

// Config configures a Client. Endpoint, Token, TenantID and Source are required.
type Config struct {
	Endpoint string // collector base URL, e.g. http://127.0.0.1:8080
	Token    string // the tenant's ingest token
	TenantID string
	Source   string // this collector's id, e.g. "web-app"

	FlushAt       int           // send when this many events are queued (default 100, at most 1000)
	FlushInterval time.Duration // send at least this often (default 5s)
	MaxQueue      int           // events held at most; the oldest are dropped past it (default 10000)
	MinBackoff    time.Duration // first retry delay (default 200ms)
	MaxBackoff    time.Duration // longest retry delay (default 30s)
	HTTPClient    *http.Client  // default: a client with a 30s timeout
	// OnError hears about events the collector rejected and requests that failed for good.
	// It must not block.
	OnError func(error)
}

// Stats counts what the client did since it started.
type Stats struct {
	Queued   int // waiting now
	Sent     int // accepted by the collector
	Rejected int // refused by the collector as invalid; never resent
	Dropped  int // dropped because the queue was full
	Retried  int // sends of an event after the first
}

// Rejected is reported through OnError for each event the collector refused.
type Rejected struct {
	EventID, Reason, Field, Message string
}

func (r *Rejected) Error() string {
	return fmt.Sprintf("event %s rejected: %s %s %s", r.EventID, r.Reason, r.Field, r.Message)
}

// ErrUnauthorized means the collector refused the token: resending will not help.
var ErrUnauthorized = errors.New("collector refused the ingest token")

// ErrClosed is returned by Track after Close.
var ErrClosed = errors.New("client closed")

type queued struct {
	raw     []byte
	id      string
	attempt int
}

// Client sends events; safe for concurrent use.
type Client struct {
	cfg   Config
	mu    sync.Mutex
	queue []queued
	stats Stats
	wake  chan struct{}
	// flushReq carries a channel the loop closes once everything queued before it was sent
	// or given up.
	flushReq chan chan struct{}
	stop     chan struct{}
	done     chan struct{}
	closed   bool
}

// New validates cfg and starts the background sender.
func New(cfg Config) (*Client, error) {
	var errs []error
	if cfg.Endpoint == "" {
		errs = append(errs, errors.New("Endpoint is required"))
	}
	if cfg.Token == "" {
		errs = append(errs, errors.New("Token is required"))
	}
	if cfg.TenantID == "" || cfg.Source == "" {
		errs = append(errs, errors.New("TenantID and Source are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("shukei client: %w", err)
	}
	if cfg.FlushAt <= 0 || cfg.FlushAt > 1000 {
		cfg.FlushAt = 100
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 5 * time.Second
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 10000
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	cfg.Endpoint = strings.TrimSuffix(cfg.Endpoint, "/")
	c := &Client{
		cfg:      cfg,
		wake:     make(chan struct{}, 1),
		flushReq: make(chan chan struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go c.loop()
	return c, nil
}

// Track queues one event. The client fills in what the caller leaves empty: event_id (a new
// UUID), tenant_id, source and occurred_at (now). The event is checked against the contract
// here, so an invalid event fails at the caller instead of at the collector.
func (c *Client) Track(ev event.Event) error {
	if ev.EventID == "" {
		ev.EventID = uuid.NewString()
	}
	if ev.TenantID == "" {
		ev.TenantID = c.cfg.TenantID
	}
	if ev.Source == "" {
		ev.Source = c.cfg.Source
	}
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = time.Now().UTC().Truncate(time.Millisecond)
	}
	if ev.Data != nil && ev.Schema == "" {
		ev.Schema = ev.Data.Schema()
	}
	if err := event.Validate(&ev, time.Now(), event.DefaultLimits()); err != nil {
		return err
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if len(c.queue) >= c.cfg.MaxQueue {
		c.queue = c.queue[1:]
		c.stats.Dropped++
	}
	c.queue = append(c.queue, queued{raw: raw, id: ev.EventID})
	n := len(c.queue)
	c.mu.Unlock()
	if n >= c.cfg.FlushAt {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// Flush sends everything queued now and returns when it was sent or given up, or ctx ends.
func (c *Client) Flush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case c.flushReq <- ack:
	case <-c.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close flushes and stops the sender. Events still unsent when ctx ends are counted as dropped.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if already {
		return nil
	}
	err := c.Flush(ctx)
	close(c.stop)
	<-c.done
	c.mu.Lock()
	c.stats.Dropped += len(c.queue)
	c.queue = nil
	c.mu.Unlock()
	return err
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Queued = len(c.queue)
	return s
}

func (c *Client) loop() {
	defer close(c.done)
	tick := time.NewTicker(c.cfg.FlushInterval)
	defer tick.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-c.stop; cancel() }()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
			c.drain(ctx, false)
		case <-c.wake:
			c.drain(ctx, true)
		case ack := <-c.flushReq:
			c.drainAll(ctx)
			close(ack)
		}
	}
}

// drain sends full batches (or one partial batch on a tick).
func (c *Client) drain(ctx context.Context, fullOnly bool) {
	for ctx.Err() == nil {
		c.mu.Lock()
		n := len(c.queue)
		c.mu.Unlock()
		if n == 0 || fullOnly && n < c.cfg.FlushAt {
			return
		}
		if !c.sendNext(ctx) {
			return
		}
		fullOnly = true
	}
}

// drainAll sends until the queue is empty or the collector keeps failing past the backoff cap.
func (c *Client) drainAll(ctx context.Context) {
	for ctx.Err() == nil {
		c.mu.Lock()
		n := len(c.queue)
		c.mu.Unlock()
		if n == 0 || !c.sendNext(ctx) {
			return
		}
	}
}

// sendNext takes one batch from the head of the queue and sends it, retrying with backoff.
// It returns false when it gave up for now (the events stay queued).
func (c *Client) sendNext(ctx context.Context) bool {
	c.mu.Lock()
	n := min(len(c.queue), c.cfg.FlushAt)
	batch := append([]queued(nil), c.queue[:n]...)
	c.queue = c.queue[n:]
	c.mu.Unlock()

	backoff := c.cfg.MinBackoff
	for attempt := 0; ; attempt++ {
		retry, wait, err := c.send(ctx, batch)
		if err == nil && len(retry) == 0 {
			return true
		}
		if errors.Is(err, ErrUnauthorized) {
			c.report(err)
			c.mu.Lock()
			c.stats.Rejected += len(batch)
			c.mu.Unlock()
			return true
		}
		batch = retry
		if len(batch) == 0 {
			return true
		}
		if wait == 0 {
			wait = backoff + time.Duration(rand.Int64N(int64(backoff)/2+1))
			backoff = min(2*backoff, c.cfg.MaxBackoff)
		}
		if attempt >= 8 || ctx.Err() != nil {
			// Give up for now: put the batch back at the head, ahead of newer events.
			c.mu.Lock()
			c.queue = append(batch, c.queue...)
			c.mu.Unlock()
			if err != nil {
				c.report(fmt.Errorf("shukei client: %d events kept for later: %w", len(batch), err))
			}
			return false
		}
		c.mu.Lock()
		c.stats.Retried += len(batch)
		c.mu.Unlock()
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
}

type result struct {
	Index   int    `json:"index"`
	EventID string `json:"event_id"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Field   string `json:"field"`
	Message string `json:"message"`
}

// send posts one batch and returns the events to resend and how long to wait first (zero for
// "use the backoff").
func (c *Client) send(ctx context.Context, batch []queued) (retry []queued, wait time.Duration, err error) {
	var body bytes.Buffer
	body.WriteByte('[')
	for i, q := range batch {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(q.raw)
	}
	body.WriteByte(']')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.Endpoint+"/v1/events", &body)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return batch, 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	wait = retryAfter(resp.Header.Get("Retry-After"))

	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusServiceUnavailable && bytes.Contains(b, []byte(`"results"`)):
		var reply struct{ Results []result }
		if err := json.Unmarshal(b, &reply); err != nil || len(reply.Results) != len(batch) {
			return batch, wait, fmt.Errorf("unreadable reply from collector (status %d)", resp.StatusCode)
		}
		sent, rejected := 0, 0
		for _, r := range reply.Results {
			if r.Index < 0 || r.Index >= len(batch) {
				continue
			}
			switch r.Status {
			case "accepted":
				sent++
			case "rejected":
				rejected++
				c.report(&Rejected{EventID: batch[r.Index].id, Reason: r.Reason, Field: r.Field, Message: r.Message})
			default:
				retry = append(retry, batch[r.Index])
			}
		}
		c.mu.Lock()
		c.stats.Sent += sent
		c.stats.Rejected += rejected
		c.mu.Unlock()
		if len(retry) > 0 {
			return retry, wait, fmt.Errorf("collector asked to retry %d events", len(retry))
		}
		return nil, 0, nil
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, 0, ErrUnauthorized
	case resp.StatusCode == http.StatusRequestEntityTooLarge && len(batch) > 1:
		// Split and send the halves one after the other.
		half := len(batch) / 2
		for _, part := range [][]queued{batch[:half], batch[half:]} {
			r, w, err := c.send(ctx, part)
			if err != nil {
				retry = append(retry, r...)
				wait = max(wait, w)
			}
		}
		if len(retry) > 0 {
			return retry, wait, errors.New("part of a split batch failed")
		}
		return nil, 0, nil
	case resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return batch, wait, fmt.Errorf("collector answered %d", resp.StatusCode)
	default:
		// Another 4xx: the request itself is wrong; resending it unchanged cannot succeed.
		c.mu.Lock()
		c.stats.Rejected += len(batch)
		c.mu.Unlock()
		c.report(fmt.Errorf("collector refused a batch of %d: %d %s", len(batch), resp.StatusCode, bytes.TrimSpace(b)))
		return nil, 0, nil
	}
}

func (c *Client) report(err error) {
	if c.cfg.OnError != nil {
		c.cfg.OnError(err)
	}
}

func retryAfter(h string) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && s >= 0 && s <= 3600 {
		return time.Duration(s) * time.Second
	}
	return 0
}
