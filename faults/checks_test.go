//go:build faults || cluster

package faults

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/anonymizer/dp"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

const (
	window   = time.Minute      // the aggregator's window here: several close during the run
	lateness = 45 * time.Second // longer than any fault holds an event back from Kafka
	rate     = 2500             // events a second, through the collector
	killsPer = 5                // SIGKILLs of each role
	// faultSpan is about how long the service faults below take: the kills are spread over it.
	faultSpan = 60 * time.Second
)

func eventually(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			fatalf(t, "%s: not within %s", what, within)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func endOffsets(t *testing.T, brokers []string, topic string) map[int]int64 {
	t.Helper()
	out := map[int]int64{}
	for p := range 6 {
		c, err := kafka.DialLeader(context.Background(), "tcp", brokers[0], topic, p)
		if err != nil {
			fatalf(t, "partition %d of %s: %v", p, topic, err)
		}
		out[p], err = c.ReadLastOffset()
		_ = c.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// accountedSQL selects the raw topic's offsets the processor stored or rejected in database db,
// reading the event store through its Distributed table on a cluster (cluster not empty).
func accountedSQL(db, cluster string) string {
	return "SELECT kafka_partition, kafka_offset FROM " + databases.Across(cluster, db+".events") +
		" UNION ALL SELECT kafka_partition, kafka_offset FROM " + db + ".rejections WHERE class != 'checkpoint'"
}

func accounted(ctx context.Context, conn driver.Conn, db, cluster string) (uint64, error) {
	var n uint64
	err := conn.QueryRow(ctx, "SELECT uniqExact(kafka_partition, kafka_offset) FROM ("+accountedSQL(db, cluster)+")").Scan(&n)
	return n, err
}

// checkEvents is the accounting of events: acknowledged against stored, rejected and in the
// DLQ; offsets against rows.
func checkEvents(t *testing.T, conn driver.Conn, db, cluster, raw string, brokers []string, dlq string, snd *sender, total int64) (lost, duplicated int) {
	t.Helper()
	ctx := context.Background()
	stored := map[string]int{}
	rows, err := conn.Query(ctx, "SELECT toString(event_id), toUInt64(count()) FROM "+databases.Across(cluster, db+".events")+" GROUP BY event_id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var n uint64
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		stored[id] = int(n)
	}
	rows.Close()
	type rejection struct {
		reason string
		key    string
	}
	procRejected := map[string][]rejection{}
	rows, err = conn.Query(ctx, "SELECT event_id, reason, kafka_partition, kafka_offset FROM "+db+".rejections WHERE class != 'checkpoint'")
	if err != nil {
		t.Fatal(err)
	}
	var nrej int
	for rows.Next() {
		var id, reason string
		var p uint16
		var o uint64
		if err := rows.Scan(&id, &reason, &p, &o); err != nil {
			t.Fatal(err)
		}
		nrej++
		procRejected[id] = append(procRejected[id], rejection{reason, fmt.Sprintf("%s/%d/%d", raw, p, o)})
	}
	rows.Close()
	inDLQ := map[string]bool{}
	for _, m := range servicetest.ReadTopic(t, brokers, dlq) {
		inDLQ[string(m.Key)] = true
	}

	dlqOnly, dupCopies := 0, 0
	for id := range snd.acked {
		switch n := stored[id]; {
		case n == 1:
		case n > 1:
			duplicated += n - 1
		default:
			found := false
			for _, r := range procRejected[id] {
				if r.reason != "duplicate_event_id" && inDLQ[r.key] {
					found = true
				}
			}
			if found {
				dlqOnly++
			} else {
				lost++
				if lost <= 10 {
					t.Logf("acknowledged event %s (tenant %s) is neither stored nor rejected with a reason", id, snd.acked[id])
				}
			}
		}
		for _, r := range procRejected[id] {
			if r.reason == "duplicate_event_id" {
				dupCopies++
			}
		}
	}
	unacked := 0
	for id := range stored {
		if _, ok := snd.acked[id]; !ok {
			unacked++
		}
	}
	if dupCopies == 0 && snd.lostReplies.Load() > 0 {
		errorf(t, "%d replies were lost and their events resent, yet no copy reached the processor as a duplicate", snd.lostReplies.Load())
	}
	if unacked > 0 {
		errorf(t, "%d events are stored that the collector never acknowledged", unacked)
	}
	leaked := 0
	for id, reason := range snd.rejected {
		if stored[id] > 0 {
			leaked++
			if leaked <= 5 {
				errorf(t, "event %s refused by the collector (%s) is stored", id, reason)
			}
		}
	}
	noDLQ := 0
	for _, rs := range procRejected {
		for _, r := range rs {
			if !inDLQ[r.key] {
				noDLQ++
			}
		}
	}
	if noDLQ > 0 {
		errorf(t, "%d rejections in ClickHouse have no DLQ record", noDLQ)
	}
	// Offsets: each message of the raw topic is an event row or a rejection row, once.
	var nrows, distinct uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(kafka_partition, kafka_offset) FROM ("+accountedSQL(db, cluster)+")").Scan(&nrows, &distinct); err != nil {
		t.Fatal(err)
	}
	if int64(distinct) != total || nrows != distinct {
		errorf(t, "raw topic holds %d messages; the store has %d rows for %d distinct offsets", total, nrows, distinct)
	}
	duplicated += int(nrows - distinct)
	t.Logf("events: %d acknowledged, %d stored once, %d rejected by the processor with a reason and in the DLQ; %d retried copies in the topic rejected as duplicate_event_id; %d processor rejections, every one in the DLQ: %v; raw topic %d messages = %d rows",
		len(snd.acked), len(snd.acked)-lost-dlqOnly, dlqOnly, dupCopies, nrej, noDLQ == 0, total, nrows)
	return lost, duplicated
}

// checkReleases: every window of the run released once, from partials equal to a fault-free
// in-process run over the topic, and charged once.
func checkReleases(t *testing.T, conn driver.Conn, db, raw string, brokers []string, master *pseudonym.MasterKey, reg *registry.Registry, first, last aggregator.Window) {
	t.Helper()
	ctx := context.Background()
	cfg := config.Default().Aggregator
	cfg.Epsilon, cfg.WeekEpsilon, cfg.MonthEpsilon = 0.2, 0, 0 // as servicetest.Config
	cfg.Window, cfg.AllowedLateness = window, lateness
	cfg.Features, cfg.Settings = population.Features, population.Settings
	plan, err := aggregator.NewPlan(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	keyring := pseudonym.NewKeyring(master)
	cache := registry.NewCache(reg, keyring, time.Minute, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	versions, err := policy.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	dctx := &decision.Context{Now: time.Now(), Limits: event.Limits{}.WithDefaults(), Tenants: cache.Snapshot(), Keyring: keyring, Policy: decision.NewPolicyTagger(versions)}

	type accKey struct {
		part  int
		start int64
	}
	accs := map[accKey]*aggregator.Acc{}
	seen := map[string]bool{} // retried copies dropped here, not by Acc: the reference must not share the code it checks
	for _, m := range servicetest.ReadTopic(t, brokers, raw) {
		tg, rej := decision.Decide(m.Value, dctx)
		if rej != nil || !policy.Set(tg.Purposes).Has(policy.ExternalAggregate) || seen[tg.Event.EventID] {
			continue
		}
		seen[tg.Event.EventID] = true
		w := aggregator.WindowOf(tg.Event.OccurredAt, window)
		k := accKey{m.Partition, w.Start.Unix()}
		if accs[k] == nil {
			accs[k] = plan.NewAcc(w)
		}
		accs[k].Add(&tg, m.Offset)
	}
	type cellKey struct {
		part         int
		metric, cell string
	}
	windows := 0
	for w := first; !w.Start.After(last.Start); w = aggregator.WindowOf(w.End, window) {
		windows++
		want := map[cellKey][2]int64{}
		for k, acc := range accs {
			if k.start != w.Start.Unix() {
				continue
			}
			ps, err := acc.Partials(master.Derive("aggregator-sampling"))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				v, _ := dp.PartialValue(p.State)
				want[cellKey{k.part, p.Metric, p.Cell}] = [2]int64{p.Tenants, v}
			}
		}
		got := map[cellKey][2]int64{}
		rows, err := conn.Query(ctx, "SELECT partition, metric, cell, tenants, state FROM "+db+"_aggregator.aggregate_state WHERE kind = 'partial' AND plan_hash = ? AND window_start = ?", plan.Hash(), w.Start)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var part, tenants uint32
			var metric, cell, state string
			if err := rows.Scan(&part, &metric, &cell, &tenants, &state); err != nil {
				t.Fatal(err)
			}
			v, err := dp.PartialValue([]byte(state))
			if err != nil {
				t.Fatal(err)
			}
			k := cellKey{int(part), metric, cell}
			if prev, dup := got[k]; dup && prev != [2]int64{int64(tenants), v} {
				errorf(t, "window %s: partial %+v stored twice with different values", w, k)
			}
			got[k] = [2]int64{int64(tenants), v}
		}
		rows.Close()
		diff := 0
		for k, v := range want {
			if got[k] != v {
				diff++
				if diff <= 5 {
					errorf(t, "window %s partial %+v: stored (tenants, value) %v, fault-free run %v", w, k, got[k], v)
				}
			}
		}
		if len(got) != len(want) {
			errorf(t, "window %s: %d partials stored, the fault-free run makes %d", w, len(got), len(want))
		}
		// One release: one id, one row per released cell.
		var ids, cells, rowsN uint64
		if err := conn.QueryRow(ctx, "SELECT uniqExact(release_id), uniqExact(metric, dims), count() FROM "+db+"_external_aggregate.releases WHERE window_start = ?", w.Start).Scan(&ids, &cells, &rowsN); err != nil {
			t.Fatal(err)
		}
		if ids != 1 || cells != rowsN {
			errorf(t, "window %s: %d release ids, %d rows for %d cells (want one release, one row a cell)", w, ids, rowsN, cells)
		}
		var charges uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"_external_aggregate.budget_ledger WHERE window_start = ?", w.Start).Scan(&charges); err != nil {
			t.Fatal(err)
		}
		if charges != 1 {
			errorf(t, "window %s: the ledger holds %d charges", w, charges)
		}
		if diff == 0 && len(got) == len(want) && ids == 1 && cells == rowsN && charges == 1 {
			t.Logf("window %s: released once (%d cells), charged once, %d partials equal to the fault-free run", w.Start.Format("15:04"), cells, len(want))
		}
	}
	// Nothing was released or charged for a window outside the run.
	var outside uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"_external_aggregate.budget_ledger WHERE window_start < ? OR window_start > ?", first.Start, last.Start).Scan(&outside); err != nil {
		t.Fatal(err)
	}
	if outside > 0 {
		errorf(t, "%d ledger charges for windows outside the run", outside)
	}
	fmt.Printf("stack faults: windows released once=%d of %d\n", windows, windows)
}

// checkAudit: the chain verifies after five SIGKILLs of the query service and the ClickHouse
// faults, and every answered request has its record.
func checkAudit(t *testing.T, conn driver.Conn, db string, prb *prober) {
	t.Helper()
	ctx := context.Background()
	n, err := audit.New(conn, db).Verify(ctx)
	if err != nil {
		errorf(t, "audit chain: %v (after %d records)", err, n)
	}
	var allowed uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"_audit.audit_log WHERE principal_id = 'fault-dashboard' AND decision = 'allowed'").Scan(&allowed); err != nil {
		t.Fatal(err)
	}
	if allowed < uint64(prb.answered.Load()) {
		errorf(t, "%d requests answered, only %d allowed records in the audit log", prb.answered.Load(), allowed)
	}
	if prb.answered.Load() == 0 {
		errorf(t, "the query service answered nothing")
	}
	t.Logf("audit: chain of %d records verifies; %d requests answered, %d allowed records", n, prb.answered.Load(), allowed)
}
