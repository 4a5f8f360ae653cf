// Package query is the purpose-scoped query service (docs/DESIGN.md §5): principals authenticate
// with tokens, every request declares one purpose, and only named, parameterised reports run —
// each bound to one purpose and reading only that purpose's database as that purpose's
// read-only ClickHouse user. Every request, allowed or denied, is appended to the hash-chained
// audit log before it is answered; a request whose record cannot be written is refused.
// Requests without a valid token are the exception that keeps a flood of them cheap (promise
// 18): refused from memory, paced, counted, and audited once an interval (unauth.go).
package query

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/query/breakglass"
	"github.com/shukei/shukei/query/principal"
)

// Deps are the query service's collaborators, which Open builds and tests inject: its stores,
// its connections and what it derives from the policy. The settings come from the
// configuration's query section (New).
type Deps struct {
	Principals *principal.Store
	Audit      *audit.Log
	Tickets    TicketSource
	BreakGlass *breakglass.Store
	Readers    map[string]driver.Conn // purpose → that purpose's read-only connection
	Database   string                 // the internal database; purpose databases are <Database>_<purpose>
	Cluster    string                 // clickhouse.cluster: marts are read through their Distributed tables
	K          int                    // fewest tenants behind an aggregate cell (the policy's, or a larger query.k)
	Budget     ledger.Budget          // external_aggregate's monthly allowance
	YearBudget ledger.Budget          // and over any 365 days of windows
	Registry   prometheus.Registerer  // receives the metrics; nil: a registry of its own
	Ready      func() error           // /readyz; nil: always ready
	Log        *slog.Logger           // nil: discarded
	Now        func() time.Time       // nil: time.Now in UTC
}

// Server answers the API, the OpenAPI document and the web page.
type Server struct {
	cfg    config.Query
	d      Deps
	m      *metrics
	mux    *http.ServeMux
	index  *principal.Index
	slots  chan struct{}
	unauth *unauthSummary
	pace   *pace
}

// New checks the dependencies and builds the server with the settings of cfg.Query: max_rows,
// timeout, support_lookback, max_in_flight, unauthenticated_summary_every and
// unauthenticated_rate (each, when zero, a default: 10000, 10s, none, 64, 1m, 2000).
func New(cfg config.Config, d Deps) (*Server, error) {
	c := cfg.Query
	if d.Principals == nil || d.Audit == nil {
		return nil, errors.New("query: principals and the audit log are required")
	}
	if d.K < policy.MinK {
		return nil, fmt.Errorf("query: k=%d; an aggregate cell needs at least %d tenants", d.K, policy.MinK)
	}
	if c.MaxRows <= 0 {
		c.MaxRows = 10000
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if d.Now == nil {
		d.Now = func() time.Time { return time.Now().UTC() }
	}
	if d.Log == nil {
		d.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.Ready == nil {
		d.Ready = func() error { return nil }
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 64
	}
	if c.UnauthenticatedSummaryEvery <= 0 {
		c.UnauthenticatedSummaryEvery = time.Minute
	}
	if c.UnauthenticatedRate <= 0 {
		c.UnauthenticatedRate = 2000
	}
	s := &Server{cfg: c, d: d, m: newMetrics(d.Registry), mux: http.NewServeMux(),
		index: principal.NewIndex(d.Principals, principal.MinReload), slots: make(chan struct{}, c.MaxInFlight),
		pace: newPace(c.UnauthenticatedRate)}
	s.index.OnError = func(err error) {
		s.d.Log.Error("principals could not be read into the token index; tokens not in it are refused as unknown", "err", err)
	}
	s.unauth = &unauthSummary{every: c.UnauthenticatedSummaryEvery, log: d.Audit, logger: d.Log, failed: s.m.auditFailures.Inc}
	d.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "shukei_query_principal_loads_total",
		Help: "Reads of the principals table into the token index: at start, and at most one a second when a token is not in it.",
	}, func() float64 { return float64(s.index.Loads()) }))
	s.mux.HandleFunc("GET /v1/reports/{name}", s.handleReport)
	s.mux.HandleFunc("GET /v1/reports", s.handleCatalogue)
	s.mux.HandleFunc("GET /v1/whoami", s.handleWhoami)
	s.mux.HandleFunc("POST /v1/breakglass", s.handleBreakGlass("request"))
	s.mux.HandleFunc("POST /v1/breakglass/{id}/approve", s.handleBreakGlass("approve"))
	s.mux.HandleFunc("POST /v1/breakglass/{id}/revoke", s.handleBreakGlass("revoke"))
	s.mux.HandleFunc("GET /openapi.json", s.handleOpenAPI)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.d.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	s.mux.Handle("GET /", webHandler())
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// apiError is the body of every 4xx and 5xx answer.
type apiError struct {
	Error  string `json:"error"`
	Status int    `json:"status"`
	Audit  uint64 `json:"audit_seq,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

// request carries one request's audit record as it is filled in.
type request struct {
	rec   audit.Record
	start time.Time
	p     *principal.Principal
	slot  bool // holds one of the MaxInFlight slots
}

// Close ends what the server keeps open: the summary of requests without a valid token is
// written to the audit log now rather than at the end of its interval.
func (s *Server) Close() { s.unauth.flush() }

// LoadPrincipals fills the token index now, so the first requests find their tokens.
func (s *Server) LoadPrincipals(ctx context.Context) error { return s.index.Load(ctx) }

// authenticate reads the bearer token and finds its principal, and refuses one that is
// disabled, whose grant has expired, or whose kind is unknown (403). It answers every
// refusal itself and reports whether the request goes on; one that does holds a slot, which
// the handler gives back with release.
//
// A request without a valid token (none, malformed, unknown) is refused (401) from memory —
// the token index, no ClickHouse query — before it takes a slot, counted, and audited once
// per interval (unauthSummary). A token the index knows takes a slot (503 with Retry-After
// when all MaxInFlight are taken), then its principal's current row is read, so a principal
// disabled a moment ago is refused at once, with a record of its own.
func (s *Server) authenticate(ctx context.Context, w http.ResponseWriter, r *http.Request, req *request) bool {
	h := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	switch {
	case h == "":
		s.refuseUnauthenticated(ctx, w, req, "no token", "no token: send Authorization: Bearer <token>")
		return false
	case !ok || len(token) > 256 || token == "":
		s.refuseUnauthenticated(ctx, w, req, "malformed", "malformed Authorization header: want Bearer <token>")
		return false
	}
	id, err := s.index.Lookup(ctx, token)
	if err != nil {
		s.refuseUnauthenticated(ctx, w, req, "unknown token", "unknown token")
		return false
	}
	req.rec.Principal = id
	select {
	case s.slots <- struct{}{}:
		req.slot = true
		s.m.inFlight.Inc()
	default:
		s.m.overloaded.Inc()
		req.rec.Decision = audit.Denied
		req.rec.Reason = fmt.Sprintf("over query.max_in_flight: %d requests being answered", s.cfg.MaxInFlight)
		seq, ok := s.finish(ctx, w, req)
		if !ok {
			return false
		}
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "the service is answering as many requests as it may at once: retry later", Status: 503, Audit: seq})
		return false
	}
	p, err := s.index.Current(ctx, id, token)
	if errors.Is(err, principal.ErrUnknownToken) {
		// The principal no longer holds this token: the index was older than the row.
		s.release(req)
		req.rec.Principal = ""
		s.refuseUnauthenticated(ctx, w, req, "unknown token", "unknown token")
		return false
	}
	if err != nil {
		s.deny(ctx, w, req, http.StatusServiceUnavailable, failed("principals cannot be read", err))
		s.release(req)
		return false
	}
	req.p = &p
	req.rec.Principal, req.rec.Kind, req.rec.ContractRef = p.ID, p.Kind, p.ContractRef
	// Every request, whoami and break-glass included: enabled, unexpired, of a known kind.
	if err := p.Active(s.d.Now()); err != nil {
		s.deny(ctx, w, req, http.StatusForbidden, err)
		s.release(req)
		return false
	}
	return true
}

// release gives back the request's slot, if it holds one.
func (s *Server) release(req *request) {
	if req.slot {
		req.slot = false
		<-s.slots
		s.m.inFlight.Dec()
	}
}

// refuseUnauthenticated answers a request without a valid token: paced (at most
// UnauthenticatedRate a second), 401, with the seq of its interval's audit record, and no
// ClickHouse query but that record's, once an interval.
func (s *Server) refuseUnauthenticated(ctx context.Context, w http.ResponseWriter, req *request, kind, why string) {
	s.m.unauthenticated.Inc()
	s.pace.wait(ctx)
	seq, err := s.unauth.refuse(kind, why)
	s.m.observe(req.rec.Report, audit.Denied, time.Since(req.start))
	if err != nil {
		if !errors.Is(err, errAuditBackoff) {
			s.d.Log.Error("audit log append failed; request without a valid token refused", "err", err)
		}
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "the audit log cannot be written, so the request is refused", Status: 503})
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="shukei"`)
	writeJSON(w, http.StatusUnauthorized, apiError{Error: why, Status: http.StatusUnauthorized, Audit: seq})
}

// finish appends the request's record and reports whether the answer may be sent. Without a
// record there is no answer: 503.
func (s *Server) finish(ctx context.Context, w http.ResponseWriter, req *request) (uint64, bool) {
	if req.rec.Principal == "" {
		req.rec.Principal = "anonymous"
	}
	// The audit write must not be cut short by a client that went away.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	rec, err := s.d.Audit.Append(actx, req.rec)
	s.m.observe(req.rec.Report, req.rec.Decision, time.Since(req.start))
	if err != nil {
		s.m.auditFailures.Inc()
		s.d.Log.Error("audit log append failed; request refused", "principal", req.rec.Principal, "report", req.rec.Report, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "the audit log cannot be written, so the request is refused", Status: 503})
		return 0, false
	}
	return rec.Seq, true
}

// deny records a refusal and answers it. A 5xx answer never carries the server's own error
// text (ClickHouse's messages name databases, users and sometimes values): only what a
// serverError says publicly; the audit record and the log keep the whole error.
func (s *Server) deny(ctx context.Context, w http.ResponseWriter, req *request, status int, err error) {
	req.rec.Decision, req.rec.Reason = audit.Denied, trunc(err.Error())
	msg := err.Error()
	if status >= 500 {
		req.rec.Decision = audit.Failed
		msg = "the service could not answer"
		var se *serverError
		if errors.As(err, &se) {
			msg = se.public
		}
		s.d.Log.Error("request failed", "principal", req.rec.Principal, "report", req.rec.Report, "status", status, "err", err)
	}
	seq, ok := s.finish(ctx, w, req)
	if !ok {
		return
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="shukei"`)
	}
	if status >= 500 {
		msg += fmt.Sprintf(" (audit record #%d holds the details)", seq)
	}
	writeJSON(w, status, apiError{Error: msg, Status: status, Audit: seq})
}

// serverError is a failure of the service: public is all the client is told.
type serverError struct {
	public string
	err    error
}

func (e *serverError) Error() string {
	if e.err == nil {
		return e.public
	}
	return e.public + ": " + e.err.Error()
}
func (e *serverError) Unwrap() error { return e.err }

func failed(public string, err error) error { return &serverError{public: public, err: err} }

func (s *Server) newRequest(report string) *request {
	return &request{start: time.Now(), rec: audit.Record{Report: report}}
}

func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	rep, known := lookup(name)
	req := s.newRequest("unknown")
	if known {
		req.rec.Report = name
	}
	q := r.URL.Query()
	req.rec.ParamsHash = paramsHash(q)
	if !s.authenticate(ctx, w, r, req) {
		return
	}
	defer s.release(req)
	purpose := q.Get("purpose")
	if _, err := policy.ParsePurpose(purpose); err != nil || len(q["purpose"]) != 1 {
		if purpose != "" {
			req.rec.Purpose = "invalid"
		}
		s.deny(ctx, w, req, http.StatusBadRequest, fmt.Errorf("declare one purpose: purpose=%s", purposeList()))
		return
	}
	req.rec.Purpose = purpose
	if purpose == "support" {
		req.rec.Tenant = trunc(q.Get("tenant"))
	}
	now := s.d.Now()
	if err := req.p.Authorize(purpose, now); err != nil {
		// A support trace under an approved break-glass grant needs no support grant: the
		// grant itself is checked with the report (its principal, tenant and time box).
		breakGlass := purpose == "support" && q.Get("breakglass") != "" && errors.Is(err, principal.ErrNotGranted)
		if !breakGlass {
			s.deny(ctx, w, req, http.StatusForbidden, err)
			return
		}
		req.rec.Reason = "break-glass"
	}
	if !known {
		s.deny(ctx, w, req, http.StatusNotFound, fmt.Errorf("no report %q; GET /v1/reports lists them", trunc(name)))
		return
	}
	if rep.Purpose != purpose {
		s.deny(ctx, w, req, http.StatusForbidden, fmt.Errorf("report %s serves purpose %s, not %s: a report is read only for its own purpose", rep.Name, rep.Purpose, purpose))
		return
	}
	format, err := outputFormat(r)
	if err != nil {
		s.deny(ctx, w, req, http.StatusBadRequest, err)
		return
	}
	args, err := parse(rep.Params, q, now)
	if err != nil {
		s.deny(ctx, w, req, http.StatusBadRequest, err)
		return
	}
	conn := s.d.Readers[purpose]
	if conn == nil {
		s.deny(ctx, w, req, http.StatusServiceUnavailable, fmt.Errorf("this service has no reader for purpose %s", purpose))
		return
	}
	var bg BreakGlassSource
	if s.d.BreakGlass != nil {
		bg = s.d.BreakGlass
	}
	env := &Env{Conn: conn, DB: s.d.Database + "_" + purpose, Prefix: s.d.Database, Cluster: s.d.Cluster, K: s.d.K, MaxRows: s.cfg.MaxRows, Now: now,
		Tickets: s.d.Tickets, Lookback: s.cfg.SupportLookback, Budget: s.d.Budget, YearBudget: s.d.YearBudget, BreakGlass: bg, Principal: req.p.ID}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if rep.authorize != nil {
		err := rep.authorize(rctx, env, args)
		req.rec.Ticket = env.ticketID
		var f *Forbidden
		if errors.As(err, &f) {
			s.deny(ctx, w, req, http.StatusForbidden, err)
			return
		} else if err != nil {
			s.deny(ctx, w, req, http.StatusServiceUnavailable, failed("authorisation could not be checked", err))
			return
		}
	}
	rows, err := rep.run(rctx, env, args)
	var bad *BadParam
	switch {
	case errors.As(err, &bad):
		s.deny(ctx, w, req, http.StatusBadRequest, err)
		return
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(rctx.Err(), context.DeadlineExceeded):
		s.deny(ctx, w, req, http.StatusGatewayTimeout, failed(fmt.Sprintf("report %s took longer than %s", rep.Name, s.cfg.Timeout), err))
		return
	case err != nil:
		s.d.Log.Error("report failed", "report", rep.Name, "err", err)
		s.deny(ctx, w, req, http.StatusInternalServerError, failed("report "+rep.Name+" failed", err))
		return
	}
	truncated := len(rows) > s.cfg.MaxRows
	if truncated {
		rows = rows[:s.cfg.MaxRows]
	}
	req.rec.Decision, req.rec.Rows = audit.Allowed, uint64(len(rows))
	seq, ok := s.finish(ctx, w, req)
	if !ok {
		return
	}
	s.m.rows.WithLabelValues(rep.Name).Add(float64(len(rows)))
	w.Header().Set("X-Shukei-Audit-Seq", strconv.FormatUint(seq, 10))
	if truncated {
		w.Header().Set("X-Shukei-Truncated", strconv.Itoa(s.cfg.MaxRows))
	}
	if format == "csv" {
		writeCSV(w, rep, rows)
		return
	}
	res := result{Report: rep.Name, Purpose: purpose, Title: rep.Title, GeneratedAt: now.Truncate(time.Second), Params: canonical(args),
		Columns: rep.Columns, Rows: make([]map[string]any, len(rows)), Chart: rep.Chart, AuditSeq: seq, Truncated: truncated}
	if rep.Threshold {
		res.K = s.d.K
	}
	for i, row := range rows {
		m := make(map[string]any, len(row))
		for j, v := range row {
			m[rep.Columns[j].Name] = jsonValue(v)
		}
		res.Rows[i] = m
	}
	writeJSON(w, http.StatusOK, res)
}

// result is a report's JSON answer.
type result struct {
	Report      string           `json:"report"`
	Purpose     string           `json:"purpose"`
	Title       string           `json:"title"`
	GeneratedAt time.Time        `json:"generated_at"`
	K           int              `json:"k,omitempty"`
	Params      map[string]any   `json:"params"`
	Columns     []Column         `json:"columns"`
	Rows        []map[string]any `json:"rows"`
	Chart       Chart            `json:"chart"`
	AuditSeq    uint64           `json:"audit_seq"`
	Truncated   bool             `json:"truncated,omitempty"`
}

func canonical(a Args) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = jsonValue(v)
	}
	return out
}

func jsonValue(v any) any {
	if t, ok := v.(time.Time); ok {
		if t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 {
			return t.Format(time.DateOnly)
		}
		return t.Format(time.RFC3339)
	}
	return v
}

func outputFormat(r *http.Request) (string, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "json", "csv":
		return f, nil
	case "":
		if strings.Contains(r.Header.Get("Accept"), "text/csv") {
			return "csv", nil
		}
		return "json", nil
	default:
		return "", badf("format %q is not json or csv", trunc(f))
	}
}

func writeCSV(w http.ResponseWriter, rep *Report, rows [][]any) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+rep.Name+`.csv"`)
	cw := csv.NewWriter(w)
	head := make([]string, len(rep.Columns))
	for i, c := range rep.Columns {
		head[i] = c.Name
	}
	_ = cw.Write(head)
	rec := make([]string, len(rep.Columns))
	for _, row := range rows {
		for i, v := range row {
			switch x := jsonValue(v).(type) {
			case nil:
				rec[i] = ""
			case float64:
				rec[i] = strconv.FormatFloat(x, 'f', -1, 64)
			default:
				rec[i] = fmt.Sprint(x)
			}
			// A cell a spreadsheet would run as a formula is quoted as text.
			if rec[i] != "" && strings.ContainsRune("=+-@", rune(rec[i][0])) {
				if _, err := strconv.ParseFloat(rec[i], 64); err != nil {
					rec[i] = "'" + rec[i]
				}
			}
		}
		_ = cw.Write(rec)
	}
	cw.Flush()
}

func purposeList() string {
	var names []string
	for _, p := range policy.Purposes() {
		names = append(names, p.String())
	}
	return strings.Join(names, "|")
}

// reportInfo is a report as the catalogue and the web page describe it.
type reportInfo struct {
	Name        string      `json:"name"`
	Purpose     string      `json:"purpose"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	Threshold   bool        `json:"k_threshold"`
	Params      []paramInfo `json:"params"`
	Columns     []Column    `json:"columns"`
	Chart       Chart       `json:"chart"`
}

type paramInfo struct {
	Name     string   `json:"name"`
	Kind     Kind     `json:"kind"`
	Doc      string   `json:"doc"`
	Values   []string `json:"values,omitempty"`
	Min      *int     `json:"min,omitempty"`
	Max      *int     `json:"max,omitempty"`
	Multi    bool     `json:"multi,omitempty"`
	Required bool     `json:"required,omitempty"`
	Default  string   `json:"default,omitempty"`
}

func info(r *Report) reportInfo {
	ri := reportInfo{Name: r.Name, Purpose: r.Purpose, Title: r.Title, Description: r.Description, Threshold: r.Threshold,
		Columns: r.Columns, Chart: r.Chart}
	for _, p := range r.Params {
		pi := paramInfo{Name: p.Name, Kind: p.Kind, Doc: p.Doc, Values: p.Values, Multi: p.Multi, Required: p.Required, Default: p.Default}
		if p.Kind == Int {
			pi.Min, pi.Max = &p.Min, &p.Max
		}
		ri.Params = append(ri.Params, pi)
	}
	return ri
}

// handleCatalogue lists every report to a signed-in principal, audited like every request
// (the same descriptions are public in /openapi.json; the public listener answers nothing else
// without a token).
func (s *Server) handleCatalogue(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	req := s.newRequest("catalogue")
	req.rec.ParamsHash = paramsHash(url.Values{})
	if !s.authenticate(ctx, w, r, req) {
		return
	}
	defer s.release(req)
	req.rec.Decision = audit.Allowed
	if _, ok := s.finish(ctx, w, req); !ok {
		return
	}
	out := make([]reportInfo, 0, len(reports))
	for _, r := range reports {
		out = append(out, info(r))
	}
	writeJSON(w, http.StatusOK, map[string]any{"reports": out})
}

// handleWhoami tells a signed-in principal who it is and which purposes and reports it may use.
func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	req := s.newRequest("whoami")
	req.rec.ParamsHash = paramsHash(url.Values{})
	if !s.authenticate(ctx, w, r, req) {
		return
	}
	defer s.release(req)
	now := s.d.Now()
	var purposes []string
	var reps []reportInfo
	for _, pur := range req.p.Purposes {
		if req.p.Authorize(pur, now) == nil {
			purposes = append(purposes, pur)
			for _, rep := range reports {
				if rep.Purpose == pur {
					reps = append(reps, info(rep))
				}
			}
		}
	}
	req.rec.Decision = audit.Allowed
	seq, ok := s.finish(ctx, w, req)
	if !ok {
		return
	}
	var expires any
	if !req.p.Expires.IsZero() {
		expires = req.p.Expires.UTC().Format(time.RFC3339)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"principal": req.p.ID, "kind": req.p.Kind, "contract_ref": req.p.ContractRef, "expires_at": expires,
		"purposes": purposes, "reports": reps, "k": s.d.K, "audit_seq": seq,
	})
}

// breakGlassRequest is the body of POST /v1/breakglass.
type breakGlassRequest struct {
	Tenant        string `json:"tenant"`
	Clause        string `json:"clause"`
	Justification string `json:"justification"`
	TTL           string `json:"ttl"` // Go duration, e.g. 4h
}

type grantInfo struct {
	ID            string  `json:"id"`
	Principal     string  `json:"principal"`
	Purpose       string  `json:"purpose"`
	Tenant        string  `json:"tenant"`
	Clause        string  `json:"clause"`
	Justification string  `json:"justification"`
	TTL           string  `json:"ttl"`
	State         string  `json:"state"`
	ApprovedBy    string  `json:"approved_by,omitempty"`
	ExpiresAt     *string `json:"expires_at,omitempty"`
}

// handleBreakGlass serves the break-glass path (clause 3(2)-5..7) for an authenticated
// principal: request (an employee or affiliate granted support, with a written, printable
// justification), approve (another employee or affiliate holding the approver grant), revoke
// (the requester, the approver, or an approver-grant holder); the store decides who may.
// The store appends each step to the audit log itself; a refused step is audited here (403).
func (s *Server) handleBreakGlass(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		req := s.newRequest("breakglass_" + action)
		req.rec.Purpose = "support"
		if !s.authenticate(ctx, w, r, req) {
			return
		}
		defer s.release(req)
		if s.d.BreakGlass == nil {
			s.deny(ctx, w, req, http.StatusNotFound, errors.New("this service has no break-glass store"))
			return
		}
		var g breakglass.Grant
		var err error
		switch action {
		case "request":
			var body breakGlassRequest
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				s.deny(ctx, w, req, http.StatusBadRequest, fmt.Errorf("body: want {tenant, clause, justification, ttl}: %w", err))
				return
			}
			ttl, perr := time.ParseDuration(body.TTL)
			if perr != nil || !patterns[Ident].MatchString(body.Tenant) {
				s.deny(ctx, w, req, http.StatusBadRequest, fmt.Errorf("ttl %q must be a duration (4h) and tenant an identifier", trunc(body.TTL)))
				return
			}
			g, err = s.d.BreakGlass.Request(ctx, req.p.ID, body.Tenant, body.Clause, body.Justification, ttl)
		case "approve":
			req.rec.Ticket = trunc(r.PathValue("id"))
			g, err = s.d.BreakGlass.Approve(ctx, r.PathValue("id"), req.p.ID)
		case "revoke":
			req.rec.Ticket = trunc(r.PathValue("id"))
			g, err = s.d.BreakGlass.Revoke(ctx, r.PathValue("id"), req.p.ID)
		}
		if err != nil && g.Tenant != "" {
			req.rec.Tenant = g.Tenant // a refused step names the grant's tenant too
		}
		switch {
		case errors.Is(err, breakglass.ErrInvalid):
			s.deny(ctx, w, req, http.StatusBadRequest, err)
			return
		case errors.Is(err, breakglass.ErrNotFound):
			s.deny(ctx, w, req, http.StatusNotFound, err)
			return
		case errors.Is(err, breakglass.ErrSelfApprove), errors.Is(err, breakglass.ErrNotOpen), errors.Is(err, breakglass.ErrNotAllowed),
			errors.Is(err, principal.ErrDisabled), errors.Is(err, principal.ErrExpired), errors.Is(err, principal.ErrUnknownKind):
			s.deny(ctx, w, req, http.StatusForbidden, err)
			return
		case err != nil:
			s.deny(ctx, w, req, http.StatusServiceUnavailable, failed("the break-glass store cannot be read or written", err))
			return
		}
		s.m.observe(req.rec.Report, "allowed", time.Since(req.start))
		gi := grantInfo{ID: g.ID, Principal: g.Principal, Purpose: g.Purpose, Tenant: g.Tenant, Clause: g.Clause,
			Justification: g.Justification, TTL: g.TTL.String(), State: g.State(s.d.Now()), ApprovedBy: g.ApprovedBy}
		if !g.ExpiresAt.IsZero() {
			e := g.ExpiresAt.UTC().Format(time.RFC3339)
			gi.ExpiresAt = &e
		}
		status := http.StatusOK
		if action == "request" {
			status = http.StatusCreated
		}
		writeJSON(w, status, gi)
	}
}
