package aggregator

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/databases"
)

// ExpiredWindow is one released window whose partial aggregates ExpireState deleted.
type ExpiredWindow struct {
	Plan       string
	Start, End time.Time
	ReleasedAt time.Time
	Partials   uint64 // rows
}

// StateExpiry is what ExpireState deleted from aggregate_state.
type StateExpiry struct {
	Cutoff   time.Time // windows released at or before it lost their partials
	Windows  []ExpiredWindow
	Partials uint64 // partial rows deleted
	Progress uint64 // superseded progress rows deleted
	Tenants  uint64 // tenant rows deleted (their weeks and months are released)
}

// Deleted is the number of rows deleted.
func (e StateExpiry) Deleted() uint64 { return e.Partials + e.Progress + e.Tenants }

// ExpireState deletes from database db's aggregate_state what the aggregator no longer needs
// and should not keep: the un-noised partial aggregates of every window released (under the
// same plan) at least margin before now. It never deletes the partials of a window without a
// release (not yet closed everywhere, or refused by the budget: the release step may still
// need them), and never a progress row a restart reads: a restart and the release step read
// only each (plan, partition)'s latest progress (max closed_through), so only the progress
// rows below it, written at least margin before now, are deleted.
//
// A base window's tenant rows (kind 'tenant') are deleted once the release of every period in
// periods (the weeks and months the aggregator releases) that contains the window was made at
// least margin before now, under any plan; with no periods, once the window's own release was.
//
// The releases are read on releases (retention reads them as a read-only user, promise 16),
// the state deleted on conn. It uses one ALTER TABLE ... DELETE (ClickHouse 18.16 has no TTL) and waits until the
// mutation is done and nothing it matched is left. DROP PARTITION is not used: a month of
// window_start holds the partials of whole windows only if every one is released, and the
// progress rows share a partition of their own (window_start 1970-01-01) that must stay.
func ExpireState(ctx context.Context, conn, releases driver.Conn, db string, now time.Time, margin time.Duration, periods []Period) (StateExpiry, error) {
	ex := StateExpiry{Cutoff: now.Add(-margin).UTC().Truncate(time.Second)}
	state := databases.Aggregator(db) + ".aggregate_state"

	// Released windows, per plan, and when (the latest release row; one release is one insert).
	type winKey struct {
		plan  string
		start int64
	}
	released := map[winKey]time.Time{}
	spans := map[spanKey]time.Time{} // any plan
	rows, err := releases.Query(ctx, "SELECT plan_hash, window_start, window_end, max(released_at) FROM "+db+"_external_aggregate.releases GROUP BY plan_hash, window_start, window_end")
	if err != nil {
		return ex, fmt.Errorf("read releases: %w", err)
	}
	for rows.Next() {
		var (
			plan          string
			start, end, r time.Time
		)
		if err := rows.Scan(&plan, &start, &end, &r); err != nil {
			rows.Close()
			return ex, err
		}
		if prev, ok := released[winKey{plan, start.Unix()}]; !ok || r.After(prev) {
			released[winKey{plan, start.Unix()}] = r
		}
		k := Window{Start: start, End: end}.key()
		if prev, ok := spans[k]; !ok || r.After(prev) {
			spans[k] = r
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return ex, err
	}

	// Windows with partials; those released at or before the cutoff expire.
	rows, err = conn.Query(ctx, "SELECT plan_hash, window_start, any(window_end), count() FROM "+state+" WHERE kind = 'partial' GROUP BY plan_hash, window_start ORDER BY plan_hash, window_start")
	if err != nil {
		return ex, fmt.Errorf("read aggregator partials: %w", err)
	}
	for rows.Next() {
		var w ExpiredWindow
		if err := rows.Scan(&w.Plan, &w.Start, &w.End, &w.Partials); err != nil {
			rows.Close()
			return ex, err
		}
		at, ok := released[winKey{w.Plan, w.Start.Unix()}]
		if !ok || at.After(ex.Cutoff) {
			continue
		}
		w.ReleasedAt = at
		ex.Windows = append(ex.Windows, w)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return ex, err
	}

	// Base windows with tenant rows; those whose every period is released at or before the
	// cutoff expire.
	type tenantWin struct {
		plan       string
		start, end time.Time
	}
	var tenantWins []tenantWin
	rows, err = conn.Query(ctx, "SELECT plan_hash, window_start, any(window_end) FROM "+state+" WHERE kind = 'tenant' GROUP BY plan_hash, window_start ORDER BY plan_hash, window_start")
	if err != nil {
		return ex, fmt.Errorf("read aggregator tenant rows: %w", err)
	}
	for rows.Next() {
		var w tenantWin
		if err := rows.Scan(&w.plan, &w.start, &w.end); err != nil {
			rows.Close()
			return ex, err
		}
		expired := true
		if len(periods) == 0 {
			at, ok := released[winKey{w.plan, w.start.Unix()}]
			expired = ok && !at.After(ex.Cutoff)
		}
		for _, p := range periods {
			at, ok := spans[p.Of(w.start, w.end.Sub(w.start)).key()]
			if !ok || at.After(ex.Cutoff) {
				expired = false
			}
		}
		if expired {
			tenantWins = append(tenantWins, w)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return ex, err
	}

	// The latest progress of each (plan, partition): what a restart resumes from.
	type partKey struct {
		plan string
		part uint32
	}
	latest := map[partKey]time.Time{}
	rows, err = conn.Query(ctx, "SELECT plan_hash, partition, max(closed_through) FROM "+state+" WHERE kind = 'progress' GROUP BY plan_hash, partition")
	if err != nil {
		return ex, fmt.Errorf("read aggregator progress: %w", err)
	}
	for rows.Next() {
		var (
			k  partKey
			ct time.Time
		)
		if err := rows.Scan(&k.plan, &k.part, &ct); err != nil {
			rows.Close()
			return ex, err
		}
		latest[k] = ct
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return ex, err
	}

	// One condition for both kinds, with literal values: a bound slice becomes an Array on
	// 18.16 (docs/DESIGN.md §9), and mutations take no parameters.
	var or []string
	byPlan := map[string][]string{}
	for _, w := range ex.Windows {
		byPlan[w.Plan] = append(byPlan[w.Plan], strconv.FormatInt(w.Start.Unix(), 10))
	}
	for _, plan := range slices.Sorted(maps.Keys(byPlan)) {
		or = append(or, fmt.Sprintf("(kind = 'partial' AND plan_hash = %s AND toUInt32(window_start) IN (%s))", databases.Literal(plan), strings.Join(byPlan[plan], ",")))
	}
	byPlan = map[string][]string{}
	for _, w := range tenantWins {
		byPlan[w.plan] = append(byPlan[w.plan], strconv.FormatInt(w.start.Unix(), 10))
	}
	for _, plan := range slices.Sorted(maps.Keys(byPlan)) {
		or = append(or, fmt.Sprintf("(kind = 'tenant' AND plan_hash = %s AND toUInt32(window_start) IN (%s))", databases.Literal(plan), strings.Join(byPlan[plan], ",")))
	}
	var progress []string
	for k, ct := range latest {
		progress = append(progress, fmt.Sprintf("(plan_hash = %s AND partition = %d AND toUInt32(closed_through) < %d)", databases.Literal(k.plan), k.part, ct.Unix()))
	}
	slices.Sort(progress)
	if len(progress) > 0 {
		or = append(or, fmt.Sprintf("(kind = 'progress' AND toUInt32(at) <= %d AND (%s))", ex.Cutoff.Unix(), strings.Join(progress, " OR ")))
	}
	if len(or) == 0 {
		return ex, nil
	}
	where := strings.Join(or, " OR ")
	count := func() (partials, progress, tenants uint64, err error) {
		err = conn.QueryRow(ctx, "SELECT countIf(kind = 'partial'), countIf(kind = 'progress'), countIf(kind = 'tenant') FROM "+state+" WHERE "+where).Scan(&partials, &progress, &tenants)
		return partials, progress, tenants, err
	}
	if ex.Partials, ex.Progress, ex.Tenants, err = count(); err != nil {
		return ex, fmt.Errorf("count expired aggregator state: %w", err)
	}
	if ex.Deleted() == 0 {
		return ex, nil
	}
	if err := conn.Exec(ctx, "ALTER TABLE "+state+" DELETE WHERE "+where); err != nil {
		return ex, fmt.Errorf("delete expired aggregator state: %w", err)
	}
	if err := waitMutations(ctx, conn, databases.Aggregator(db), "aggregate_state"); err != nil {
		return ex, err
	}
	if p, g, t, err := count(); err != nil {
		return ex, err
	} else if p+g+t > 0 {
		return ex, fmt.Errorf("after deleting expired aggregator state, %d partial, %d progress and %d tenant rows it matched are left", p, g, t)
	}
	return ex, nil
}

// waitMutations waits until ClickHouse has applied every pending mutation of db.table.
func waitMutations(ctx context.Context, conn driver.Conn, db, table string) error {
	for {
		var pending uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0", db, table).Scan(&pending); err != nil {
			return err
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the deletion in %s.%s: %w", db, table, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
