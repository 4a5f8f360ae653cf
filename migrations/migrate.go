// Package clickhouse holds Shukei's ClickHouse DDL as numbered migrations (NNNN_name.sql) and
// applies them. Every statement must run on ClickHouse 18.16 and on current releases
// (docs/DESIGN.md §9), be idempotent (IF NOT EXISTS), and name databases through ${db}, the
// configured internal database, so tests can give each run databases of its own.
package migrations

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/policy"
)

//go:embed *.sql
var files embed.FS

// Migration is one numbered DDL file.
type Migration struct {
	Version  int
	Name     string
	SQL      string
	Checksum string // sha256 of the file, so an edited applied migration is caught
}

// ErrChanged means an applied migration's file was edited afterwards. Migrations are history:
// add a new one instead of changing an old one.
var ErrChanged = errors.New("applied migration was changed")

var fileName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) { return load(files) }

func load(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	var out []Migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q: name must be NNNN_snake_case.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %q and %q share version %d", prev, e.Name(), v)
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		out = append(out, Migration{Version: v, Name: m[2], SQL: string(b), Checksum: hex.EncodeToString(sum[:])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Statements returns the migration's statements with ${db} replaced. Statements end with a ';'
// at the end of a line; '--' comment lines are dropped. DDL here never holds a ';' inside a
// string, which keeps this split honest.
func (m Migration) Statements(db string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(m.SQL, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			stmt := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			out = append(out, strings.ReplaceAll(stmt, "${db}", db))
			cur.Reset()
		}
	}
	if rest := strings.TrimSpace(cur.String()); rest != "" {
		out = append(out, strings.ReplaceAll(rest, "${db}", db))
	}
	return out
}

// Result says what Apply did.
type Result struct {
	Applied []Migration // newly applied, in order
	Skipped []Migration // already recorded
}

// Apply brings database db up to the newest migration and records each one in
// db.schema_migrations. It is safe to run again: applied migrations are skipped, and every
// statement is idempotent, so a run cut short by a crash is finished by the next one.
func Apply(ctx context.Context, conn driver.Conn, db string) (Result, error) {
	return ApplyLayout(ctx, conn, db, Layout{})
}

// ApplyLayout is Apply under a layout: on a cluster, conn is any one node, l.Nodes every node
// (each must be up: a statement runs on each node it belongs on, see Step.On), and the history
// itself (schema_migrations) is replicated everywhere.
func ApplyLayout(ctx context.Context, conn driver.Conn, db string, l Layout) (Result, error) {
	var res Result
	migs, err := Migrations()
	if err != nil {
		return res, err
	}
	if l.Cluster != "" && len(l.Nodes) == 0 {
		return res, fmt.Errorf("migrating cluster %s needs a connection to every node (migrations.NodesOf)", l.Cluster)
	}
	// run runs sql where on says; a RENAME already done on a node (renamed) is skipped there.
	run := func(sql string, on Target) error {
		if l.Cluster == "" {
			if done, err := renamed(ctx, conn, sql); err != nil || done {
				return err
			}
			return conn.Exec(ctx, sql)
		}
		for _, n := range l.targets(on) {
			if done, err := renamed(ctx, n.Conn, sql); err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			} else if done {
				continue
			}
			if err := n.Conn.Exec(ctx, sql); err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
		}
		return nil
	}
	for _, stmt := range []string{
		"CREATE DATABASE IF NOT EXISTS " + db,
		"CREATE TABLE IF NOT EXISTS " + db + ".schema_migrations (" +
			"version UInt32, name String, checksum String, applied_at DateTime" +
			") ENGINE = MergeTree ORDER BY version",
	} {
		step, err := l.Rewrite(db, stmt)
		if err == nil {
			err = run(step.SQL, step.On)
		}
		if err != nil {
			return res, fmt.Errorf("prepare %s.schema_migrations: %w", db, err)
		}
	}
	if l.Cluster != "" {
		// The history is replicated: what another node recorded a moment ago must be here
		// before it is read, or a migration would run twice.
		if err := conn.Exec(ctx, "SYSTEM SYNC REPLICA "+db+".schema_migrations"); err != nil {
			return res, fmt.Errorf("catch up on %s.schema_migrations: %w", db, err)
		}
	}
	applied, err := Recorded(ctx, conn, db)
	if err != nil {
		return res, err
	}
	for _, m := range migs {
		if sum, ok := applied[m.Version]; ok {
			if sum != m.Checksum {
				return res, fmt.Errorf("%w: %04d_%s.sql differs from the version applied to %s; add a new migration instead", ErrChanged, m.Version, m.Name, db)
			}
			res.Skipped = append(res.Skipped, m)
			continue
		}
		for i, stmt := range m.Statements(db) {
			fail := func(err error) error {
				return fmt.Errorf("migration %04d_%s.sql statement %d: %w", m.Version, m.Name, i+1, err)
			}
			step, err := l.Rewrite(db, stmt)
			if err != nil {
				return res, fail(err)
			}
			if step.Backfill != "" && l.Cluster != "" {
				if err := emptyOnEveryShard(ctx, conn, l.Cluster, step.Backfill); err != nil {
					return res, fail(err)
				}
			}
			if err := run(step.SQL, step.On); err != nil {
				return res, fail(err)
			}
			for _, sql := range step.After {
				if err := run(sql, Everywhere); err != nil {
					return res, fail(err)
				}
			}
		}
		if err := record(ctx, conn, db, m); err != nil {
			return res, fmt.Errorf("record migration %04d: %w", m.Version, err)
		}
		res.Applied = append(res.Applied, m)
	}
	return res, nil
}

// emptyOnEveryShard refuses a backfill on a cluster whose source table holds rows: an
// INSERT … SELECT runs on one node, and would fill that node's shard only.
func emptyOnEveryShard(ctx context.Context, conn driver.Conn, cluster, table string) error {
	db, name, _ := strings.Cut(table, ".")
	var n uint64
	// The other nodes answer as the cluster's internal user, whose grant 'shukei migrate' has
	// just written: the servers load it within seconds.
	for deadline := time.Now().Add(30 * time.Second); ; {
		err := conn.QueryRow(ctx, "SELECT count() FROM cluster('"+cluster+"', "+db+", "+name+")").Scan(&n)
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "Access denied") || time.Now().After(deadline) {
			return fmt.Errorf("count %s on every shard (the other nodes answer as clickhouse.cluster_user, which must be allowed the database): %w", table, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if n > 0 {
		return fmt.Errorf("a backfill from %s (%d rows) would fill one shard only; on a cluster it runs only before anything is stored", table, n)
	}
	return nil
}

var renameStmt = regexp.MustCompile(`^RENAME TABLE ([a-z0-9_]+)\.([a-z0-9_]+) TO ([a-z0-9_]+)\.([a-z0-9_]+)$`)

// renamed reports whether stmt is a RENAME TABLE whose table has moved already (the source is
// gone and the target exists), so a migration that moves tables can be run again.
func renamed(ctx context.Context, conn driver.Conn, stmt string) (bool, error) {
	m := renameStmt.FindStringSubmatch(strings.TrimSpace(stmt))
	if m == nil {
		return false, nil
	}
	// EXISTS TABLE, not a scan of system.tables: on 18.16 a scan fails while another
	// database's tables are being renamed (tests migrate many databases at once).
	exists := func(db, table string) (bool, error) {
		var n uint8
		if err := conn.QueryRow(ctx, "EXISTS TABLE "+db+"."+table).Scan(&n); err != nil {
			return false, fmt.Errorf("look up %s.%s: %w", db, table, err)
		}
		return n == 1, nil
	}
	src, err := exists(m[1], m[2])
	if err != nil {
		return false, err
	}
	dst, err := exists(m[3], m[4])
	if err != nil {
		return false, err
	}
	return !src && dst, nil
}

// record inserts through a batch with an explicit column list: an INSERT with inline VALUES
// over the native protocol stalls on ClickHouse 18.16.
func record(ctx context.Context, conn driver.Conn, db string, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, checksum, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(uint32(m.Version), m.Name, m.Checksum, time.Now().UTC().Truncate(time.Second)); err != nil {
		return err
	}
	return b.Send()
}

// Recorded returns version → checksum of the migrations recorded in db.
func Recorded(ctx context.Context, conn driver.Conn, db string) (map[int]string, error) {
	rows, err := conn.Query(ctx, "SELECT version, any(checksum) FROM "+db+".schema_migrations GROUP BY version")
	if err != nil {
		return nil, fmt.Errorf("read %s.schema_migrations: %w", db, err)
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var v uint32
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			return nil, err
		}
		out[int(v)] = sum
	}
	return out, rows.Err()
}

// DatabaseSuffixes are the suffixes of the databases the migrations create besides <db>
// itself: the internal ones, one a purpose, and each gated purpose's.
func DatabaseSuffixes() []string {
	out := databases.Internal("")
	for _, p := range policy.Purposes() {
		out = append(out, "_"+p.String())
	}
	for _, p := range gate.Purposes {
		out = append(out, "_"+p.String()+"_gated")
	}
	return out
}
