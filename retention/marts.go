package retention

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/processor"
)

// RebuildMarts re-derives the purpose marts of the ISO weeks from since's to until's (inclusive)
// from the event store ('shukei retention rebuild-marts'), on every shard: each mart's rows of those weeks
// are deleted and its materialised view's SELECT is run again over the events of those weeks.
//
// The marts are filled by materialised views as the processor inserts events, and ClickHouse
// 18.16 writes the event store's part before the views' parts, each on its own: a server killed
// (or stopped) in between keeps the events and loses that insert's rows of the marts, and the
// processor, finding the events stored, does not write them again (it warns when it resumes
// after a cut batch). Run it for the weeks of such a cut with the processors stopped, or for
// weeks no event arrives in any more: events the processor stores into those weeks while it
// runs may be counted twice.
func RebuildMarts(ctx context.Context, out io.Writer, cfg config.Config, since, until time.Time) error {
	c := cfg.ClickHouse
	conn, err := ops.OpenClickHouse(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	shards := []processor.Shard{{Write: conn, Replicas: []driver.Conn{conn}}}
	if c.Cluster != "" {
		var conns ops.Conns
		shards, conns, err = processor.ClusterShards(ctx, conn, c)
		if err != nil {
			return err
		}
		defer conns.Close()
	}
	from := gate.Monday(since)
	to := gate.Monday(until).AddDate(0, 0, 7)
	if !to.After(from) {
		return fmt.Errorf("nothing to rebuild: until (%s) is before since (%s)", until.Format(time.DateOnly), since.Format(time.DateOnly))
	}
	for i, s := range shards {
		n, err := rebuildShard(ctx, s, c.Database, from, to)
		if err != nil {
			return fmt.Errorf("shard %d: %w", i+1, err)
		}
		fmt.Fprintf(out, "shard %d: %d marts re-derived from the event store for %s to %s\n", i+1, n, from.Format(time.DateOnly), to.AddDate(0, 0, -1).Format(time.DateOnly))
	}
	return nil
}

var (
	viewTarget = regexp.MustCompile(`(?s)^CREATE MATERIALIZED VIEW \S+ TO ([a-z0-9_]+\.[a-z0-9_]+)\b.*?\sAS (SELECT\s.*)$`)
	fromEvents = func(db string) *regexp.Regexp {
		return regexp.MustCompile(`\bFROM\s+` + regexp.QuoteMeta(db) + `\.events\b`)
	}
)

// rebuildShard rebuilds on one shard the marts filled by views over db.events, for the dates
// [from, to): deleted there (waiting for every replica), then filled again by each view's
// SELECT over the events of those dates.
func rebuildShard(ctx context.Context, s processor.Shard, db string, from, to time.Time) (int, error) {
	rows, err := s.Write.Query(ctx, "SELECT concat(database, '.', name) FROM system.tables WHERE engine = 'MaterializedView' AND (database = ? OR startsWith(database, ?)) ORDER BY database, name", db, db+"_")
	if err != nil {
		return 0, err
	}
	var views []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return 0, err
		}
		views = append(views, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	day := func(t time.Time) string { return "toDate('" + t.Format(time.DateOnly) + "')" }
	over := fromEvents(db)
	events := "FROM (SELECT * FROM " + db + ".events WHERE toDate(occurred_at) >= " + day(from) + " AND toDate(occurred_at) < " + day(to) + ")"
	type mart struct{ target, sel string }
	var marts []mart
	for _, v := range views {
		var create string
		if err := s.Write.QueryRow(ctx, "SHOW CREATE TABLE "+v).Scan(&create); err != nil {
			return 0, fmt.Errorf("the definition of %s: %w", v, err)
		}
		m := viewTarget.FindStringSubmatch(strings.TrimSpace(create))
		if m == nil || !over.MatchString(m[2]) {
			continue // not a view of the event store
		}
		marts = append(marts, mart{target: m[1], sel: over.ReplaceAllLiteralString(m[2], events)})
	}
	var targets []string
	for _, m := range marts {
		col, err := timeColumn(ctx, s.Write, m.target)
		if err != nil {
			return 0, err
		}
		cond := col + " >= " + day(from) + " AND " + col + " < " + day(to)
		if col == "occurred_at" {
			cond = "toDate(occurred_at) >= " + day(from) + " AND toDate(occurred_at) < " + day(to)
		}
		if err := s.Write.Exec(ctx, "ALTER TABLE "+m.target+" DELETE WHERE "+cond); err != nil {
			return 0, fmt.Errorf("delete the rows of %s: %w", m.target, err)
		}
		targets = append(targets, m.target)
	}
	for _, r := range s.Replicas {
		for _, t := range targets {
			if err := mutationsDone(ctx, r, t); err != nil {
				return 0, err
			}
		}
	}
	for _, m := range marts {
		if err := s.Write.Exec(ctx, "INSERT INTO "+m.target+" "+m.sel); err != nil {
			return 0, fmt.Errorf("re-derive %s: %w", m.target, err)
		}
	}
	return len(marts), nil
}

// timeColumn is the column a mart's rows are dated by: day, week or occurred_at.
func timeColumn(ctx context.Context, conn driver.Conn, table string) (string, error) {
	database, name, _ := strings.Cut(table, ".")
	rows, err := conn.Query(ctx, "SELECT name FROM system.columns WHERE database = ? AND table = ?", database, name)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return "", err
		}
		cols = append(cols, c)
	}
	for _, c := range []string{"day", "week", "occurred_at"} {
		if slices.Contains(cols, c) {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s has no day, week or occurred_at column", table)
}

// mutationsDone waits until table has no pending mutation on conn.
func mutationsDone(ctx context.Context, conn driver.Conn, table string) error {
	database, name, _ := strings.Cut(table, ".")
	for {
		var pending uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0", database, name).Scan(&pending); err != nil {
			return err
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the deletion in %s: %w", table, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
