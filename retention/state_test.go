package retention_test

import (
	"context"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
	"github.com/shukei/shukei/retention"
)

type stateRow struct {
	kind         string
	plan         string
	partition    uint32
	window       time.Time
	closed, at   time.Time
	resumeOffset int64
}

func insertState(t *testing.T, conn driver.Conn, db string, rows []stateRow) {
	t.Helper()
	ctx := context.Background()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+"_aggregator.aggregate_state (kind, plan_hash, partition, window_start, window_end, metric, cell, tenants, state, closed_through, resume_offset, high_offset, at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		ws, we, metric := r.window, r.window.Add(24*time.Hour), "feature_adoption"
		if r.kind == "progress" {
			ws, we, metric = time.Unix(0, 0), time.Unix(0, 0), ""
		}
		if err := b.Append(r.kind, r.plan, r.partition, ws, we, metric, "", uint32(3), "", r.closed, r.resumeOffset, r.resumeOffset, r.at); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

func insertRelease(t *testing.T, conn driver.Conn, db, plan string, window, at time.Time) {
	t.Helper()
	ctx := context.Background()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+"_external_aggregate.releases (release_id, plan_hash, window_start, window_end, metric, dims, value, released_at)")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append("r-"+window.Format("0102"), plan, window, window.Add(24*time.Hour), "feature_adoption", "x=y", int64(1), at); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

// A retention run deletes the partial aggregates of windows released more than
// aggregator.state_retention ago, and reports them; it keeps the partials of a window released
// recently, of a window without a release (also one released under another plan only) and
// every partition's latest progress, however old; superseded old progress rows go.
func TestRunExpiresReleasedPartials(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 6, 20, 12, 0, 0, 0, time.UTC)
	day := func(d int) time.Time { return time.Date(2026, 6, d, 0, 0, 0, 0, time.UTC) }
	const plan, other = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	var rows []stateRow
	for p := range uint32(2) {
		for _, d := range []int{1, 10, 17, 19} { // 1: old release; 10: old, other plan's release only; 17: recent release; 19: no release
			rows = append(rows, stateRow{kind: "partial", plan: plan, partition: p, window: day(d), closed: day(d + 1), at: day(d + 1)})
		}
		rows = append(rows, stateRow{kind: "partial", plan: other, partition: p, window: day(1), closed: day(2), at: day(2)})
		// Progress: two superseded rows written long ago, the latest also long ago (the
		// aggregator has been idle): only the superseded ones may go.
		rows = append(rows,
			stateRow{kind: "progress", plan: plan, partition: p, closed: day(2), at: day(2), resumeOffset: 10},
			stateRow{kind: "progress", plan: plan, partition: p, closed: day(11), at: day(11), resumeOffset: 20},
			stateRow{kind: "progress", plan: plan, partition: p, closed: day(12), at: day(12), resumeOffset: 30})
	}
	// The other plan's progress: one row only, its latest.
	rows = append(rows, stateRow{kind: "progress", plan: other, partition: 0, closed: day(2), at: day(2), resumeOffset: 5})
	// A progress row superseded but written within the margin stays.
	rows = append(rows, stateRow{kind: "progress", plan: plan, partition: 1, closed: day(12).Add(-time.Hour), at: now.Add(-time.Hour), resumeOffset: 25})
	insertState(t, conn, db, rows)
	insertRelease(t, conn, db, plan, day(1), day(2).Add(time.Hour))
	insertRelease(t, conn, db, other, day(10), day(11).Add(time.Hour))
	insertRelease(t, conn, db, plan, day(17), now.Add(-48*time.Hour))

	r := policy.Retention{AfterContractEnd: 90 * 24 * time.Hour, EventStore: 395 * 24 * time.Hour, DLQ: 30 * 24 * time.Hour}
	var kcfg config.Config // state_retention 72h, no weeks or months released
	kcfg.Aggregator.StateRetention = 72 * time.Hour
	k := retention.New(kcfg, retention.Deps{Conn: conn, Database: db, Registry: registry.New(conn, db, nil), Audit: audit.New(conn, db), Policy: r})
	rep, err := k.Run(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.State.Windows) != 1 || rep.State.Windows[0].Plan != plan || !rep.State.Windows[0].Start.Equal(day(1)) || rep.State.Windows[0].Partials != 2 ||
		!rep.State.Windows[0].ReleasedAt.Equal(day(2).Add(time.Hour)) {
		t.Errorf("expired windows %+v, want %s's day 1 (2 partials)", rep.State.Windows, plan)
	}
	if rep.State.Partials != 2 || rep.State.Progress != 4 || rep.Nothing() {
		t.Errorf("deleted %d partial and %d progress rows, want 2 and 4", rep.State.Partials, rep.State.Progress)
	}

	count := func(where string) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"_aggregator.aggregate_state WHERE "+where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for where, want := range map[string]uint64{
		"kind = 'partial' AND plan_hash = '" + plan + "' AND window_start = toDateTime('2026-06-01 00:00:00', 'UTC')":  0,
		"kind = 'partial' AND plan_hash = '" + plan + "' AND window_start = toDateTime('2026-06-10 00:00:00', 'UTC')":  2,
		"kind = 'partial' AND plan_hash = '" + plan + "' AND window_start = toDateTime('2026-06-17 00:00:00', 'UTC')":  2,
		"kind = 'partial' AND plan_hash = '" + plan + "' AND window_start = toDateTime('2026-06-19 00:00:00', 'UTC')":  2,
		"kind = 'partial' AND plan_hash = '" + other + "' AND window_start = toDateTime('2026-06-01 00:00:00', 'UTC')": 2,
		"kind = 'progress' AND plan_hash = '" + plan + "' AND resume_offset = 30":                                      2,
		"kind = 'progress' AND plan_hash = '" + plan + "' AND resume_offset IN (10, 20)":                               0,
		"kind = 'progress' AND plan_hash = '" + plan + "' AND resume_offset = 25":                                      1,
		"kind = 'progress' AND plan_hash = '" + other + "'":                                                            1,
	} {
		if got := count(where); got != want {
			t.Errorf("%d rows where %s, want %d", got, where, want)
		}
	}
	// The releases themselves are kept.
	var releases uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"_external_aggregate.releases").Scan(&releases); err != nil || releases != 3 {
		t.Errorf("%d releases left (%v), want 3", releases, err)
	}
	// Nothing more the next time.
	if rep, err := k.Run(ctx, now); err != nil || !rep.Nothing() {
		t.Errorf("second run: %+v %v", rep, err)
	}
}
