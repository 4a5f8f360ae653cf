//go:build faults

package attack

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The sentence attacked (docs/promises.md, promise 20): "However an insert into ClickHouse is
// cut short — ClickHouse or a processor SIGKILLed or SIGSTOPped mid-insert, on one server or on
// a cluster — once the processor has stored or refused every message of the raw topic, every
// purpose mart holds exactly what its materialised view makes of the event store: no row key
// missing, none counted twice, without an operator."
//
// Brief: attack/MARTS-CUT-BURST.md. The harness is marts_cut_test.go's (attack/MARTS-CUT.md);
// this attack runs the processors with the smallest batching they take and aims the cuts at the
// second or third of a quick run of inserts of one instance (and so of its raw partitions).

// ---- which instance wrote which part of the event store ----

// mbPart is one insert part of the event store as the watcher saw it land, and the instance it
// is attributed to: the one whose INSERT into the event store passed its proxy earliest among
// those still waiting for their part.
type mbPart struct {
	name string
	at   time.Time
	inst int  // -1: no instance was waiting for a part
	amb  bool // more than one instance was waiting
}

// mbTracker follows the event store's insert parts per instance.
type mbTracker struct {
	mu      sync.Mutex
	events  string // <db>.events
	pending []int64
	hist    [][]mbPart
	all     []mbPart
	byName  map[string]mbPart

	parts, amb, unattributed int
	pairs                    int // parts that landed in the same wall-clock second as their instance's previous part
	perInst                  []int
	// overlaps: INSERTs into the event store sent while the same instance's previous one had no
	// part yet; seq: each instance's recent INSERTs (table, time); marts: mart parts since the
	// last event-store part
	overlaps int
	seq      [][]string
	byTable  map[string]int
	marts    int
}

func newMBTracker(events string, n int) *mbTracker {
	return &mbTracker{events: events, pending: make([]int64, n), hist: make([][]mbPart, n), byName: map[string]mbPart{}, perInst: make([]int, n),
		seq: make([][]string, n), byTable: map[string]int{}}
}

// short is a table's name without the test's database prefix.
func (k *mbTracker) short(table string) string {
	db := strings.TrimSuffix(k.events, ".events")
	return strings.TrimPrefix(strings.TrimPrefix(table, db), "_")
}

func (k *mbTracker) query(inst int, table string) {
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.byTable[k.short(table)]++
	k.seq[inst] = append(k.seq[inst][max(0, len(k.seq[inst])-11):], k.short(table)+"@"+now.UTC().Format("05.000"))
	if table != k.events {
		return
	}
	if k.pending[inst] != 0 && now.UnixNano()-k.pending[inst] < int64(10*time.Second) {
		k.overlaps++
	}
	k.pending[inst] = now.UnixNano()
}

func (k *mbTracker) part(table, name string) {
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if table != k.events {
		k.marts++
		return
	}
	k.marts = 0
	best, cands := -1, 0
	for i, q := range k.pending {
		if q == 0 || now.UnixNano()-q > int64(10*time.Second) {
			continue
		}
		cands++
		if best < 0 || q < k.pending[best] {
			best = i
		}
	}
	p := mbPart{name: name, at: now, inst: best, amb: cands > 1}
	k.parts++
	if p.amb {
		k.amb++
	}
	if best < 0 {
		k.unattributed++
	} else {
		k.pending[best] = 0
		k.perInst[best]++
		h := k.hist[best]
		if len(h) > 0 && h[len(h)-1].at.Unix() == now.Unix() {
			k.pairs++
		}
		k.hist[best] = append(h[max(0, len(h)-15):], p)
	}
	k.all = append(k.all[max(0, len(k.all)-63):], p)
	if len(k.byName) > 4096 {
		k.byName = map[string]mbPart{}
	}
	k.byName[name] = p
}

// reset forgets what was waiting and the runs (after a restart of the server nothing of before
// is in the same second).
func (k *mbTracker) reset() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.pending {
		k.pending[i] = 0
		k.hist[i] = nil
	}
	k.all = nil
}

func (k *mbTracker) stats() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var tables []string
	for t, c := range k.byTable {
		tables = append(tables, fmt.Sprintf("%s=%d", t, c))
	}
	sort.Strings(tables)
	return fmt.Sprintf("event-store insert parts seen %d (per instance %v, %d with more than one instance waiting, %d unattributed); %d landed in the same wall-clock second as the same instance's previous part; %d INSERTs into the event store sent before the same instance's previous one had its part; INSERTs through the proxies by table: %s",
		k.parts, k.perInst, k.amb, k.unattributed, k.pairs, k.overlaps, strings.Join(tables, " "))
}

// recent is instance i's last INSERTs, oldest first.
func (k *mbTracker) recent(i int) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return strings.Join(k.seq[i], " ")
}

// martsSince is the number of mart parts since the last event-store part.
func (k *mbTracker) martsSince() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.marts
}

// mbAim says which event-store parts a cut is aimed at.
type mbAim struct {
	minRun      int  // the part is at least the minRun-th of a run of its instance's parts less than 1 s apart
	interleaved bool // another instance's part landed between the instance's previous part and this one
	only        int  // ≥ 0: only this instance's parts
	any         bool // any part of the instance (only), no run needed
}

// cond is an interruption's condition: the part is one the aim wants, its instance and
// description then put in chosen and why.
func (k *mbTracker) cond(a mbAim, chosen *int, why *string) func(part string) bool {
	return func(part string) bool {
		i, d, ok := k.match(part, a)
		if ok {
			*chosen, *why = i, d
		}
		return ok
	}
}

// match says whether the part named name is one the aim wants, and describes it.
func (k *mbTracker) match(name string, a mbAim) (int, string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.byName[name]
	if !ok || p.inst < 0 || (a.only >= 0 && p.inst != a.only) {
		return -1, "", false
	}
	h := k.hist[p.inst]
	if len(h) == 0 || h[len(h)-1].name != name {
		return -1, "", false
	}
	amb := ""
	if p.amb {
		amb = " (attribution: the earliest of several waiting instances)"
	}
	if a.any {
		return p.inst, fmt.Sprintf("processor %d's part %s at %s%s", p.inst, name, p.at.UTC().Format("15:04:05.000"), amb), true
	}
	if len(h) < 2 {
		return -1, "", false
	}
	prev := h[len(h)-2]
	if prev.at.Unix() != p.at.Unix() {
		return -1, "", false
	}
	run := 1
	var gaps []string
	for j := len(h) - 1; j > 0 && h[j].at.Sub(h[j-1].at) < time.Second; j-- {
		run++
		gaps = append([]string{h[j].at.Sub(h[j-1].at).Round(time.Millisecond).String()}, gaps...)
	}
	if run < max(2, a.minRun) {
		return -1, "", false
	}
	between := 0
	if a.interleaved {
		pi, ci := -1, -1
		for j, q := range k.all {
			if q.name == prev.name {
				pi = j
			}
			if q.name == name {
				ci = j
			}
		}
		if pi < 0 || ci < 0 {
			return -1, "", false
		}
		for _, q := range k.all[pi+1 : ci] {
			if q.inst != p.inst {
				between++
			}
		}
		if between == 0 {
			return -1, "", false
		}
	}
	d := fmt.Sprintf("processor %d's part %s at %s: the %d. of a run of its parts (gaps %s), in the same wall-clock second as its previous part %s at %s",
		p.inst, name, p.at.UTC().Format("15:04:05.000"), run, strings.Join(gaps, ", "), prev.name, prev.at.UTC().Format("15:04:05.000"))
	if a.interleaved {
		d += fmt.Sprintf(", with %d part(s) of other instances between them", between)
	}
	return p.inst, d + amb, true
}

// ---- what the event store says about a cut insert ----

// mbCheck is what the store says of the insert the cut part belongs to.
type mbCheck struct {
	known      bool
	sameSecond bool // another insert of one of its raw partitions has an ingested_at second in common with it
	line       string
}

// checkCut reads, while no processor reaches the server, the cut event-store part: its insert's
// insert_ns, ingested_at seconds, raw partitions and offsets; for each partition the inserts
// around it within seconds, and the partition's latest checkpoint row.
func (r *mcRun) checkCut(f mcFire) mbCheck {
	h, db := r.h, r.h.db
	if len(f.parts) == 0 || !strings.HasPrefix(f.parts[0], db+".events/") {
		return mbCheck{line: "not aimed at an event-store part"}
	}
	part := strings.TrimPrefix(f.parts[0], db+".events/")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type grp struct {
		p                  uint16
		ns                 uint64
		s0, s1             uint32
		n                  uint64
		o0, o1             uint64
		cutInsert, sameSec bool
	}
	rows, err := h.s.conn.Query(ctx, fmt.Sprintf("SELECT kafka_partition, insert_ns, min(toUInt32(ingested_at)), max(toUInt32(ingested_at)), count(), min(kafka_offset), max(kafka_offset) FROM %s.events WHERE _part = ? GROUP BY kafka_partition, insert_ns ORDER BY kafka_partition, insert_ns", db), part)
	if err != nil {
		return mbCheck{line: fmt.Sprintf("the cut part %s: %v", part, err)}
	}
	var cut []grp
	for rows.Next() {
		var g grp
		if err := rows.Scan(&g.p, &g.ns, &g.s0, &g.s1, &g.n, &g.o0, &g.o1); err != nil {
			rows.Close()
			return mbCheck{line: fmt.Sprintf("the cut part %s: %v", part, err)}
		}
		cut = append(cut, g)
	}
	rows.Close()
	merged := false
	if len(cut) == 0 {
		// Merged at the restart: the cut insert is taken as the latest insert in the store (the
		// server died at its part or a few mart parts after it).
		merged = true
		rows, err := h.s.conn.Query(ctx, fmt.Sprintf("SELECT kafka_partition, insert_ns, min(toUInt32(ingested_at)), max(toUInt32(ingested_at)), count(), min(kafka_offset), max(kafka_offset) FROM %[1]s.events WHERE insert_ns = (SELECT max(insert_ns) FROM %[1]s.events) GROUP BY kafka_partition, insert_ns ORDER BY kafka_partition", db))
		if err != nil {
			return mbCheck{line: fmt.Sprintf("the cut part %s is no longer there (merged at the restart) and the latest insert: %v", part, err)}
		}
		for rows.Next() {
			var g grp
			if err := rows.Scan(&g.p, &g.ns, &g.s0, &g.s1, &g.n, &g.o0, &g.o1); err == nil {
				cut = append(cut, g)
			}
		}
		rows.Close()
		if len(cut) == 0 {
			return mbCheck{line: fmt.Sprintf("the cut part %s is no longer there (merged at the restart): not checked", part)}
		}
	}
	nss := map[uint64]bool{}
	for _, g := range cut {
		nss[g.ns] = true
	}
	var b strings.Builder
	if merged {
		fmt.Fprintf(&b, "the cut part %s was merged at the restart; taken as the latest insert in the store (insert_ns %d)", part, cut[0].ns)
	} else {
		fmt.Fprintf(&b, "the cut part %s holds %d insert_ns value(s)", part, len(nss))
	}
	same := false
	for _, c := range cut {
		fmt.Fprintf(&b, "\n      partition %d: %d events, offsets %d..%d, insert_ns %d, ingested_at %s..%s",
			c.p, c.n, c.o0, c.o1, c.ns, time.Unix(int64(c.s0), 0).UTC().Format("15:04:05"), time.Unix(int64(c.s1), 0).UTC().Format("15:04:05"))
		// every insert of this partition within a few seconds before and after
		q := fmt.Sprintf("SELECT kafka_partition, insert_ns, min(toUInt32(ingested_at)) AS s0, max(toUInt32(ingested_at)), count(), min(kafka_offset), max(kafka_offset) FROM %s.events WHERE kafka_partition = ? AND ingested_at >= toDateTime(?) AND ingested_at <= toDateTime(?) GROUP BY kafka_partition, insert_ns ORDER BY min(kafka_offset)", db)
		rs, err := h.s.conn.Query(ctx, q, c.p, c.s0-4, c.s1+1)
		if err != nil {
			fmt.Fprintf(&b, "; around it: %v", err)
			continue
		}
		var around []grp
		for rs.Next() {
			var g grp
			if err := rs.Scan(&g.p, &g.ns, &g.s0, &g.s1, &g.n, &g.o0, &g.o1); err == nil {
				around = append(around, g)
			}
		}
		rs.Close()
		var desc []string
		for _, g := range around {
			tag := ""
			switch {
			case g.ns == c.ns:
				tag = " ← the cut insert"
			case g.s0 <= c.s1 && c.s0 <= g.s1:
				tag = " ← same ingested_at second as the cut insert"
				if c.ns != 0 && g.ns != 0 {
					same = true
				}
			}
			gap := ""
			if g.ns != 0 && c.ns != 0 {
				gap = fmt.Sprintf(" (%+.0f ms)", (float64(g.ns)-float64(c.ns))/1e6)
			}
			desc = append(desc, fmt.Sprintf("insert_ns %d%s, %s..%s, %d events, offsets %d..%d%s", g.ns, gap,
				time.Unix(int64(g.s0), 0).UTC().Format("15:04:05"), time.Unix(int64(g.s1), 0).UTC().Format("15:04:05"), g.n, g.o0, g.o1, tag))
		}
		if len(desc) > 8 {
			desc = desc[len(desc)-8:]
		}
		fmt.Fprintf(&b, "\n        inserts of partition %d around it: %s", c.p, strings.Join(desc, "\n          "))
		var cp, cpAt uint64
		var cpN uint64
		if err := h.s.conn.QueryRow(ctx, fmt.Sprintf("SELECT count(), max(kafka_offset), toUInt64(max(toUInt32(rejected_at))) FROM %s.rejections WHERE class = 'checkpoint' AND kafka_partition = ?", db), c.p).Scan(&cpN, &cp, &cpAt); err == nil {
			var beyond uint64
			_ = h.s.conn.QueryRow(ctx, fmt.Sprintf("SELECT uniqExact(insert_ns) FROM %s.events WHERE kafka_partition = ? AND kafka_offset > ?", db), c.p, cp).Scan(&beyond)
			if cpN == 0 {
				fmt.Fprintf(&b, "\n        no checkpoint row of partition %d yet; %d insert_ns values stored of it", c.p, beyond)
			} else {
				fmt.Fprintf(&b, "\n        latest checkpoint row of partition %d: offset %d at %s; inserts (insert_ns values) of it above that offset: %d",
					c.p, cp, time.Unix(int64(cpAt), 0).UTC().Format("15:04:05"), beyond)
			}
		}
	}
	return mbCheck{known: true, sameSecond: same, line: b.String()}
}

// ---- the test ----

// TestAttackMartsExactAfterCutBursts runs the marts-cut harness (three processors behind
// proxies over a six-partition raw topic, ~600 messages a second, the server's data directory
// watched) with a batch timeout of 100 ms and at most 250 events a batch, so that each instance
// inserts several times a second when the machine lets it, and cuts at the second or third
// insert of a quick run of one instance's inserts: ClickHouse SIGKILLed at the event store's
// part of the second of two inserts in one wall-clock second, of the third of a run, after k of
// the marts' parts; with the inserting processor SIGKILLed or SIGSTOPped at the same moment; the
// same instance cut again at its first insert after it resumes and then at its next quick pair;
// a pair with another instance's insert between; a pair in the catch-up burst right after a
// restart; the INSERT that follows a pair's second insert refused with the server killed, then
// that instance's next insert cut; a pair cut and the repair's first part cut again; ClickHouse
// SIGSTOPped 10 s at a pair's part. After each cut, before the processors may reach the server,
// it reads from the store whether the cut insert shares a raw partition and an ingested_at second
// with another insert. At the end, once every raw offset is stored or refused, every mart must
// equal its view over the whole event store, key by key. Brief and results:
// attack/MARTS-CUT-BURST.md.
func TestAttackMartsExactAfterCutBursts(t *testing.T) {
	batchTimeout, batchSize, perTick := "100ms", "250", 30
	if v := os.Getenv("SHUKEI_TEST_BURST_BATCH_TIMEOUT"); v != "" {
		batchTimeout = v
	}
	if v := os.Getenv("SHUKEI_TEST_BURST_BATCH_SIZE"); v != "" {
		batchSize = v
	}
	if v, err := strconv.Atoi(os.Getenv("SHUKEI_TEST_BURST_PER_TICK")); err == nil && v > 0 {
		perTick = v
	}
	var track *mbTracker
	r := mcSetup(t, mcOpts{
		env:     []string{"SHUKEI_PROCESSOR_BATCH_TIMEOUT=" + batchTimeout, "SHUKEI_PROCESSOR_BATCH_SIZE=" + batchSize},
		perTick: perTick,
		prepare: func(h *mcHarness) {
			track = newMBTracker(h.db+".events", 3)
			h.insertSeen = track.query
			h.partSeen = track.part
		},
	})
	h, rng, procs := r.h, r.rng, r.procs
	h.logf("burst settings: processor batch timeout %s, batch size %s; load %d messages every 50 ms (~%d a second)", batchTimeout, batchSize, perTick, perTick*20)
	h.logf("warm-up: %s", track.stats())
	maxAfter := len(h.marts)

	// What each cut was, for the table at the end.
	type cutRow struct {
		label, aimed string
		landed       bool
		check        mbCheck
	}
	var table []cutRow
	var last mbCheck
	record := func(label, why string, before int) {
		table = append(table, cutRow{label: label, aimed: why, landed: r.landed > before, check: last})
		h.logf("%s: aimed at %s", label, why)
	}
	r.afterRestart = func(label string, f mcFire) {
		last = r.checkCut(f)
		h.logf("%s: %s", label, last.line)
		track.reset()
	}

	// cut arms a kill of ClickHouse at an event-store part the aim wants (after `after` of the
	// marts' parts), with withInst done to the aimed instance; the gate stays closed.
	cut := func(label string, aim mbAim, after int, withInst func(int)) (int, bool) {
		chosen, why := -1, ""
		arm := &mcArm{after: after, only: -1, keepOn: after > 0,
			cond: track.cond(aim, &chosen, &why),
			who:  func() int { return chosen }}
		before := r.landed
		last = mbCheck{}
		_, ok := r.killArm(label, arm, withInst)
		if !ok {
			h.logf("%s: %s", label, track.stats())
			return -1, false
		}
		record(label, why, before)
		return chosen, true
	}
	resume := func(pause time.Duration) {
		h.openGate()
		time.Sleep(pause)
		r.ensureAllUp()
	}
	pair := mbAim{minRun: 2, only: -1}

	// B1. ClickHouse SIGKILLed at the event store's part of the second of two inserts of one
	// instance in one wall-clock second.
	if _, ok := cut("cut B1 (ClickHouse SIGKILL at the event-store part of the 2nd of two inserts of one processor in one second)", pair, 0, nil); ok {
		resume(5 * time.Second)
	}

	// B2. The same at the third insert of a quick run.
	if _, ok := cut("cut B2 (ClickHouse SIGKILL at the event-store part of the 3rd of a quick run of one processor's inserts)", mbAim{minRun: 3, only: -1}, 0, nil); ok {
		resume(5 * time.Second)
	}

	// B3. After k of the marts' parts of the second insert of a pair.
	a := 1 + rng.IntN(maxAfter)
	if _, ok := cut(fmt.Sprintf("cut B3 (ClickHouse SIGKILL after %d mart part(s) of the 2nd of two inserts of one processor in one second)", a), pair, a, nil); ok {
		resume(5 * time.Second)
	}

	// B4. With the inserting processor SIGKILLed at the same moment.
	a = rng.IntN(2)
	label := fmt.Sprintf("cut B4 (ClickHouse SIGKILL after %d mart part(s) of the 2nd of two inserts in one second + that processor SIGKILLed)", a)
	if i, ok := cut(label, pair, a, func(i int) { r.sig(i, syscall.SIGKILL) }); ok {
		h.openGate()
		if i >= 0 {
			<-procs[i].done
			r.startInst(i)
			h.logf("%s: processor %d started again", label, i)
		}
		time.Sleep(5 * time.Second)
		r.ensureAllUp()
	}

	// B5. With the inserting processor SIGSTOPped at the same moment, resumed once the server
	// is back (within its group session).
	a = rng.IntN(3)
	label = fmt.Sprintf("cut B5 (ClickHouse SIGKILL after %d mart part(s) of the 2nd of two inserts in one second + that processor SIGSTOPped until the server is back)", a)
	var stoppedAt time.Time
	if i, ok := cut(label, pair, a, func(i int) { r.sig(i, syscall.SIGSTOP); stoppedAt = time.Now() }); ok {
		h.openGate()
		time.Sleep(time.Second)
		if i >= 0 {
			r.sig(i, syscall.SIGCONT)
			h.logf("%s: SIGCONT processor %d (stopped %s)", label, i, time.Since(stoppedAt).Round(100*time.Millisecond))
		}
		time.Sleep(5 * time.Second)
		r.ensureAllUp()
	}

	// B6. The same instance cut again before it has made progress: at a pair; then at its very
	// first event-store part after it resumes; then at its next pair, after k mart parts.
	a = rng.IntN(3)
	if i, ok := cut(fmt.Sprintf("cut B6a (ClickHouse SIGKILL after %d mart part(s) of the 2nd of two inserts in one second)", a), pair, a, nil); ok {
		h.openGate()
		if i >= 0 {
			if _, ok := cut(fmt.Sprintf("cut B6b (ClickHouse SIGKILL at processor %d's first event-store part after it resumed)", i), mbAim{only: i, any: true}, 0, nil); ok {
				h.openGate()
				a = rng.IntN(maxAfter)
				if _, ok := cut(fmt.Sprintf("cut B6c (ClickHouse SIGKILL after %d mart part(s) of processor %d's next 2nd insert in one second)", a, i), mbAim{minRun: 2, only: i}, a, nil); ok {
					h.openGate()
				}
			}
		}
		time.Sleep(5 * time.Second)
		r.ensureAllUp()
	}

	// B7. Two instances' inserts interleaved: the second of one instance's pair with another
	// instance's part between the two.
	a = rng.IntN(maxAfter + 1)
	if _, ok := cut(fmt.Sprintf("cut B7 (ClickHouse SIGKILL after %d mart part(s) of the 2nd of a pair with another processor's insert between)", a), mbAim{minRun: 2, only: -1, interleaved: true}, a, nil); ok {
		h.openGate()
		// B8. In the catch-up burst right after that restart.
		a = rng.IntN(maxAfter)
		if _, ok := cut(fmt.Sprintf("cut B8 (ClickHouse SIGKILL after %d mart part(s) of the 2nd of a pair in the catch-up right after a restart)", a), pair, a, nil); ok {
			h.openGate()
		}
		time.Sleep(5 * time.Second)
		r.ensureAllUp()
	}

	// B9. An insert that completed, then nothing more of it: ClickHouse SIGKILLed as the next
	// INSERT the instance sends after the 2nd insert of a pair (whatever it is: a checkpoint,
	// rejections, the next batch) passes its proxy, not forwarded; then the same instance cut at
	// its first event-store part after it resumes.
	label = "cut B9a (ClickHouse SIGKILL as a processor's next INSERT after the 2nd of two inserts in one second goes out; not forwarded)"
	{
		chosen, why, nextTable, marts := -1, "", "", 0
		killed := make(chan struct{}, 1)
		pid := h.chPID()
		arm := &mcArm{after: 0, only: -1,
			cond: track.cond(pair, &chosen, &why),
			act: func() int {
				i := chosen
				h.onQuery.Store(&mcQueryHook{fn: func(inst int, table string) bool {
					if inst != i || h.onQuery.Swap(nil) == nil {
						return false
					}
					marts, nextTable = track.martsSince(), table
					_ = syscall.Kill(pid, syscall.SIGKILL)
					killed <- struct{}{}
					return true
				}})
				return i
			}}
		before := r.landed
		last = mbCheck{}
		if f, ok := r.fire(arm); !ok {
			h.logf("%s: no event-store part of the aim within 25 s; not cut", label)
		} else {
			select {
			case <-killed:
				r.afterKill(label, pid, f, fmt.Sprintf("as processor %d's INSERT INTO %s went out (not forwarded), after its event-store part %s and %d mart part(s) since the last event-store part; its INSERTs before: %s",
					f.inst, nextTable, f.parts[0], marts, track.recent(f.inst)))
				record(label, why, before)
				h.openGate()
				if _, ok := cut(fmt.Sprintf("cut B9b (ClickHouse SIGKILL at processor %d's first event-store part after it resumed from B9a)", f.inst), mbAim{only: f.inst, any: true}, 0, nil); ok {
					h.openGate()
				}
			case <-time.After(10 * time.Second):
				h.onQuery.Store(nil)
				h.logf("%s: processor %d sent no INSERT within 10 s of its part; not cut", label, f.inst)
			}
			time.Sleep(5 * time.Second)
			r.ensureAllUp()
		}
	}

	// B10. A pair cut after k mart parts, then ClickHouse SIGKILLed again the instant the first
	// repair insert's part (into a mart) is in place.
	a = 1 + rng.IntN(maxAfter)
	label = fmt.Sprintf("cut B10 (ClickHouse SIGKILL after %d mart part(s) of the 2nd of two inserts in one second, then again at the first repair's part)", a)
	if _, ok := cut(label, pair, a, nil); ok {
		h.cutTheRepair(label, func(f mcFire, what string, pid int) {
			before := r.landed
			last = mbCheck{}
			r.afterKill(label+", the repair", pid, f, "at the repair's part "+strings.Join(f.parts, ", ")+" ("+what+")")
			record(label+", the repair", what, before)
			h.openGate()
		})
		time.Sleep(5 * time.Second)
		r.ensureAllUp()
	}

	// B11. ClickHouse SIGSTOPped for 10 s at the event-store part of the 2nd of two inserts in
	// one second, then SIGCONT; the marts observed 1.5 s later with the proxies shut.
	label = "cut B11 (ClickHouse SIGSTOP 10 s at the event-store part of the 2nd of two inserts in one second)"
	{
		chosen, why := -1, ""
		pid := h.chPID()
		arm := &mcArm{after: 0, only: -1,
			cond: track.cond(pair, &chosen, &why),
			act:  func() int { _ = syscall.Kill(pid, syscall.SIGSTOP); return chosen }}
		before := r.landed
		if f, ok := r.fire(arm); !ok {
			h.logf("%s: no event-store part of the aim within 25 s; not cut", label)
		} else {
			r.cuts++
			h.logf("%s: SIGSTOP ClickHouse (pid %d) at %s (processor %d inserting)", label, pid, strings.Join(f.parts, ", "), f.inst)
			time.Sleep(10 * time.Second)
			_ = syscall.Kill(pid, syscall.SIGCONT)
			h.logf("%s: SIGCONT ClickHouse", label)
			time.Sleep(1500 * time.Millisecond)
			h.closeGate()
			last = r.checkCut(f)
			h.logf("%s: %s", label, last.line)
			if h.observe(label) {
				r.landed++
			}
			record(label, why, before)
			h.openGate()
			time.Sleep(4 * time.Second)
			r.ensureAllUp()
		}
	}

	time.Sleep(2 * time.Second)

	// The table of the cuts, and the count this attack is about.
	sameSecond, landedSame := 0, 0
	lines := []string{"cuts of this run (B = burst):"}
	for _, c := range table {
		ss := "not checked"
		if c.check.known {
			ss = "no other insert of its partitions shares an ingested_at second with it"
			if c.check.sameSecond {
				ss = "ANOTHER INSERT OF ITS PARTITION IN THE SAME SECOND"
				sameSecond++
				if c.landed {
					landedSame++
				}
			}
		}
		lines = append(lines, fmt.Sprintf("  %s: landed=%v; %s; aimed at %s", c.label, c.landed, ss, c.aimed))
	}
	lines = append(lines, "parts: "+track.stats(),
		fmt.Sprintf("RESULT-BURST cuts=%d landed=%d same-second-cuts=%d landed-same-second=%d (cuts whose insert shared a raw partition and an ingested_at second with another insert, and after which a mart newly differed from its view before the processors resumed)",
			r.cuts, r.landed, sameSecond, landedSame))
	weak := landedSame == 0
	if weak {
		lines = append(lines, "WEAK RUN: no cut that landed fell on the second of two inserts of one partition in one second; this run proves little about fast inserts")
	}
	r.finish(lines...)
	if weak && os.Getenv("SHUKEI_TEST_REQUIRE_LANDED") == "1" {
		t.Errorf("no cut landed on the second of two inserts of one partition in one second (SHUKEI_TEST_REQUIRE_LANDED=1)")
	}
}
