package retention

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/marts"
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

// rebuildShard rebuilds on one shard the marts filled by views over db.events, for the dates
// [from, to): deleted there (waiting for every replica), then filled again by each view's
// SELECT over the events of those dates. The inserts are not deduplicated: on a replicated
// mart ClickHouse drops a block equal to one inserted before (a rebuild of unchanged weeks run
// twice would otherwise leave them empty).
func rebuildShard(ctx context.Context, s processor.Shard, db string, from, to time.Time) (int, error) {
	all, err := marts.List(ctx, s.Write, db)
	if err != nil {
		return 0, err
	}
	for _, m := range all {
		if err := s.Write.Exec(ctx, "ALTER TABLE "+m.Table+" DELETE WHERE "+m.Dated(from, to)); err != nil {
			return 0, fmt.Errorf("delete the rows of %s: %w", m.Table, err)
		}
	}
	for _, r := range s.Replicas {
		for _, m := range all {
			if err := mutationsDone(ctx, r, m.Table); err != nil {
				return 0, err
			}
		}
	}
	insert := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_deduplicate": 0}))
	for _, m := range all {
		if err := s.Write.Exec(insert, "INSERT INTO "+m.Table+" ("+strings.Join(m.Columns, ", ")+") SELECT "+strings.Join(m.Columns, ", ")+" FROM ("+m.Over(marts.EventsDated(from, to))+")"); err != nil {
			return 0, fmt.Errorf("re-derive %s: %w", m.Table, err)
		}
	}
	return len(all), nil
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
