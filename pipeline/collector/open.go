package collector

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/registry"
)

// Role is the collector as a long-running role: the collector, its Kafka writer, the registry
// cache its tokens come from (nil without ClickHouse), its metrics and its connection. Open
// makes one; Run runs it.
type Role struct {
	cfg     config.Config
	log     *slog.Logger
	c       *Collector
	w       *kafka.Writer
	cache   *registry.Cache
	metrics *prometheus.Registry
	conn    driver.Conn
}

// Open wires the collector role: its Kafka writer, the collector, and the tenant registry its
// tokens come from, read as its own user (promise 16). Tokens issued by 'shukei tenants' live
// in the registry; without ClickHouse the collector still serves the configured ones. With
// none configured it waits for the registry (a collector started while ClickHouse restarts).
// Close releases the writer and the connection.
func Open(ctx context.Context, cfg config.Config, log *slog.Logger) (*Role, error) {
	reg := ops.NewRegistry()
	w := NewKafkaWriter(cfg.Kafka, cfg.Collector)
	r := &Role{cfg: cfg, log: log, w: w, metrics: reg}
	c, err := New(cfg, Deps{Writer: w, Registry: reg, Log: log})
	if err != nil {
		r.Close()
		return nil, err
	}
	r.c = c
	open := ops.OpenClickHouse
	if len(cfg.Collector.IngestTokens) == 0 {
		open = func(ctx context.Context, c config.ClickHouse) (driver.Conn, error) {
			return ops.AwaitClickHouse(ctx, c, log)
		}
	}
	// It reads tokens only: its user may read the registry and nothing else (promise 16).
	chc, err := ops.RoleClickHouse(cfg, "collector", "", log)
	if err != nil {
		r.Close()
		return nil, err
	}
	if conn, err := open(ctx, chc); err == nil {
		r.conn = conn
		r.cache = registry.NewCache(registry.New(conn, cfg.ClickHouse.Database, nil), nil, cfg.Registry.Refresh, log)
		if err := r.cache.Refresh(ctx); err != nil {
			r.Close()
			return nil, fmt.Errorf("read the tenant registry (run 'shukei migrate' first?): %w", err)
		}
		c.UseRegistry(r.cache)
	} else if len(cfg.Collector.IngestTokens) == 0 {
		r.Close()
		return nil, fmt.Errorf("no ingest tokens configured and the tenant registry is unreachable: %w", err)
	} else {
		log.Warn("tenant registry unreachable; only configured ingest tokens are accepted", "err", err)
	}
	return r, nil
}

// Run serves the ingest API on collector.listen, and /metrics, /healthz and /readyz on
// collector.ops_listen, with the registry cache (if any), until ctx ends.
func (r *Role) Run(ctx context.Context) error {
	r.log.Info("collector listening", "addr", r.cfg.Collector.Listen, "topic", r.cfg.Kafka.RawTopic)
	return ops.RunRole(ctx, ops.Role{Listen: r.cfg.Collector.OpsListen, Metrics: r.metrics, Cache: r.cache, Ready: r.c.Ready}, r.c.Run)
}

// Close closes the role's registry connection and its Kafka writer.
func (r *Role) Close() {
	if r.conn != nil {
		r.conn.Close()
	}
	r.w.Close()
}

// NewToken makes a new random ingest token for tenant: the token (shown once, for the
// tenant's collectors) and the collector.ingest_tokens entry, which holds only its SHA-256.
func NewToken(tenant string) (token, entry string, err error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	tok := "shk_" + base64.RawURLEncoding.EncodeToString(b[:])
	return tok, TokenHash(tenant, tok), nil
}

// PrintNewToken makes a new ingest token for tenant (NewToken) and writes it to w with its
// collector.ingest_tokens entry: 'shukei collector token'.
func PrintNewToken(w io.Writer, tenant string) error {
	tok, entry, err := NewToken(tenant)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "token: %s\n", tok)
	fmt.Fprintf(w, "ingest_tokens entry: %s\n", entry)
	return nil
}
