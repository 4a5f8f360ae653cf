package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/config"
)

// OpenClickHouse connects and checks the server answers.
func OpenClickHouse(ctx context.Context, c config.ClickHouse) (driver.Conn, error) {
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

// AwaitClickHouse is OpenClickHouse for a long-running role: while the server cannot be
// reached (restarting, or not up yet when the role starts) it retries, backing off to 5 s
// between attempts and logging each failure, until ctx ends: a role started while ClickHouse
// is away waits for it instead of crash-looping under its supervisor. A server that answers
// with an error (a wrong password, say) is not retried.
//
// A role's user the server does not know yet (a role started right after 'shukei migrate'
// wrote its users.d file, which the server loads within seconds) is retried for c.AwaitUser.
func AwaitClickHouse(ctx context.Context, c config.ClickHouse, log *slog.Logger) (driver.Conn, error) {
	wait := 250 * time.Millisecond
	authUntil := time.Now().Add(c.AwaitUser)
	for {
		conn, err := OpenClickHouse(ctx, c)
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

// WithClickHouse runs fn on a connection that is closed afterwards: the one-shot commands'
// way to ClickHouse.
func WithClickHouse(ctx context.Context, c config.ClickHouse, fn func(driver.Conn) error) error {
	conn, err := OpenClickHouse(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(conn)
}

// Conns are a role's connections, closed together.
type Conns []driver.Conn

// Close closes every connection.
func (cs Conns) Close() {
	for _, c := range cs {
		c.Close()
	}
}

// AwaitRoleClickHouse connects as each of role's users named by suffixes ("" is the role's
// own user, "_read" its reader...), the way a long-running role does (promise 16): first the
// settings of every user (RoleClickHouse), then a connection as each, in order
// (AwaitClickHouse). On an error it closes what it opened.
func AwaitRoleClickHouse(ctx context.Context, cfg config.Config, role string, log *slog.Logger, suffixes ...string) (Conns, error) {
	settings := make([]config.ClickHouse, len(suffixes))
	for i, s := range suffixes {
		c, err := RoleClickHouse(cfg, role, s, log)
		if err != nil {
			return nil, err
		}
		settings[i] = c
	}
	var conns Conns
	for _, c := range settings {
		conn, err := AwaitClickHouse(ctx, c, log)
		if err != nil {
			conns.Close()
			return nil, err
		}
		conns = append(conns, conn)
	}
	return conns, nil
}
