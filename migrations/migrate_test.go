package migrations_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

// docs/DESIGN.md §9: what ClickHouse 18.16 cannot run, or what Shukei must not rely on there.
var forbidden = []struct{ re, why string }{
	{`(?i)\bTTL\b`, "no TTL on 18.16: retention drops partitions"},
	{`(?i)SimpleAggregateFunction`, "not on 18.16"},
	{`(?i)DateTime64`, "not on 18.16"},
	{`(?i)\bMap\s*\(`, "no Map type on 18.16"},
	{`(?i)JSONExtract`, "not on 18.16"},
	{`(?i)\bCODEC\s*\(`, "no column codecs on 18.16"},
	{`(?i)async_insert`, "not on 18.16"},
	{`\{[a-z_]+:[A-Za-z0-9]+\}`, "server-side parameters ({x:Type}) are newer than 18.16; bind client-side"},
	{`(?i)CREATE\s+(TABLE|DATABASE|VIEW|MATERIALIZED VIEW)\s+(?:[^I]|I[^F])`, "every CREATE must say IF NOT EXISTS (migrations are re-runnable)"},
}

func TestMigrationsAvoidWhatOldClickHouseLacks(t *testing.T) {
	migs, err := migrations.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) == 0 {
		t.Fatal("no migrations embedded")
	}
	for i, m := range migs {
		if m.Version != i+1 {
			t.Errorf("migration versions must be 1..n without gaps: got %d at position %d", m.Version, i+1)
		}
		for _, stmt := range m.Statements("db") {
			if strings.Contains(stmt, "${") {
				t.Errorf("%04d: unreplaced placeholder in %q", m.Version, stmt)
			}
			for _, f := range forbidden {
				if regexp.MustCompile(f.re).MatchString(stmt) {
					t.Errorf("%04d_%s.sql: %s:\n%s", m.Version, m.Name, f.why, stmt)
				}
			}
		}
	}
}

func TestStatementsSplit(t *testing.T) {
	m := migrations.Migration{SQL: "-- comment; not a statement\nCREATE DATABASE IF NOT EXISTS ${db};\n\nCREATE TABLE IF NOT EXISTS ${db}.t (\n  a UInt8\n) ENGINE = Memory;\n"}
	got := m.Statements("x")
	want := []string{"CREATE DATABASE IF NOT EXISTS x", "CREATE TABLE IF NOT EXISTS x.t (\n  a UInt8\n) ENGINE = Memory"}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("statement %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func TestApplyOnRealServer(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	db := cfg.ClickHouse.Database
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	migs, _ := migrations.Migrations()

	first, err := migrations.Apply(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Applied) != len(migs) || len(first.Skipped) != 0 {
		t.Fatalf("first run applied %d, skipped %d; want %d, 0", len(first.Applied), len(first.Skipped), len(migs))
	}
	second, err := migrations.Apply(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Applied) != 0 || len(second.Skipped) != len(migs) {
		t.Fatalf("second run applied %d, skipped %d; want 0, %d", len(second.Applied), len(second.Skipped), len(migs))
	}
	rec, err := migrations.Recorded(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range migs {
		if rec[m.Version] != m.Checksum {
			t.Errorf("migration %d recorded with checksum %q, want %q", m.Version, rec[m.Version], m.Checksum)
		}
	}
	var rows uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".schema_migrations").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if int(rows) != len(migs) {
		t.Errorf("schema_migrations has %d rows after two runs, want %d", rows, len(migs))
	}
	// Every purpose database exists.
	for _, p := range []string{"support", "service_improvement", "marketing", "follow_up", "interview_selection", "external_aggregate", "external_consented"} {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", db+"_"+p).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("database %s_%s missing", db, p)
		}
	}

	// An applied migration whose file changed is refused, not silently skipped. Rewrite the
	// record as if an older file had been applied.
	for _, q := range []string{
		"DROP TABLE " + db + ".schema_migrations",
		"CREATE TABLE " + db + ".schema_migrations (version UInt32, name String, checksum String, applied_at DateTime) ENGINE = MergeTree ORDER BY version",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, checksum, applied_at)")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(uint32(1), "databases", "edited", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Apply(ctx, conn, db); !errors.Is(err, migrations.ErrChanged) {
		t.Fatalf("edited migration: got %v, want ErrChanged", err)
	}
}

// A run cut short after 0016 moved the tables (before it was recorded) is finished by the next
// one: a RENAME whose table has moved is skipped, not failed.
func TestTableMovesRunAgain(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	db := cfg.ClickHouse.Database
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "ALTER TABLE "+db+".schema_migrations DELETE WHERE version = 16"); err != nil {
		t.Fatal(err)
	}
	for {
		var pending uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND table = 'schema_migrations' AND is_done = 0", db).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if pending == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	again, err := migrations.Apply(ctx, conn, db)
	if err != nil {
		t.Fatalf("a second run of the moves: %v", err)
	}
	if len(again.Applied) != 1 || again.Applied[0].Version != 16 {
		t.Errorf("applied %v, want 0016 again", again.Applied)
	}
	var n uint8
	if err := conn.QueryRow(ctx, "EXISTS TABLE "+db+"_registry.tenants").Scan(&n); err != nil || n != 1 {
		t.Errorf("%s_registry.tenants: %d %v", db, n, err)
	}
}
