package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/registry"
)

// NewRegistry is the process's metric registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ShutdownError is Serve's error when the server did not shut down within its timeout: Err
// is http.Server.Shutdown's.
type ShutdownError struct{ Err error }

func (e *ShutdownError) Error() string { return "shutdown: " + e.Err.Error() }

func (e *ShutdownError) Unwrap() error { return e.Err }

// Serve serves srv on ln until ctx ends, then shuts it down, letting the requests in flight
// finish within timeout: the one way every role serves HTTP (the collector's API, the query
// service, the ops listener). It returns the server's error if it stopped by itself, a
// *ShutdownError if the requests in flight outlasted timeout, else nil.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	if err != nil {
		return &ShutdownError{err}
	}
	return nil
}

// ignoreShutdown is err unless it is a *ShutdownError.
func ignoreShutdown(err error) error {
	if _, ok := errors.AsType[*ShutdownError](err); ok {
		return nil
	}
	return err
}

// ServeOps serves /metrics, /healthz and /readyz for a role without an HTTP API of its own,
// until ctx ends.
func ServeOps(ctx context.Context, addr string, reg *prometheus.Registry, ready func() error) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return ignoreShutdown(Serve(ctx, srv, ln, 5*time.Second))
}

// Role is how RunRole runs a long-lived role.
type Role struct {
	// Listen is the ops listener's address (/metrics, /healthz, /readyz).
	Listen string
	// Metrics is served on /metrics.
	Metrics *prometheus.Registry
	// Cache, if not nil, is the registry cache that runs (refreshes) with the role.
	Cache *registry.Cache
	// Ready is /readyz; nil: ready while Cache (then required) is fresh (Fresh with Refresh).
	Ready func() error
	// Refresh is the cache's refresh interval (registry.refresh).
	Refresh time.Duration
	// Name, if set, prefixes an error of the ops listener: "<Name> ops listener: ...".
	Name string
}

// Fresh is the readiness of a role that follows the tenant registry: ready while cache was
// loaded within the last 10 refresh intervals.
func Fresh(cache *registry.Cache, refresh time.Duration) func() error {
	return func() error {
		if time.Since(cache.Snapshot().Loaded) > 10*refresh {
			return errors.New("tenant registry is stale")
		}
		return nil
	}
}

// RunRole runs a long-lived role with its registry cache and its /metrics, /healthz and /readyz
// (ready while the registry is fresh, unless r.Ready says otherwise); they run together and
// stop together (oklog/run).
func RunRole(ctx context.Context, r Role, role func(context.Context) error) error {
	ready := r.Ready
	if ready == nil {
		ready = Fresh(r.Cache, r.Refresh)
	}
	var g run.Group
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.Add(func() error { return role(runCtx) }, func(error) { cancel() })
	if r.Cache != nil {
		g.Add(func() error { return r.Cache.Run(runCtx) }, func(error) { cancel() })
	}
	g.Add(func() error {
		err := ServeOps(runCtx, r.Listen, r.Metrics, ready)
		if err != nil && r.Name != "" {
			return fmt.Errorf("%s ops listener: %w", r.Name, err)
		}
		return err
	}, func(error) { cancel() })
	return g.Run()
}

// Opened is a role its package's Open made: Run runs it until its context ends, Close
// releases its connections.
type Opened interface {
	Run(ctx context.Context) error
	Close()
}

// OpenAndRun is what 'shukei <role>' does: it opens the role with open (the role package's
// Open), runs it until ctx ends and closes it.
//
// Opening reads from ClickHouse (the registry, the cluster's layout) after it answered a
// ping; a server killed or restarted in between drops the connection mid-answer. Such an
// open is tried again, backing off to 5 s, until ctx ends, as AwaitClickHouse waits for a
// server away at the start: a role started beside a restarting server waits for it instead
// of exiting. An open refused by a server that answered (an exception, a missing table) or
// by the configuration is not retried.
func OpenAndRun[R Opened](ctx context.Context, cfg config.Config, log *slog.Logger, open func(context.Context, config.Config, *slog.Logger) (R, error)) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wait := 250 * time.Millisecond
	for {
		r, err := open(ctx, cfg, log)
		if err == nil {
			defer r.Close()
			return r.Run(ctx)
		}
		if !Unreachable(err) || ctx.Err() != nil {
			return err
		}
		log.Warn("a service dropped the connection while the role was starting; starting again", "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// Unreachable reports whether err says a server could not be reached or dropped the
// connection (refused, reset, closed in the middle of an answer, timed out) rather than
// answered with an error of its own: what is worth trying again once it is back.
func Unreachable(err error) bool {
	var exc *clickhouse.Exception
	switch {
	case err == nil, errors.As(err, &exc), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}
