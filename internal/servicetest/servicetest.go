// Package servicetest gives each integration test its own ClickHouse databases and Kafka topics
// on the real services (scripts/services.sh up), and removes them when the test ends.
//
// When a service cannot be reached the test is skipped on a developer's machine, but fails when
// CI or SHUKEI_TEST_REQUIRE_SERVICES is set (make test sets it): a run that skipped its
// integration tests would be a green light for nothing.
package servicetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/topic"
)

// Config returns the configuration tests run with: the defaults (which match
// scripts/services.sh) overridden by SHUKEI_* variables, with a database name unique to t.
func Config(t testing.TB) config.Config {
	t.Helper()
	c := config.Default()
	if err := c.ApplyEnv(os.Environ()); err != nil {
		t.Fatalf("test configuration from the environment: %v", err)
	}
	c.ClickHouse.Database = Name(t, "t_")
	// Tests release base windows (minutes or days of test data), not weeks and months, unless
	// they say so.
	c.Aggregator.Epsilon, c.Aggregator.WeekEpsilon, c.Aggregator.MonthEpsilon = 0.2, 0, 0
	c.Aggregator.BudgetEpsilonYear = 0
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// AggregatorEnv is the environment that gives an aggregator subprocess the release settings
// Config gives in-process tests: base windows released at ε=0.2 per metric, no weeks or months.
func AggregatorEnv() []string {
	return []string{"SHUKEI_AGGREGATOR_EPSILON=0.2", "SHUKEI_AGGREGATOR_WEEK_EPSILON=0", "SHUKEI_AGGREGATOR_MONTH_EPSILON=0", "SHUKEI_AGGREGATOR_BUDGET_EPSILON_YEAR=0"}
}

// Name returns a name unique to this test and run: prefix, a readable part of the test name,
// and random hex, using only [a-z0-9_] so it is valid as a database or topic name.
func Name(t testing.TB, prefix string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	readable := b.String()
	if len(readable) > 18 {
		readable = readable[:18]
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return prefix + readable + "_" + hex.EncodeToString(rnd[:])
}

// Unavailable ends the test because a service is missing: Fatal under CI, Skip elsewhere.
func Unavailable(t testing.TB, service string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s unreachable: %v; start it with 'scripts/services.sh up' (make test does)", service, err)
	if os.Getenv("CI") != "" || os.Getenv("SHUKEI_TEST_REQUIRE_SERVICES") != "" {
		t.Fatalf("%s (CI or SHUKEI_TEST_REQUIRE_SERVICES is set, so a missing service fails the test)", msg)
	}
	t.Skip(msg)
}

// ClickHouse connects to the server and returns the connection and a database name owned by
// this test. Every database named db or db_* is dropped when the test ends (purpose databases
// are named <db>_<purpose>).
func ClickHouse(t testing.TB) (driver.Conn, config.Config) {
	t.Helper()
	c := Config(t)
	conn, err := clickhouse.Open(c.ClickHouse.Options())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = conn.Ping(ctx)
		cancel()
	}
	if err != nil {
		Unavailable(t, "ClickHouse at "+strings.Join(c.ClickHouse.Addr, ","), err)
	}
	db := c.ClickHouse.Database
	// Dropping the test's databases is housekeeping, not an assertion: on a loaded machine
	// 18.16 takes seconds a database (one drop a table), so each gets a minute of its own, and
	// one left behind is logged (scripts/services.sh down removes the server's data anyway).
	t.Cleanup(func() {
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		rows, err := conn.Query(ctx, "SELECT name FROM system.databases WHERE name = ? OR startsWith(name, ?)", db, db+"_")
		if err != nil {
			cancel()
			t.Logf("list test databases (left in place): %v", err)
			return
		}
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err == nil {
				names = append(names, n)
			}
		}
		rows.Close()
		cancel()
		for _, n := range names {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+n); err != nil {
				t.Logf("drop test database %s (left in place): %v", n, err)
			}
			cancel()
		}
	})
	return conn, c
}

// Kafka checks that a broker answers and returns the configuration to reach it.
func Kafka(t testing.TB) config.Config {
	t.Helper()
	c := Config(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := topic.Reachable(ctx, c.Kafka.Brokers, 5*time.Second)
	if err == nil {
		_, err = topic.Partitions(ctx, c.Kafka.Brokers)
	}
	if err != nil {
		Unavailable(t, "Kafka at "+strings.Join(c.Kafka.Brokers, ","), err)
	}
	return c
}

// Topic creates a topic with the given partitions, owned by this test and deleted after it.
func Topic(t testing.TB, brokers []string, partitions int) string {
	t.Helper()
	name := Name(t, "test.")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topic.Ensure(ctx, brokers, []topic.Spec{{Name: name, Partitions: partitions, ReplicationFactor: 1}}); err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := topic.Delete(ctx, brokers, name); err != nil {
			t.Errorf("delete topic %s: %v", name, err)
		}
	})
	return name
}

// ReadTopic reads every message of every partition of a topic, from its first retained offset
// to its end offset as the read begins, and fails the test if it cannot within two minutes.
func ReadTopic(t testing.TB, brokers []string, topicName string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	parts, err := topic.Partitions(ctx, brokers, topicName)
	if err != nil {
		t.Fatalf("partitions of %s: %v", topicName, err)
	}
	// Every partition up to its end offset as the read begins, however slowly the broker answers
	// (a loaded machine may stall a fetch for seconds: stopping at the first quiet moment
	// returned part of a topic).
	var ps []int
	for p := range parts[topicName] {
		ps = append(ps, p)
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	bounds, err := topic.Offsets(ctx, client, topicName, ps)
	if err != nil {
		t.Fatalf("read %s: %v", topicName, err)
	}
	var out []kafka.Message
	for _, p := range ps {
		first, end := bounds[p].FirstOffset, bounds[p].LastOffset
		if end <= first {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topicName, Partition: p, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(first); err != nil {
			t.Fatalf("read %s partition %d from offset %d: %v", topicName, p, first, err)
		}
		for at := first; at < end; {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				_ = r.Close()
				t.Fatalf("read %s partition %d: %v, after offset %d of [%d, %d)", topicName, p, err, at, first, end)
			}
			out = append(out, m)
			at = m.Offset + 1
		}
		_ = r.Close()
	}
	return out
}

// UsersDir returns the users.d directory of the ClickHouse server the tests use, where
// 'shukei migrate' writes the purpose readers: SHUKEI_CLICKHOUSE_USERS_DIR, else the one
// scripts/services.sh made (found from the working directory upwards).
func UsersDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("SHUKEI_CLICKHOUSE_USERS_DIR"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, ".services", "clickhouse.dir")); err == nil {
			return filepath.Join(strings.TrimSpace(string(b)), "users.d")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			Unavailable(t, "ClickHouse users.d", fmt.Errorf("no .services/clickhouse.dir above the working directory and SHUKEI_CLICKHOUSE_USERS_DIR unset"))
			return ""
		}
		dir = parent
	}
}

// DeclareRoleUsers writes every role's ClickHouse users of database db (promise 16) into the
// server's users.d, their passwords derived from usersKey, as 'shukei migrate' does, and
// removes the file when the test ends. A role started as a subprocess with a master key (and
// no role key) derives usersKey as master.Derive("clickhouse-users") and connects as its own
// user, which must exist by then.
func DeclareRoleUsers(t testing.TB, db string, usersKey []byte) {
	t.Helper()
	path, err := migrations.WriteUsers(UsersDir(t), db, migrations.AllUsers(db, usersKey), []string{"127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
}

// SealWeeks seals every complete week of database db's data with k, from gate.Before weeks
// before its first, as the release step does — without the release log: gate.Compute, then
// gate.Materialise, is what the first seal of a week writes. For tests of what reads atoms.
func SealWeeks(t testing.TB, conn driver.Conn, db string, k int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	last := gate.Monday(time.Now()).AddDate(0, 0, -7)
	for _, p := range gate.Purposes {
		first, ok, err := gate.FirstWeek(ctx, conn, db, "", p.String())
		if err != nil {
			t.Fatal(err)
		}
		for w := first.AddDate(0, 0, -7*gate.Before); ok && !w.After(last); w = w.AddDate(0, 0, 7) {
			atoms, err := gate.Compute(ctx, conn, db, "", p.String(), w, k)
			if err != nil {
				t.Fatal(err)
			}
			if err := gate.Materialise(ctx, conn, db, gate.Seal{Purpose: p.String(), Week: w, K: k, ID: "test", At: time.Now(), Atoms: atoms}); err != nil {
				t.Fatal(err)
			}
		}
	}
}
