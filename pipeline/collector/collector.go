// Package collector is Shukei's HTTP ingest: it authenticates a tenant by its ingest token,
// runs every event through the same decision the processor uses (decode, validate, input-data
// guard), and writes the accepted ones to Kafka, keyed by tenant, acknowledged by all in-sync
// replicas, before it answers. Nothing is reported accepted that Kafka does not hold.
package collector

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"golang.org/x/time/rate"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/guard"
)

// Writer is the part of *kafka.Writer the collector needs.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Status of one event in a reply.
const (
	StatusAccepted = "accepted" // Kafka holds it
	StatusRejected = "rejected" // it breaks the contract; sending it again will not help
	StatusRetry    = "retry"    // Kafka did not take it; send it again with the same event_id
)

// Reasons the collector adds to the event package's.
const (
	ReasonTenantMismatch = "tenant_mismatch"   // the event names a tenant other than the token's
	ReasonEventTooLarge  = "event_too_large"   // over events.max_event_bytes
	ReasonUnavailable    = "kafka_unavailable" // Kafka did not acknowledge in time
)

// Result is the outcome of one event of a request, in request order.
type Result struct {
	Index   int    `json:"index"`
	EventID string `json:"event_id,omitempty"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message,omitempty"`
}

// Reply is the body of a 200 answer to POST /v1/events.
type Reply struct {
	Accepted int      `json:"accepted"`
	Rejected int      `json:"rejected"`
	Retry    int      `json:"retry"`
	Results  []Result `json:"results"`
}

// Collector serves the ingest API.
type Collector struct {
	cfg      config.Collector
	limits   event.Limits
	w        Writer
	log      *slog.Logger
	tokens   map[[sha256.Size]byte]string // sha256(token) → tenant
	sem      chan struct{}
	now      func() time.Time
	m        metrics
	handler  http.Handler
	ready    atomic.Int64 // unix nanos until which the last Kafka failure marks us not ready
	registry Tokens       // nil: only configured tokens

	tmu      sync.Mutex
	busy     map[string]int           // tenant → its requests in flight
	limiters map[string]*rate.Limiter // tenant → its event rate
}

// Deps are the collector's collaborators, which Open builds and tests inject.
type Deps struct {
	// Writer writes the accepted events to the raw topic (see NewKafkaWriter).
	Writer   Writer
	Registry prometheus.Registerer // receives the collector's metrics
	Log      *slog.Logger
	Now      func() time.Time // the clock events' ages and skews are judged by; nil: time.Now
}

// New builds a collector with the settings of cfg.Collector and the event limits of
// cfg.Events.
func New(cfg config.Config, d Deps) (*Collector, error) {
	c := &Collector{
		cfg:    cfg.Collector,
		limits: cfg.EventLimits(),
		w:      d.Writer,
		log:    d.Log,
		tokens: map[[sha256.Size]byte]string{},
		sem:    make(chan struct{}, cfg.Collector.MaxInFlight),
		now:    d.Now,
		m:      newMetrics(d.Registry),
		busy:   map[string]int{},

		limiters: map[string]*rate.Limiter{},
	}
	if c.now == nil {
		c.now = time.Now
	}
	for _, t := range cfg.Collector.IngestTokens {
		tenant, sum, _ := strings.Cut(t, ":")
		b, err := hex.DecodeString(sum)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("collector.ingest_tokens: bad hash for tenant %s", tenant)
		}
		c.tokens[[sha256.Size]byte(b)] = tenant
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events", c.ingest)
	mux.HandleFunc("POST /v1/beacon", c.beacon)
	mux.HandleFunc("OPTIONS /v1/events", c.preflight)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", c.readyz)
	// No /metrics here: the API faces the internet, and the metrics are served on
	// collector.ops_listen (like every role's), off the public network.
	c.handler = c.cors(mux)
	return c, nil
}

// cors lets browser pages on allowed origins post events. No cookies are involved (the token is
// a bearer header), so credentials are never allowed.
func (c *Collector) cors(next http.Handler) http.Handler {
	anyOrigin, allowed := false, map[string]bool{}
	for _, o := range c.cfg.AllowOrigins {
		if o == "*" {
			anyOrigin = true
		}
		allowed[o] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" && (anyOrigin || allowed[origin]) {
			h := w.Header()
			if anyOrigin {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
				h.Add("Vary", "Origin")
			}
			h.Set("Access-Control-Expose-Headers", "Retry-After")
		}
		next.ServeHTTP(w, r)
	})
}

func (c *Collector) preflight(w http.ResponseWriter, r *http.Request) {
	if w.Header().Get("Access-Control-Allow-Origin") == "" {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "POST")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Content-Encoding")
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}

// NewKafkaWriter returns the writer the collector needs: synchronous, acknowledged by all
// in-sync replicas, keyed by tenant with Murmur2 (the partitioner Java clients use, so any
// producer of the raw topic puts a tenant in the same partition).
func NewKafkaWriter(k config.Kafka, c config.Collector) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(k.Brokers...),
		Topic:        k.RawTopic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		Async:        false,
		BatchSize:    c.MaxEvents,
		BatchBytes:   int64(c.MaxBodyBytes) + 64<<10,
		BatchTimeout: 2 * time.Millisecond,
		MaxAttempts:  3,
		WriteTimeout: c.WriteTimeout,
		Compression:  kafka.Lz4,
	}
}

// Handler is the HTTP API, for tests and for embedding.
func (c *Collector) Handler() http.Handler { return c.handler }

// Run serves on cfg.Listen until ctx ends, then drains in-flight requests.
func (c *Collector) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", c.cfg.Listen)
	if err != nil {
		return fmt.Errorf("collector listen on %s: %w", c.cfg.Listen, err)
	}
	return c.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened.
func (c *Collector) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler: c.handler,
		// Slow clients must not hold a request slot: bound every phase of a request.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      c.cfg.WriteTimeout + 30*time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	err := ops.Serve(ctx, srv, ln, c.cfg.WriteTimeout+5*time.Second)
	if se, ok := errors.AsType[*ops.ShutdownError](err); ok {
		return fmt.Errorf("collector shutdown: %w", se.Err)
	}
	return err
}

// httpError is a whole-request failure: status, a stable code and what to do.
type httpError struct {
	status int
	code   string
	msg    string
}

func (c *Collector) fail(w http.ResponseWriter, e httpError) {
	c.failAfter(w, e, int(c.cfg.RetryAfter.Round(time.Second)/time.Second))
}

// failAfter is fail with the Retry-After (seconds) a 503 or 429 carries.
func (c *Collector) failAfter(w http.ResponseWriter, e httpError, retryAfter int) {
	if e.status == http.StatusServiceUnavailable || e.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(max(retryAfter, 1)))
	}
	if e.status == http.StatusUnauthorized || e.status == http.StatusBadRequest || e.status == http.StatusRequestEntityTooLarge ||
		e.status == http.StatusUnsupportedMediaType {
		// Answer now and drop the connection: without it the server would first read up to
		// 256 KiB of a body the request no longer needs — as slowly as its sender likes.
		w.Header().Set("Connection", "close")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": e.code, "message": e.msg})
	c.m.requests.WithLabelValues(strconv.Itoa(e.status), e.code).Inc()
}

// admit takes one of the bounded request slots and starts the request's metrics; done gives
// the slot back. Past the bound it answers 503 and ok is false: tell the sender to come back
// rather than queue.
func (c *Collector) admit(w http.ResponseWriter) (done func(), ok bool) {
	start := c.now()
	select {
	case c.sem <- struct{}{}:
	default:
		c.fail(w, httpError{http.StatusServiceUnavailable, "overloaded", "too many requests in flight; retry after the Retry-After delay"})
		c.m.duration.Observe(time.Since(start).Seconds())
		return nil, false
	}
	c.m.inFlight.Inc()
	return func() {
		c.m.inFlight.Dec()
		<-c.sem
		c.m.duration.Observe(time.Since(start).Seconds())
	}, true
}

// ingest serves POST /v1/events. The token is checked first, from the header alone: a request
// without a valid one takes no slot and has no byte of its body read.
func (c *Collector) ingest(w http.ResponseWriter, r *http.Request) {
	tenant, ok := c.authenticate(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="shukei-ingest"`)
		c.fail(w, httpError{http.StatusUnauthorized, "unauthorized", "send 'Authorization: Bearer <ingest token>' with the tenant's token"})
		return
	}
	done, ok := c.admitTenant(w, tenant)
	if !ok {
		return
	}
	defer done()

	body, herr := c.readBody(w, r)
	if herr != nil {
		c.fail(w, *herr)
		return
	}
	c.m.bytes.Add(float64(len(body)))
	raws, herr := splitEvents(body, c.cfg.MaxEvents)
	if herr != nil {
		c.fail(w, *herr)
		return
	}
	if !c.allow(w, tenant, len(raws)) {
		return
	}
	reply, status := c.process(r.Context(), tenant, raws)
	c.answer(w, status, reply)
}

// admitTenant admits an authenticated request: within its tenant's share of the slots
// (collector.tenant_in_flight; past it 429), then one of the collector's (past them 503). done
// gives both back.
func (c *Collector) admitTenant(w http.ResponseWriter, tenant string) (done func(), ok bool) {
	c.tmu.Lock()
	if c.busy[tenant] >= c.cfg.TenantInFlight {
		c.tmu.Unlock()
		c.fail(w, httpError{http.StatusTooManyRequests, "tenant_busy", fmt.Sprintf("this tenant has %d requests in flight, its most; retry after the Retry-After delay", c.cfg.TenantInFlight)})
		return nil, false
	}
	c.busy[tenant]++
	c.tmu.Unlock()
	release := func() {
		c.tmu.Lock()
		if c.busy[tenant]--; c.busy[tenant] == 0 {
			delete(c.busy, tenant)
		}
		c.tmu.Unlock()
	}
	slot, ok := c.admit(w)
	if !ok {
		release()
		return nil, false
	}
	return func() { slot(); release() }, true
}

// allow takes n events from the tenant's bucket (collector.tenant_rate, tenant_burst). Over the
// rate the whole request is refused, 429, with the wait until it would pass as Retry-After:
// nothing of it is accepted, so a resend after that wait loses nothing.
func (c *Collector) allow(w http.ResponseWriter, tenant string, n int) bool {
	if c.cfg.TenantRate <= 0 || n == 0 {
		return true
	}
	c.tmu.Lock()
	lim := c.limiters[tenant]
	if lim == nil {
		lim = rate.NewLimiter(rate.Limit(c.cfg.TenantRate), c.cfg.TenantBurst)
		c.limiters[tenant] = lim
	}
	c.tmu.Unlock()
	now := c.now()
	res := lim.ReserveN(now, n)
	if !res.OK() {
		c.fail(w, httpError{http.StatusRequestEntityTooLarge, "too_many_events", fmt.Sprintf("at most %d events a request for this tenant; split the batch", c.cfg.TenantBurst)})
		return false
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		secs := int((d + time.Second - 1) / time.Second)
		c.m.rateLimited.Add(float64(n))
		c.failAfter(w, httpError{http.StatusTooManyRequests, "rate_limited",
			fmt.Sprintf("this tenant is over its rate of %g events a second; none of these %d events was taken: send them again after %d s", c.cfg.TenantRate, n, secs)}, secs)
		return false
	}
	return true
}

// process is the per-event path every ingest door shares once it knows the tenant: size limit,
// the event decision (decode, validate, input-data guard), tenant check, then one Kafka write
// of the events that passed. status is 503 when Kafka took none of them, else 200.
func (c *Collector) process(ctx context.Context, tenant string, raws [][]byte) (Reply, int) {
	now := c.now()
	reply := Reply{Results: make([]Result, len(raws))}
	var msgs []kafka.Message
	var msgIdx []int
	for i, raw := range raws {
		res := &reply.Results[i]
		res.Index = i
		if len(raw) > c.limits.MaxBytes {
			res.Status, res.Reason = StatusRejected, ReasonEventTooLarge
			res.Message = fmt.Sprintf("event is %d bytes, the limit is %d", len(raw), c.limits.MaxBytes)
			continue
		}
		ev, rej := guard.Inspect(raw, now, c.limits)
		if rej != nil {
			res.Status, res.Reason, res.Field, res.Message = StatusRejected, string(rej.Reason), rej.Field, rej.Msg
			if rej.Class() != event.ClassInputData {
				res.EventID = ev.EventID // decoded, valid or empty; never content
			}
			continue
		}
		res.EventID = ev.EventID
		if ev.TenantID != tenant {
			res.Status, res.Reason, res.Field = StatusRejected, ReasonTenantMismatch, "tenant_id"
			res.Message = "the event names a tenant other than the ingest token's"
			continue
		}
		msgs = append(msgs, kafka.Message{Key: []byte(tenant), Value: raw, Time: now})
		msgIdx = append(msgIdx, i)
	}

	if len(msgs) > 0 {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
		werr := c.write(ctx, msgs)
		cancel()
		var perMsg kafka.WriteErrors
		switch {
		case werr == nil:
			for _, i := range msgIdx {
				reply.Results[i].Status = StatusAccepted
			}
		case errors.As(werr, &perMsg) && len(perMsg) == len(msgs):
			for j, i := range msgIdx {
				if perMsg[j] == nil {
					reply.Results[i].Status = StatusAccepted
				} else {
					reply.Results[i].Status, reply.Results[i].Reason = StatusRetry, ReasonUnavailable
				}
			}
		default:
			for _, i := range msgIdx {
				reply.Results[i].Status, reply.Results[i].Reason = StatusRetry, ReasonUnavailable
			}
		}
		if werr != nil {
			c.log.Warn("kafka write failed; events answered as retry", "events", len(msgs), "err", werr)
		}
	}

	for _, res := range reply.Results {
		switch res.Status {
		case StatusAccepted:
			reply.Accepted++
		case StatusRejected:
			reply.Rejected++
		case StatusRetry:
			reply.Retry++
		}
		c.m.events.WithLabelValues(res.Status, res.Reason).Inc()
	}

	if reply.Retry > 0 && reply.Accepted == 0 {
		// Kafka took nothing: the whole request is worth retrying later.
		return reply, http.StatusServiceUnavailable
	}
	return reply, http.StatusOK
}

// answer writes a per-event reply with the status process chose.
func (c *Collector) answer(w http.ResponseWriter, status int, reply Reply) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int(c.cfg.RetryAfter.Round(time.Second)/time.Second)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(reply)
	c.m.requests.WithLabelValues(strconv.Itoa(status), "").Inc()
}

func (c *Collector) write(ctx context.Context, msgs []kafka.Message) error {
	start := time.Now()
	err := c.w.WriteMessages(ctx, msgs...)
	c.m.kafkaWrite.Observe(time.Since(start).Seconds())
	if err != nil {
		c.m.kafkaErrors.Inc()
		c.ready.Store(time.Now().Add(c.cfg.RetryAfter).UnixNano())
	}
	return err
}

// authenticate maps the bearer token to its tenant. Tokens are stored only as SHA-256 hashes;
// a map lookup on the hash reveals nothing useful through timing.
func (c *Collector) authenticate(r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return "", false
	}
	return c.tenantOf(tok)
}

// tenantOf maps an ingest token, from whichever part of the request carries it, to its tenant.
func (c *Collector) tenantOf(tok string) (string, bool) {
	if tok == "" || len(tok) > 512 {
		return "", false
	}
	sum := sha256.Sum256([]byte(tok))
	if tenant, ok := c.tokens[sum]; ok {
		if c.registry != nil && c.registry.Silent(tenant) {
			return "", false
		}
		return tenant, true
	}
	if c.registry != nil {
		return c.registry.TenantOfToken(hex.EncodeToString(sum[:]))
	}
	return "", false
}

// Tokens maps the hex SHA-256 of an ingest token to its tenant: the tenant registry. Silent
// names the tenants that may no longer send (terminated), whose configured tokens are refused
// too.
type Tokens interface {
	TenantOfToken(hash string) (string, bool)
	Silent(tenant string) bool
}

// UseRegistry makes the collector accept the tokens the tenant registry issued, besides the
// configured ones. Call it before serving.
func (c *Collector) UseRegistry(t Tokens) { c.registry = t }

// readBody reads the body, decompressing gzip, and bounds the size after decompression so a
// small compressed body cannot expand without limit.
func (c *Collector) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *httpError) {
	src, closeBody, herr := c.bodyReader(w, r)
	if herr != nil {
		return nil, herr
	}
	defer closeBody()
	body, err := io.ReadAll(src)
	if herr := c.bodyError(err, int64(len(body))); herr != nil {
		return nil, herr
	}
	return body, nil
}

// bodyReader is the request body, gzip decoded, bounded to collector.max_body_bytes after
// decompression; closeBody releases the decoder.
func (c *Collector) bodyReader(w http.ResponseWriter, r *http.Request) (src io.Reader, closeBody func(), herr *httpError) {
	limit := int64(c.cfg.MaxBodyBytes)
	src = http.MaxBytesReader(w, r.Body, limit)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return src, func() {}, nil
	case "gzip":
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, nil, &httpError{http.StatusBadRequest, "bad_gzip", "the body is not valid gzip"}
		}
		return io.LimitReader(zr, limit+1), func() { zr.Close() }, nil
	default:
		return nil, nil, &httpError{http.StatusUnsupportedMediaType, "unsupported_encoding", "Content-Encoding must be gzip or absent"}
	}
}

// bodyError maps what reading n bytes of a body ended with to the answer.
func (c *Collector) bodyError(err error, n int64) *httpError {
	limit := int64(c.cfg.MaxBodyBytes)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig) || n > limit:
		return &httpError{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the body is over %d bytes (after decompression); split the batch", limit)}
	case errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF):
		return &httpError{http.StatusBadRequest, "bad_gzip", "the gzip stream is corrupt or cut short"}
	case err != nil && !errors.Is(err, io.EOF):
		return &httpError{http.StatusBadRequest, "bad_body", "the body could not be read"}
	}
	return nil
}

// splitEvents cuts a body into raw events without decoding them: a JSON array of events, or
// NDJSON (one event a line). Each piece is decoded once, by the event decision.
func splitEvents(body []byte, maxEvents int) ([][]byte, *httpError) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, &httpError{http.StatusBadRequest, "empty_body", "send a JSON array of events or NDJSON"}
	}
	var out [][]byte
	if trimmed[0] == '[' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		if _, err := dec.Token(); err != nil {
			return nil, &httpError{http.StatusBadRequest, "malformed_batch", "the body is not a JSON array"}
		}
		for dec.More() {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, &httpError{http.StatusBadRequest, "malformed_batch", fmt.Sprintf("element %d of the array is not JSON", len(out))}
			}
			if len(out) == maxEvents {
				return nil, &httpError{http.StatusRequestEntityTooLarge, "too_many_events", fmt.Sprintf("at most %d events a request; split the batch", maxEvents)}
			}
			out = append(out, raw)
		}
		if _, err := dec.Token(); err != nil {
			return nil, &httpError{http.StatusBadRequest, "malformed_batch", "the JSON array is not closed"}
		}
		if dec.More() {
			return nil, &httpError{http.StatusBadRequest, "malformed_batch", "data after the JSON array"}
		}
		return out, nil
	}
	for line := range bytes.SplitSeq(trimmed, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(out) == maxEvents {
			return nil, &httpError{http.StatusRequestEntityTooLarge, "too_many_events", fmt.Sprintf("at most %d events a request; split the batch", maxEvents)}
		}
		out = append(out, line)
	}
	return out, nil
}

// Ready reports whether the collector can take events: not while Kafka writes fail.
func (c *Collector) Ready() error {
	if until := c.ready.Load(); until != 0 && time.Now().UnixNano() < until {
		return fmt.Errorf("kafka write failed recently")
	}
	return nil
}

func (c *Collector) readyz(w http.ResponseWriter, _ *http.Request) {
	if until := c.ready.Load(); until != 0 && time.Now().UnixNano() < until {
		w.Header().Set("Retry-After", strconv.Itoa(int(c.cfg.RetryAfter.Round(time.Second)/time.Second)))
		http.Error(w, "kafka write failed recently", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// TokenHash returns the config line for a token: tenant:hex(sha256(token)).
func TokenHash(tenant, token string) string {
	sum := sha256.Sum256([]byte(token))
	return tenant + ":" + hex.EncodeToString(sum[:])
}
