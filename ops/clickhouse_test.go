package ops

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
)

// A role started while ClickHouse is away keeps trying (and says so) until its context ends.
func TestAwaitClickHouseRetriesWhileUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var logs bytes.Buffer
	c := config.Default().ClickHouse
	c.Addr, c.DialTimeout = []string{addr}, 200*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	began := time.Now()
	conn, err := AwaitClickHouse(ctx, c, slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil {
		conn.Close()
		t.Fatal("connected to nothing")
	}
	if d := time.Since(began); d < 1500*time.Millisecond {
		t.Errorf("gave up after %s, before its context ended", d)
	}
	if n := strings.Count(logs.String(), "ClickHouse cannot be reached; retrying"); n < 2 {
		t.Errorf("logged %d retries:\n%s", n, logs.String())
	}
}

// A server that answers with an error (here: a user that does not exist) is not waited for.
func TestAwaitClickHouseFailsAtOnceOnAnError(t *testing.T) {
	_, cfg := servicetest.ClickHouse(t)
	c := cfg.ClickHouse
	c.Username, c.Password = "shukei_no_such_user", "x"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var logs bytes.Buffer
	began := time.Now()
	conn, err := AwaitClickHouse(ctx, c, slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil {
		conn.Close()
		t.Fatal("connected as a user that does not exist")
	}
	if d := time.Since(began); d > 5*time.Second || logs.Len() > 0 {
		t.Errorf("retried an authentication error for %s:\n%s\nerr: %v", d, logs.String(), err)
	}
}
