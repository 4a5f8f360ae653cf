package processor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/marts"
)

// A batch cut short after its events were stored, with some or all of the views' rows missing
// (ClickHouse 18.16 commits the event store's part and each mart's parts one after the other;
// a server killed in between keeps a prefix), leaves the marts short. Resuming, the processor
// (as its own ClickHouse user, which may insert but not delete) must bring every mart to what
// its view makes of the event store — and must not add what is already there.
//
// The cut is made for real on the server: the batch's events are inserted with the views of
// the marts it should miss detached, after a whole batch of the same tenants and days (so the
// marts already hold rows under the same keys).
func TestCutBatchMartsAreRepairedAtResume(t *testing.T) {
	for _, c := range []struct {
		name string
		// missing says which views did not run for the cut insert.
		missing func(view string) bool
		// spoil, if set, adds a row to a mart that no cut explains.
		spoil      string
		repaired   bool
		unrepaired bool
	}{
		{name: "no view ran", missing: func(string) bool { return true }, repaired: true},
		{name: "some views ran", missing: func(v string) bool {
			return strings.Contains(v, "_marketing.") || strings.Contains(v, "_support.") || strings.Contains(v, "tenant_weekly")
		}, repaired: true},
		{name: "every view ran", missing: func(string) bool { return false }},
		{name: "a difference no cut explains", missing: func(v string) bool { return strings.Contains(v, "_follow_up.") },
			spoil: "_service_improvement.feature_daily", repaired: true, unrepaired: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, 5)
			ctx := context.Background()
			p := r.roleProcessor(t)
			all, detached, cutTenant := r.cutBatch(t, p, c.missing)
			if c.spoil != "" {
				// The spoiled row adds to a key the event store holds (one of the cut tenant's
				// keys already in the mart), so the log has both readings to show. A key picked
				// by hand (today's day) has no events when the test runs just after midnight.
				if err := r.conn.Exec(ctx, "INSERT INTO "+r.db+c.spoil+" (day, edition, category, feature, tenant_id, users, uses, events) SELECT day, edition, category, feature, tenant_id, uniqState(toFixedString('0123456789abcdef', 16)), sumState(toUInt64(7)), sumState(toUInt64(1)) FROM (SELECT DISTINCT day, edition, category, feature, tenant_id FROM "+r.db+c.spoil+" WHERE tenant_id = ? ORDER BY day, edition, category, feature LIMIT 1) GROUP BY day, edition, category, feature, tenant_id", cutTenant); err != nil {
					t.Fatal(err)
				}
			}
			short := differences(t, r.conn, all)
			if len(detached) > 0 && len(short) == 0 {
				t.Fatalf("with %d views detached the marts equal the event store: the cut was not made", len(detached))
			}
			t.Logf("before resuming: %d views detached for the cut insert, marts differing: %v", len(detached), short)

			var logged bytes.Buffer
			p.log = slog.New(slog.NewTextHandler(&logged, nil))
			if _, err := p.loadWithRetry(ctx, []int{0}); err != nil {
				t.Fatal(err)
			}
			after := differences(t, r.conn, all)
			repaired := testutil.ToFloat64(p.m.martsRepaired)
			unrepaired := testutil.ToFloat64(p.m.martsUnrepaired)
			t.Logf("after resuming: marts differing: %v; repaired %v keys, unrepaired %v", after, repaired, unrepaired)
			if c.unrepaired {
				if unrepaired == 0 {
					t.Errorf("a mart row no cut explains was not counted as unrepaired")
				}
				// The log names the key as the mart holds it and as the event store makes it.
				line := logged.String()
				if i := strings.Index(line, "does not explain"); i < 0 || !strings.Contains(line[i:], "mart: day=") || !strings.Contains(line[i:], "; event store: day=") ||
					!strings.Contains(line[i:], "tenant_id="+cutTenant) || !strings.Contains(line[i:], "uses=") {
					t.Errorf("the unrepaired difference is logged without the key as mart and event store read it:\n%s", line)
				}
				if len(after) != 1 || after[0] != r.db+c.spoil {
					t.Errorf("after resuming the marts differing are %v, want only the spoiled %s", after, r.db+c.spoil)
				}
			} else {
				if len(after) > 0 {
					t.Errorf("after resuming the marts still differ from the event store: %v", after)
				}
				if unrepaired != 0 {
					t.Errorf("%v keys counted as unrepaired", unrepaired)
				}
			}
			if c.repaired != (repaired > 0) {
				t.Errorf("repaired %v keys; want some: %v", repaired, c.repaired)
			}
			// Resuming again finds nothing left to do (the repair is not drawn twice).
			p2 := r.roleProcessor(t)
			if _, err := p2.loadWithRetry(ctx, []int{0}); err != nil {
				t.Fatal(err)
			}
			if n := testutil.ToFloat64(p2.m.martsRepaired); n != 0 {
				t.Errorf("a second resume repaired %v keys again", n)
			}
			if again := differences(t, r.conn, all); len(again) != len(after) {
				t.Errorf("after a second resume the marts differing are %v, were %v", again, after)
			}
		})
	}
}

// cutBatch stores a whole batch of 200 events of partition 0 with its checkpoint, then a batch
// of 200 more cut short: its events stored with the views for which missing says so detached
// (so their marts lack its rows), and no checkpoint. It returns the marts, the views detached
// and a tenant of the cut batch.
func (r *rig) cutBatch(t *testing.T, p *Processor, missing func(view string) bool) (all []marts.Mart, detached []string, tenant string) {
	t.Helper()
	ctx := context.Background()
	rows := decidedMixedRows(t, r, p, 400)
	first, cut := rows[:200], rows[200:]
	r.insertEvents(t, p, first, time.Now().Add(-10*time.Second))
	if err := r.conn.Exec(ctx, "INSERT INTO "+r.db+".rejections (rejected_at, kafka_partition, kafka_offset, class) SELECT now(), toUInt16(0), toUInt64(199), 'checkpoint'"); err != nil {
		t.Fatal(err)
	}
	all, err := marts.List(ctx, r.conn, r.db)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 7 {
		t.Fatalf("%d marts over the event store, want at least 7", len(all))
	}
	for _, m := range all {
		if missing(m.View) {
			detached = append(detached, m.View)
		}
	}
	for _, v := range detached {
		if err := r.conn.Exec(ctx, "DETACH TABLE "+v); err != nil {
			t.Fatal(err)
		}
	}
	r.insertEvents(t, p, cut, time.Now())
	for _, v := range detached {
		if err := r.conn.Exec(ctx, "ATTACH TABLE "+v); err != nil {
			t.Fatal(err)
		}
	}
	return all, detached, cut[0].t.Event.TenantID
}

// An instance paused between its last check and its repair insert, whose partitions another
// instance has repaired meanwhile, inserts nothing when it wakes: the marts are not doubled.
func TestRepairInsertsNothingOnceAnotherRepaired(t *testing.T) {
	r := newRig(t, 5)
	ctx := context.Background()
	stalled, other := r.roleProcessor(t), r.roleProcessor(t)
	all, _, _ := r.cutBatch(t, stalled, func(string) bool { return true })
	woke := 0
	stalled.beforeRepairInsert = func() {
		if woke == 0 { // the first insert it was about to send: the other repairs everything
			if _, err := other.loadWithRetry(ctx, []int{0}); err != nil {
				t.Error(err)
			}
			if n := testutil.ToFloat64(other.m.martsRepaired); n == 0 {
				t.Error("the other instance repaired nothing")
			}
		}
		woke++
	}
	if _, err := stalled.loadWithRetry(ctx, []int{0}); err != nil {
		t.Fatal(err)
	}
	if woke == 0 {
		t.Fatal("the stalled instance never reached a repair insert")
	}
	if d := differences(t, r.conn, all); len(d) > 0 {
		t.Errorf("after both repaired, the marts differ from the event store: %v", d)
	}
	t.Logf("the stalled instance reached %d repair inserts; repaired %v keys, the other %v", woke,
		testutil.ToFloat64(stalled.m.martsRepaired), testutil.ToFloat64(other.m.martsRepaired))
}

// roleProcessor is a processor that connects as the processor role's own ClickHouse user.
func (r *rig) roleProcessor(t *testing.T) *Processor {
	t.Helper()
	cfg := r.cfg
	cfg.Anonymizer.MasterKeyFile, cfg.Anonymizer.MasterKey = r.keyFile, ""
	own, err := ops.RoleClickHouse(cfg, "processor", "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(own.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return New(r.cfg, Deps{
		Conn: conn, Database: r.db, Cache: r.cache, Keyring: r.keyring, Policy: r.policy,
		HashKey: r.master.Derive("dlq"), Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

// decidedMixedRows decides n valid events of every category (mixed), over today and the two
// days before, and returns them as rows of partition 0 at offsets 0 to n-1.
func decidedMixedRows(t *testing.T, r *rig, p *Processor, n int) []row {
	return decidedFrom(t, r, p, n, 5, func(i int, tenant string, rnd *rand.Rand, now time.Time) map[string]any {
		return mixed(i, tenant, rnd, now.Add(-time.Duration(i%3)*24*time.Hour))
	})
}

// insertEvents stores rows as one insert of the processor's, of a batch decided at ingested.
func (r *rig) insertEvents(t *testing.T, p *Processor, rows []row, ingested time.Time) {
	t.Helper()
	ctx := context.Background()
	ins, err := p.openEventsInsert(ctx, r.conn, ingested)
	if err != nil {
		t.Fatal(err)
	}
	defer ins.abort()
	cols := newEventColumns(chunkRows)
	for i := 0; i < len(rows); i += chunkRows {
		if err := ins.add(rows[i:min(i+chunkRows, len(rows))], cols); err != nil {
			t.Fatal(err)
		}
	}
	if err := ins.commit(); err != nil {
		t.Fatal(err)
	}
}

// differences are the marts whose rows differ, key by key, from what their views make of the
// whole event store.
func differences(t *testing.T, conn driver.Conn, all []marts.Mart) []string {
	return compareMarts(t, conn, all, true)
}

// compareMarts is differences; with requireRows, a mart its view fills with nothing (but the
// external one, no tenant here consenting) fails the test.
func compareMarts(t *testing.T, conn driver.Conn, all []marts.Mart, requireRows bool) []string {
	t.Helper()
	var out []string
	for _, m := range all {
		have, err := marts.ReadValues(context.Background(), conn, m.Values(m.Rows("1")))
		if err != nil {
			t.Fatalf("%s: %v", m.Table, err)
		}
		want, err := marts.ReadValues(context.Background(), conn, m.Values(m.Over("1")))
		if err != nil {
			t.Fatalf("%s over the store: %v", m.Table, err)
		}
		if requireRows && len(want) == 0 && !strings.Contains(m.Table, "external_consented") { // no tenant here consented
			t.Fatalf("%s: its view makes nothing of the event store", m.Table)
		}
		if fmt.Sprint(have) != fmt.Sprint(want) {
			out = append(out, m.Table)
		}
	}
	return out
}

// Tenant ids reach the repair's SQL as literals: quotes and backslashes are escaped, and the
// server reads back exactly the ids.
func TestStringListReadsBackOnTheServer(t *testing.T) {
	ids := []string{"tenant-01", `o'brien`, `back\slash`, `\'`, "日本"}
	if got, want := stringList(ids[:3]), `('tenant-01', 'o\'brien', 'back\\slash')`; got != want {
		t.Fatalf("stringList = %s, want %s", got, want)
	}
	conn, _ := servicetest.ClickHouse(t)
	rows, err := conn.Query(context.Background(), "SELECT arrayJoin(["+strings.Trim(stringList(ids), "()")+"])")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Errorf("the server read %q, want %q", got, ids)
	}
}

// The attack's first finding (attack/MARTS-CUT.md), made exact: an instance cut twice before
// its checkpoint, each cut insert one event of the same tenant, day and feature with the same
// count by a user new to the mart. After the first resume repaired the first insert, the mart
// equals the store without either insert; only the second may be inserted, or the mart counts
// the first twice and the second's user never.
func TestRepairOfTheSecondCutOfTheSameBatchRun(t *testing.T) {
	r := newRig(t, 1) // every event of the one tenant
	ctx := context.Background()
	p := r.roleProcessor(t)
	uses := r.featureUses()
	all := r.storedWhole(t, p, 50, 9, uses(func(i int) string { return fmt.Sprintf("u-whole-%d", i%5) }))
	cut := func(user string, offset int64, ingested time.Time) {
		t.Helper()
		rows := atOffsets(decidedFrom(t, r, p, 1, uint64(offset), uses(func(int) string { return user })), offset)
		r.withoutViews(t, all, func() { r.insertEvents(t, p, rows, ingested) })
	}
	cut("u-first", 50, time.Now().Add(-10*time.Second))
	if _, err := p.loadWithRetry(ctx, []int{0}); err != nil {
		t.Fatal(err)
	}
	if d := compareMarts(t, r.conn, all, false); len(d) > 0 {
		t.Fatalf("after the first resume the marts differ from the store: %v", d)
	}
	cut("u-second", 51, time.Now())
	again := r.roleProcessor(t)
	if _, err := again.loadWithRetry(ctx, []int{0}); err != nil {
		t.Fatal(err)
	}
	r.martsEqualTheStore(t, all, "after the second resume", 7, 52)
	if n := testutil.ToFloat64(again.m.martsUnrepaired); n != 0 {
		t.Errorf("%v keys counted as unexplained", n)
	}
}

// Batches overlap: a batch is stored whole and, before its checkpoint is written, the next one
// (decided within the same second, batch_timeout being shorter) is cut short. Both lie beyond
// the checkpoint with one ingested_at; the marts hold the first and lack the second. The repair
// must insert exactly the second's rows: taking the two for one insert, it found every key both
// touched unexplained and left the marts short (the cluster's whole-stack test saw it once).
func TestCutBatchAfterAWholeOneOfTheSameSecond(t *testing.T) {
	r := newRig(t, 1)
	ctx := context.Background()
	p := r.roleProcessor(t)
	uses := r.featureUses()
	all := r.storedWhole(t, p, 20, 11, uses(func(i int) string { return fmt.Sprintf("u-base-%d", i%4) }))
	second := time.Now().Truncate(time.Second)
	whole := atOffsets(decidedFrom(t, r, p, 30, 12, uses(func(i int) string { return fmt.Sprintf("u-whole-%d", i%3) })), 20)
	r.insertEvents(t, p, whole, second.Add(100*time.Millisecond))
	cut := atOffsets(decidedFrom(t, r, p, 10, 13, uses(func(i int) string { return fmt.Sprintf("u-cut-%d", i%2) })), 50)
	r.withoutViews(t, all, func() { r.insertEvents(t, p, cut, second.Add(300*time.Millisecond)) })
	var inserts, seconds uint64
	if err := r.conn.QueryRow(ctx, "SELECT uniqExact(insert_ns), uniqExact(ingested_at) FROM "+r.db+".events WHERE kafka_offset >= 20").Scan(&inserts, &seconds); err != nil {
		t.Fatal(err)
	}
	if inserts != 2 || seconds != 1 {
		t.Fatalf("beyond the checkpoint: %d inserts in %d ingested_at seconds, want 2 in 1", inserts, seconds)
	}
	if d := compareMarts(t, r.conn, all, false); len(d) == 0 {
		t.Fatal("with every view detached for the cut insert the marts equal the store: the cut was not made")
	}
	var logged bytes.Buffer
	p.log = slog.New(slog.NewTextHandler(&logged, nil))
	if _, err := p.loadWithRetry(ctx, []int{0}); err != nil {
		t.Fatal(err)
	}
	r.martsEqualTheStore(t, all, "after resuming", 9, 60)
	if n := testutil.ToFloat64(p.m.martsUnrepaired); n != 0 {
		t.Errorf("%v keys counted as unexplained:\n%s", n, logged.String())
	}
	if n := testutil.ToFloat64(p.m.martsRepaired); n == 0 {
		t.Error("nothing was repaired")
	}
}

// featureUses makes events of the rig's first tenant that all fall under one key of every
// mart: one feature, 2 uses each, at one hour, by user(i).
func (r *rig) featureUses() func(user func(int) string) func(int, string, *rand.Rand, time.Time) map[string]any {
	tenant, occurred := r.tenants[0], time.Now().UTC().Truncate(time.Hour)
	return func(user func(int) string) func(int, string, *rand.Rand, time.Time) map[string]any {
		return func(i int, _ string, rnd *rand.Rand, now time.Time) map[string]any {
			ev := good(tenant, rnd, now)
			ev["occurred_at"] = occurred.Format(time.RFC3339)
			ev["user"] = user(i)
			ev["data"] = map[string]any{"feature_id": "app.record.create", "count": 2, "records_registered": 0}
			return ev
		}
	}
}

// atOffsets places rows at partition 0's offsets from on.
func atOffsets(rows []row, from int64) []row {
	for i := range rows {
		rows[i].offset = from + int64(i)
	}
	return rows
}

// storedWhole stores n events made by gen as a whole batch of partition 0 (offsets 0 to n-1, 20
// s ago) with its checkpoint, and returns the marts over the event store.
func (r *rig) storedWhole(t *testing.T, p *Processor, n int, seed uint64, gen func(int, string, *rand.Rand, time.Time) map[string]any) []marts.Mart {
	t.Helper()
	ctx := context.Background()
	r.insertEvents(t, p, atOffsets(decidedFrom(t, r, p, n, seed, gen), 0), time.Now().Add(-20*time.Second))
	if err := r.conn.Exec(ctx, "INSERT INTO "+r.db+".rejections (rejected_at, kafka_partition, kafka_offset, class) SELECT now(), toUInt16(0), toUInt64(?), 'checkpoint'", n-1); err != nil {
		t.Fatal(err)
	}
	all, err := marts.List(ctx, r.conn, r.db)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// withoutViews runs insert with every mart's view detached: an insert cut short before any
// view ran.
func (r *rig) withoutViews(t *testing.T, all []marts.Mart, insert func()) {
	t.Helper()
	ctx := context.Background()
	for _, m := range all {
		if err := r.conn.Exec(ctx, "DETACH TABLE "+m.View); err != nil {
			t.Fatal(err)
		}
	}
	insert()
	for _, m := range all {
		if err := r.conn.Exec(ctx, "ATTACH TABLE "+m.View); err != nil {
			t.Fatal(err)
		}
	}
}

// martsEqualTheStore fails the test if a mart differs from its view over the event store,
// saying what the feature mart holds of the first tenant against the users and events the
// store has.
func (r *rig) martsEqualTheStore(t *testing.T, all []marts.Mart, when string, users, events uint64) {
	t.Helper()
	if d := compareMarts(t, r.conn, all, false); len(d) > 0 {
		var u, e uint64
		_ = r.conn.QueryRow(context.Background(), "SELECT uniqMerge(users), sumMerge(events) FROM "+r.db+"_service_improvement.feature_daily WHERE tenant_id = ?", r.tenants[0]).Scan(&u, &e)
		t.Errorf("%s the marts differ from the store: %v (feature_daily: %d users, %d events; the store has %d users, %d events)", when, d, u, e, users, events)
	}
}
