package processor

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/pipeline/marts"
)

// Repairing the purpose marts after a batch cut short (docs/CLUSTER.md, "An insert cut short").
//
// ClickHouse 18.16 writes an insert's event-store part first and then, view by view, each
// mart's parts, each committed on its own. A server killed (or a connection cut) in between
// keeps the events and some of the marts' rows, and the processor, resuming, finds the events
// stored and does not insert them again: the marts would stay short of them. So when the
// high-water marks show a batch cut short, the processor compares, before it reads on, every
// mart's rows of the cut events' tenants and weeks with what the mart's view makes of the
// event store, key by key (a mart's sorting key; a plain mart's whole row):
//
//   - a key whose value equals the event store's is whole;
//   - a key whose value equals the event store's without the partition's last cut insert (its
//     events share the partition, ingested_at and insert_ns; earlier ones were stored whole or
//     repaired when the processor resumed after them, cutScope) lacks exactly that insert's rows: they are
//     inserted, by the view's own SELECT over that insert's events, for those keys only;
//   - any other difference is not the processor's to mend: it is counted
//     (shukei_processor_marts_unrepaired_total) and logged, for 'shukei retention rebuild-marts'.
//
// Only the partition's owner writes its tenants (the raw topic is keyed by tenant; the lease,
// the discarder and awaitEarlierInserts hand a partition over), so nothing else moves those
// rows while they are compared. The insert itself is guarded: it inserts only while the mart's
// rows of those tenants and weeks still read as they did when compared, so an instance paused
// mid-repair whose partitions another has repaired since inserts nothing when it wakes.
// Deleted tenants are left out (promise 8). On a cluster, every replica of the shard must read
// the same cut events and marts before anything is compared: a part one replica has not
// fetched yet would look missing.

// martsAgreeWait bounds how long the replicas of a shard may disagree before the repair gives
// up for now (and the read of the high-water marks is retried, backing off).
const martsAgreeWait = time.Minute

// cutInsert is one insert of a batch cut short: its partition, ingest second and decision time
// in nanoseconds (insert_ns: two batches of a partition may share a second), among the events
// beyond the checkpoints (cut).
type cutInsert struct {
	partition uint16
	ingested  time.Time
	ns        uint64
	cut       string
}

func (c cutInsert) where() string {
	return fmt.Sprintf("%s AND kafka_partition = %d AND ingested_at = toDateTime(%d) AND insert_ns = %d", c.cut, c.partition, c.ingested.Unix(), c.ns)
}

// after says whether c was inserted after d (both of one partition).
func (c cutInsert) after(d cutInsert) bool {
	return c.ingested.After(d.ingested) || c.ingested.Equal(d.ingested) && c.ns > d.ns
}

// repairMarts repairs the marts of every shard for the batches state shows cut short.
func (p *Processor) repairMarts(ctx context.Context, state map[int]*partitionState) error {
	var cuts []string
	for part, st := range state {
		if len(st.done) > 0 {
			cuts = append(cuts, fmt.Sprintf("(kafka_partition = %d AND kafka_offset > %d)", part, st.lo))
		}
	}
	if len(cuts) == 0 {
		return nil
	}
	slices.Sort(cuts)
	cut := "(" + strings.Join(cuts, " OR ") + ")"
	for i, s := range p.shards {
		if err := p.repairShard(ctx, s, cut); err != nil {
			return fmt.Errorf("repair the marts of shard %d: %w", i+1, err)
		}
	}
	return nil
}

// repairShard repairs one shard's marts for the events beyond the checkpoints that cut selects.
func (p *Processor) repairShard(ctx context.Context, s Shard, cut string) error {
	inserts, tenants, first, last, err := p.cutScope(ctx, s, cut)
	if err != nil || len(inserts) == 0 {
		return err
	}
	// Whole ISO weeks for the weekly marts, and for the replicas' agreement.
	from, to := gate.Monday(first), gate.Monday(last).AddDate(0, 0, 7)
	gone, err := p.deleted.current(ctx)
	if err != nil {
		return err
	}
	tenants = slices.DeleteFunc(tenants, func(t string) bool { return gone[decision.TenantTombstone(p.hashKey, t)] })
	if len(tenants) == 0 {
		return nil
	}
	all, err := marts.List(ctx, s.Write, p.db)
	if err != nil {
		return err
	}
	scope := "tenant_id IN " + stringList(tenants) + " AND " // the marts' and the store's index
	events := scope + marts.EventsDated(from, to)
	if err := p.awaitReplicasAgree(ctx, s, all, scope, events, from, to); err != nil {
		return err
	}
	for _, m := range all {
		// A mart of days (or events) is compared over the cut events' days only; a weekly one
		// over their whole weeks. The store is read for no more than the mart's rows hold.
		lo, hi := first, last.AddDate(0, 0, 1)
		if m.Time == "week" {
			lo, hi = from, to
		}
		if err := p.repairMart(ctx, s.Write, m, inserts, m.Rows(scope+m.Dated(lo, hi)), scope+marts.EventsDated(lo, hi)); err != nil {
			return fmt.Errorf("%s: %w", m.Table, err)
		}
	}
	return nil
}

// cutScope reads, on every replica of s, the last insert of each partition among the events
// beyond the checkpoints, its tenants and the first and last days its events occurred on.
//
// Only the last: a processor resumes, repairs and only then reads on, so every earlier insert
// beyond the checkpoint was either stored whole (a batch whose checkpoint was not written yet
// when the next one was cut: batches overlap) or a batch cut short before an earlier resume,
// which repaired it (or counted what it could not explain). Two inserts that contributed alike
// to a key (one new user and the same uses each) would otherwise both look like the one the
// mart lacks. An insert is its partition, ingested_at and insert_ns: two batches of one
// partition may be inserted in one second.
func (p *Processor) cutScope(ctx context.Context, s Shard, cut string) (inserts []cutInsert, tenants []string, from, to time.Time, err error) {
	type found struct {
		in       cutInsert
		tenants  []string
		from, to time.Time
	}
	last := map[uint16]*found{}
	var all []found
	for _, r := range s.Replicas {
		rows, err := r.Query(ctx, "SELECT kafka_partition, ingested_at, insert_ns, groupUniqArray(tenant_id), min(toDate(occurred_at)), max(toDate(occurred_at)) FROM "+p.db+".events WHERE "+cut+" GROUP BY kafka_partition, ingested_at, insert_ns")
		if err != nil {
			return nil, nil, from, to, fmt.Errorf("the events of the batches cut short: %w", err)
		}
		for rows.Next() {
			f := found{in: cutInsert{cut: cut}}
			if err := rows.Scan(&f.in.partition, &f.in.ingested, &f.in.ns, &f.tenants, &f.from, &f.to); err != nil {
				rows.Close()
				return nil, nil, from, to, err
			}
			f.in.ingested = f.in.ingested.UTC()
			all = append(all, f)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, nil, from, to, err
		}
	}
	for i := range all {
		f := &all[i]
		if l := last[f.in.partition]; l == nil || f.in.after(l.in) {
			last[f.in.partition] = f
		}
	}
	seen := map[string]bool{}
	for _, f := range all {
		if l := last[f.in.partition]; l.in.after(f.in) {
			continue // an earlier insert, stored whole or repaired when the processor resumed after it
		}
		if !slices.Contains(inserts, f.in) {
			inserts = append(inserts, f.in)
		}
		for _, t := range f.tenants {
			if !seen[t] {
				seen[t] = true
				tenants = append(tenants, t)
			}
		}
		if from.IsZero() || f.from.Before(from) {
			from = f.from
		}
		if f.to.After(to) {
			to = f.to
		}
	}
	slices.Sort(tenants)
	slices.SortFunc(inserts, func(a, b cutInsert) int { return int(a.partition) - int(b.partition) })
	return inserts, tenants, from, to, nil
}

// awaitReplicasAgree waits until every replica of s reads the same events of the scope and the
// same rows of every mart in it.
func (p *Processor) awaitReplicasAgree(ctx context.Context, s Shard, all []marts.Mart, scope, events string, from, to time.Time) error {
	if len(s.Replicas) < 2 {
		return nil
	}
	queries := []string{"SELECT sum(cityHash64(toString(event_id))) FROM " + p.db + ".events WHERE " + events}
	for _, m := range all {
		queries = append(queries, m.Fingerprint(m.Rows(scope+m.Dated(from, to))))
	}
	deadline := time.Now().Add(martsAgreeWait)
	for {
		differ := ""
		for _, q := range queries {
			var first uint64
			for i, r := range s.Replicas {
				var v uint64
				if err := r.QueryRow(ctx, q).Scan(&v); err != nil {
					return err
				}
				if i == 0 {
					first = v
				} else if v != first && differ == "" {
					differ = q
				}
			}
		}
		if differ == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the shard's replicas still read the cut batch's events or marts differently after %s (%.80s…)", martsAgreeWait, differ)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// repairMart compares mart m's rows that rows selects with what its view makes of the events
// that events selects, and inserts what one cut insert left out.
func (p *Processor) repairMart(ctx context.Context, conn driver.Conn, m marts.Mart, inserts []cutInsert, rows, events string) error {
	have, err := marts.ReadValues(ctx, conn, m.Values(rows))
	if err != nil {
		return err
	}
	want, err := marts.ReadValues(ctx, conn, m.Values(m.Over(events)))
	if err != nil {
		return err
	}
	differ := map[uint64]bool{}
	for _, k := range marts.Differ(have, want) {
		differ[k] = true
	}
	if len(differ) == 0 {
		return nil
	}
	repaired := 0
	for _, in := range inserts {
		without, err := marts.ReadValues(ctx, conn, m.Values(m.Over(events+" AND NOT ("+in.where()+")")))
		if err != nil {
			return err
		}
		var lacking []uint64
		for k := range differ {
			h, hok := have[k]
			w, wok := without[k]
			if hok == wok && h == w {
				lacking = append(lacking, k)
			}
		}
		if len(lacking) == 0 {
			continue
		}
		slices.Sort(lacking)
		if err := p.insertLacking(ctx, conn, m, in, rows, events, lacking); err != nil {
			return err
		}
		for _, k := range lacking {
			delete(differ, k)
		}
		repaired += len(lacking)
	}
	if repaired > 0 {
		p.m.martsRepaired.Add(float64(repaired))
		p.log.Warn("repaired a purpose mart after a batch cut short: its rows of the batch's events were missing", "mart", m.Table, "keys", repaired)
	}
	if len(differ) > 0 {
		p.m.martsUnrepaired.Add(float64(len(differ)))
		p.log.Error("a purpose mart differs from the event store in a way a cut batch does not explain; re-derive it with 'shukei retention rebuild-marts'",
			"mart", m.Table, "keys", len(differ), "cut", cutText(inserts), "example", p.showKey(ctx, conn, m, differ, rows, events))
	}
	return nil
}

// cutText names the cut inserts for a log line: partition@ingest time.
func cutText(inserts []cutInsert) string {
	s := make([]string, len(inserts))
	for i, in := range inserts {
		at := time.Unix(0, int64(in.ns)).UTC().Format(time.RFC3339Nano)
		if in.ns == 0 { // stored before insert_ns
			at = in.ingested.Format(time.RFC3339)
		}
		s[i] = fmt.Sprintf("%d@%s", in.partition, at)
	}
	return strings.Join(s, " ")
}

// showKey describes the smallest of the keys that differ, as the mart holds it and as its view
// makes it of the event store: what an operator (or a failed test) needs to tell a lost part
// from a double count.
func (p *Processor) showKey(ctx context.Context, conn driver.Conn, m marts.Mart, differ map[uint64]bool, rows, events string) string {
	k := slices.Min(slices.Collect(maps.Keys(differ)))
	return "mart: " + marts.ShowKey(ctx, conn, m, rows, k) + "; event store: " + marts.ShowKey(ctx, conn, m, m.Over(events), k)
}

// insertLacking inserts insert in's rows of mart m for the keys lacking, by the view's SELECT
// over that insert's events, while the mart's rows still read as they did when compared.
func (p *Processor) insertLacking(ctx context.Context, conn driver.Conn, m marts.Mart, in cutInsert, rows, events string, lacking []uint64) error {
	var fp uint64
	if err := conn.QueryRow(ctx, m.Fingerprint(rows)).Scan(&fp); err != nil {
		return err
	}
	keys := make([]string, len(lacking))
	for i, k := range lacking {
		keys[i] = strconv.FormatUint(k, 10)
	}
	cols := strings.Join(m.Columns, ", ")
	q := "INSERT INTO " + m.Table + " (" + cols + ") SELECT " + cols + " FROM (" + m.Over(events+" AND "+in.where()) + ")" +
		" WHERE " + m.KeyHash() + " IN (" + strings.Join(keys, ", ") + ")" +
		" AND (" + m.Fingerprint(rows) + ") = " + strconv.FormatUint(fp, 10)
	if err := p.leased(); err != nil {
		return err
	}
	if p.beforeRepairInsert != nil {
		p.beforeRepairInsert() // tests: pause here, as a stopped process would
	}
	// Not deduplicated: on a replicated mart ClickHouse would drop a block equal to one
	// inserted before, and the rows are inserted because they are not there.
	insert := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_deduplicate": 0}), clickhouse.WithQueryID(p.insertID()))
	return conn.Exec(insert, q)
}

// stringList renders ss as a parenthesised list of ClickHouse string literals.
func stringList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = databases.Literal(s)
	}
	return "(" + strings.Join(q, ", ") + ")"
}
