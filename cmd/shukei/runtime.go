package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/registry"
)

// openClickHouse connects and checks the server answers.
func openClickHouse(ctx context.Context, c config.ClickHouse) (driver.Conn, error) {
	conn, err := clickhouse.Open(c.Options())
	if err != nil {
		return nil, fmt.Errorf("connect to ClickHouse at %v: %w", c.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ClickHouse at %v does not answer (is it running? scripts/services.sh up): %w", c.Addr, err)
	}
	return conn, nil
}

// awaitClickHouse is openClickHouse for a long-running role: while the server cannot be
// reached (restarting, or not up yet when the role starts) it retries, backing off to 5 s
// between attempts and logging each failure, until ctx ends: a role started while ClickHouse
// is away waits for it instead of crash-looping under its supervisor. A server that answers
// with an error (a wrong password, say) is not retried.
//
// A role's user the server does not know yet (a role started right after 'shukei migrate'
// wrote its users.d file, which the server loads within seconds) is retried for c.AwaitUser.
func awaitClickHouse(ctx context.Context, c config.ClickHouse, log *slog.Logger) (driver.Conn, error) {
	wait := 250 * time.Millisecond
	authUntil := time.Now().Add(c.AwaitUser)
	for {
		conn, err := openClickHouse(ctx, c)
		var exc *clickhouse.Exception
		if errors.As(err, &exc) && (exc.Code == 192 || exc.Code == 193 || exc.Code == 516) && time.Now().Before(authUntil) && ctx.Err() == nil {
			log.Info("ClickHouse does not know this role's user yet; retrying", "user", c.Username, "err", err)
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		if err == nil || errors.As(err, &exc) || ctx.Err() != nil {
			return conn, err
		}
		log.Warn("ClickHouse cannot be reached; retrying", "addr", c.Addr, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func masterKey(c config.Anonymizer) (*pseudonym.MasterKey, error) {
	return pseudonym.LoadMasterKey(c.MasterKeyFile, c.MasterKey)
}

// newRegistry is the process's metric registry with the Go and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveOps serves /metrics, /healthz and /readyz for a role without an HTTP API of its own,
// until ctx ends.
func serveOps(ctx context.Context, addr string, reg *prometheus.Registry, ready func() error) error {
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
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// withClickHouse runs fn on a connection that is closed afterwards: the one-shot commands'
// way to ClickHouse.
func withClickHouse(ctx context.Context, c config.ClickHouse, fn func(driver.Conn) error) error {
	conn, err := openClickHouse(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(conn)
}

// runRole runs a long-lived role with its registry cache and its /metrics, /healthz and /readyz
// (ready while the registry is fresh); they run together and stop together (oklog/run).
func runRole(ctx context.Context, cfg config.Config, listen string, reg *prometheus.Registry, cache *registry.Cache, role func(context.Context) error) error {
	var g run.Group
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.Add(func() error { return role(runCtx) }, func(error) { cancel() })
	g.Add(func() error { return cache.Run(runCtx) }, func(error) { cancel() })
	g.Add(func() error {
		return serveOps(runCtx, listen, reg, func() error {
			if time.Since(cache.Snapshot().Loaded) > 10*cfg.Processor.RegistryRefresh {
				return errors.New("tenant registry is stale")
			}
			return nil
		})
	}, func(error) { cancel() })
	return g.Run()
}

// chainKey parses a key given as a setting's value.
func chainKey(v, what string) ([]byte, error) {
	k, err := chain.ParseKey(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return k, nil
}

// usersKey is the administrator's secret every role's key derives from:
// clickhouse.users_key_file, else derived from the master key; nil when neither is set.
func usersKey(cfg config.Config) ([]byte, error) {
	if f := cfg.ClickHouse.UsersKeyFile; f != "" {
		return chain.LoadKey("clickhouse.users_key_file", f)
	}
	if v := cfg.ClickHouse.UsersKey; v != "" {
		return chainKey(v, "clickhouse.users_key")
	}
	if cfg.Anonymizer.MasterKeyFile == "" && cfg.Anonymizer.MasterKey == "" {
		return nil, nil
	}
	master, err := masterKey(cfg.Anonymizer)
	if err != nil {
		return nil, err
	}
	return master.Derive("clickhouse-users"), nil
}

// roleKey is role's key: clickhouse.role_key_file, else derived from the users key; nil when
// no key is configured at all.
func roleKey(cfg config.Config, role string) ([]byte, error) {
	if f := cfg.ClickHouse.RoleKeyFile; f != "" {
		return chain.LoadKey("clickhouse.role_key_file", f)
	}
	if v := cfg.ClickHouse.RoleKey; v != "" {
		return chainKey(v, "clickhouse.role_key")
	}
	uk, err := usersKey(cfg)
	if err != nil || uk == nil {
		return nil, err
	}
	return migrations.RoleKey(uk, cfg.ClickHouse.Database, role), nil
}

// roleClickHouse returns the settings to connect as role's user named <db>_<role><suffix>
// (promise 16). Without any key configured it returns the administrator's settings and says
// so in the log: a development setup, never one docker-compose.yml or 'make demo' makes.
func roleClickHouse(cfg config.Config, role, suffix string, log *slog.Logger) (config.ClickHouse, error) {
	key, err := roleKey(cfg, role)
	if err != nil {
		return config.ClickHouse{}, err
	}
	if key == nil {
		log.Warn("no clickhouse.role_key_file, users key or master key: connecting as the administrator's user, without least privilege", "role", role)
		return cfg.ClickHouse, nil
	}
	users, err := migrations.RoleUsers(cfg.ClickHouse.Database, role, key)
	if err != nil {
		return config.ClickHouse{}, err
	}
	u, ok := migrations.Find(users, cfg.ClickHouse.Database+"_"+role+suffix)
	if !ok {
		return config.ClickHouse{}, fmt.Errorf("role %s has no ClickHouse user %s_%s%s", role, cfg.ClickHouse.Database, role, suffix)
	}
	c := cfg.ClickHouse
	c.Username, c.Password, c.DefaultDatabase, c.AwaitUser = u.Name, u.Password, u.Databases[0], 30*time.Second
	return c, nil
}
