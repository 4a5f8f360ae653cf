//go:build faults

package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
)

// TestProcessorSurvivesKillsAndClickHouseRestart runs the real `shukei processor` binary over
// a backlog of 200k messages, SIGKILLs it five times at random moments, restarts ClickHouse
// once under a running instance, lets a last instance finish and stop on SIGTERM, and then
// demands exact accounting: every offset once, no event_id twice, no content leaked, a DLQ
// record for every rejection (docs/DESIGN.md §8).
//
// The processor drains 200k messages in a few seconds, faster than the kill schedule, so
// while an instance waits to be killed (and while ClickHouse restarts) live traffic of the
// same mix keeps arriving: the faults land while batches are being read, inserted and
// committed, not on an idle process.
//
// SHUKEI_TEST_FAULT_SEED=<n> replays the schedule of an earlier run (the delays, which
// instance sees the restart, the live traffic); where a kill lands in a batch still varies.
func TestProcessorSurvivesKillsAndClickHouseRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a subprocess and restarts ClickHouse: not in -short")
	}
	began := time.Now()
	// Failures found mid-run are said again last, on one line: a CI summary keeps only the
	// tail of the output, which the instances' logs fill.
	var failures []string
	fail := func(format string, args ...any) {
		t.Helper()
		failures = append(failures, fmt.Sprintf(format, args...))
		t.Errorf(format, args...)
	}
	t.Cleanup(func() {
		if len(failures) > 0 {
			t.Logf("failed because: %s", strings.Join(failures, "; "))
		}
	})
	r := newRig(t, 12)
	keyFile := r.keyFile
	root := servicetest.ModuleRoot(t)

	// Build the real binary while the workload is produced.
	binDir := t.TempDir()
	bin := filepath.Join(binDir, "shukei")
	built := make(chan error, 1)
	go func() {
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/shukei")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build ./cmd/shukei: %v\n%s", err, out)
		}
		built <- err
	}()
	var buildErr error
	buildDone := false
	waitBuild := func() error {
		if !buildDone {
			buildErr, buildDone = <-built, true
		}
		return buildErr
	}
	t.Cleanup(func() { _ = waitBuild() }) // before binDir is removed

	w := produce(t, r, 200000)
	if err := waitBuild(); err != nil {
		t.Fatal(err)
	}
	t.Logf("produced %d messages and built the binary in %s", w.total, time.Since(began).Round(time.Millisecond))

	seed := servicetest.FaultSeed(t)
	rnd := rand.New(rand.NewPCG(seed, seed^0x5eed))
	delay := func() time.Duration {
		return 300*time.Millisecond + time.Duration(rnd.Int64N(int64(2700*time.Millisecond)))
	}

	env := processorEnv(r, keyFile)
	workDir := t.TempDir() // no ./shukei.yaml to pick up by accident
	var (
		mu        sync.Mutex
		instances []*instance
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, in := range instances {
			if in.running() {
				_ = in.cmd.Process.Kill()
				<-in.done
			}
		}
		if t.Failed() {
			for _, in := range instances {
				t.Logf("--- output of processor instance %d (pid %d, %s) ---\n%s", in.n, in.cmd.Process.Pid, in.exit(), in.out.Tail(300))
			}
		}
	})
	start := func(n int) *instance {
		t.Helper()
		in, err := startInstance(n, bin, workDir, env)
		if err != nil {
			t.Fatalf("start processor instance %d: %v", n, err)
		}
		mu.Lock()
		instances = append(instances, in)
		mu.Unlock()
		return in
	}

	live := newLiveTraffic(t, r, seed, 250000)
	defer live.close()
	produced := func() int { return w.total + live.next }

	const kills = 5
	var killedAt []time.Time
	restartDuring := 1 + rnd.IntN(2) // the instance (after the first kill) under which ClickHouse restarts
	t.Logf("plan: %d SIGKILLs, ClickHouse restarts under instance %d", kills, restartDuring)
	for i := range kills {
		in := start(i)
		assignedAfter := in.waitAssigned(t, 60*time.Second)
		if i == restartDuring {
			d := delay()
			live.runFor(t, d)
			before, _ := r.tryAccounted()
			t.Logf("instance %d: restarting ClickHouse %s after assignment; store accounts for %d of %d produced so far", i, d, before, produced())
			restartClickHouse(t, root, live)
			if !in.running() {
				t.Fatalf("instance %d exited while ClickHouse restarted: %s", i, in.exit())
			}
			after := r.waitStoreAnswers(t, 60*time.Second)
			t.Logf("instance %d: ClickHouse is back; store accounts for %d of %d", i, after, produced())
			// Backpressure, not loss, and no operator action: the same process must go on.
			if after < uint64(produced()) {
				progress := r.waitProgress(t, after, produced(), 90*time.Second)
				t.Logf("instance %d resumed by itself: store accounts for %d (was %d)", i, progress, after)
			}
			// Any of the processor's ClickHouse calls may be the one the outage hits first: an
			// insert, the deletion fence's read of the tombstones ahead of an insert packet,
			// the high-water marks it resumes from. Each backs off the same way.
			failed := in.out.Lines(`msg="write failed; backing off"`)
			t.Logf("instance %d backed off %d times while ClickHouse was down: %s", i, len(failed), backoffWhats(failed))
			if len(failed) == 0 {
				fail("instance %d never backed off: the ClickHouse restart did not hit its reads or writes", i)
			}
			if !in.running() {
				t.Fatalf("instance %d exited after the ClickHouse restart: %s", i, in.exit())
			}
		}
		d := delay()
		live.runFor(t, d)
		acc, err := r.tryAccounted()
		if !in.running() {
			t.Fatalf("instance %d exited before it was killed: %s", i, in.exit())
		}
		_ = in.cmd.Process.Signal(syscall.SIGKILL)
		killedAt = append(killedAt, time.Now())
		<-in.done
		t.Logf("kill %d: SIGKILL instance %d (pid %d) %s after its partitions were assigned (%s after start); store accounted for %d of %d produced just before (err %v); %s",
			i+1, i, in.cmd.Process.Pid, d, assignedAfter+d, acc, produced(), err, r.torn())
	}
	lw := live.written()
	t.Logf("live traffic during the faults: %d messages (%d accepted, rejected %v)", lw.total, lw.accepted, lw.rejected)
	w = merged(w, lw)

	final := start(kills)
	final.waitAssigned(t, 60*time.Second)
	r.waitStoreAnswers(t, 30*time.Second)
	r.waitAccounted(t, w.total, 4*time.Minute)
	time.Sleep(1500 * time.Millisecond) // anything extra would show now
	if !final.running() {
		t.Fatalf("final instance exited on its own: %s", final.exit())
	}
	stopAt := time.Now()
	_ = final.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-final.done:
		if final.err != nil {
			fail("final instance did not exit cleanly on SIGTERM: %s", final.exit())
		} else {
			t.Logf("final instance exited 0 %s after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
		}
	case <-time.After(30 * time.Second):
		fail("final instance did not exit within 30s of SIGTERM")
	}

	lost, dup := r.lostDuplicated(t, w.total)
	t.Logf("lost=%d duplicated=%d", lost, dup)
	if lost != 0 || dup != 0 {
		r.diagnose(t)
	}
	r.checkDLQ(t, killedAt)
	r.checkExact(t, w)
	t.Logf("total runtime %s", time.Since(began).Round(time.Millisecond))
}

// processorEnv is the subprocess's environment: this one, minus anything that would point it
// at another configuration, plus the rig's database, topics, group and key.
func processorEnv(r *rig, keyFile string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "SHUKEI_CONFIG" || k == "SHUKEI_ANONYMIZER_MASTER_KEY" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"SHUKEI_CLICKHOUSE_ADDR="+strings.Join(r.cfg.ClickHouse.Addr, ","),
		"SHUKEI_CLICKHOUSE_DATABASE="+r.db,
		"SHUKEI_KAFKA_BROKERS="+strings.Join(r.cfg.Kafka.Brokers, ","),
		"SHUKEI_KAFKA_RAW_TOPIC="+r.cfg.Kafka.RawTopic,
		"SHUKEI_KAFKA_DLQ_TOPIC="+r.cfg.Kafka.DLQTopic,
		"SHUKEI_PROCESSOR_GROUP_ID="+r.cfg.Processor.GroupID,
		"SHUKEI_PROCESSOR_LISTEN=127.0.0.1:0",
		"SHUKEI_PROCESSOR_BATCH_SIZE=5000",
		"SHUKEI_PROCESSOR_BATCH_TIMEOUT=100ms",
		"SHUKEI_ANONYMIZER_MASTER_KEY_FILE="+keyFile,
		"SHUKEI_LOG_LEVEL=info",
		"SHUKEI_LOG_FORMAT=text",
	)
}

// instance is one `shukei processor` subprocess.
type instance struct {
	n       int
	cmd     *exec.Cmd
	out     *servicetest.Output
	started time.Time
	done    chan struct{}
	err     error // set before done closes
}

func startInstance(n int, bin, dir string, env []string) (*instance, error) {
	in := &instance{n: n, out: &servicetest.Output{}, done: make(chan struct{})}
	in.cmd = exec.Command(bin, "processor")
	in.cmd.Dir = dir
	in.cmd.Env = env
	in.cmd.Stdout = in.out
	in.cmd.Stderr = in.out
	in.started = time.Now()
	if err := in.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		in.err = in.cmd.Wait()
		close(in.done)
	}()
	return in, nil
}

func (in *instance) running() bool {
	select {
	case <-in.done:
		return false
	default:
		return true
	}
}

func (in *instance) exit() string {
	if in.running() {
		return "still running"
	}
	if in.err == nil {
		return "exit status 0"
	}
	return in.err.Error()
}

var assignedLine = regexp.MustCompile(`msg="processor partitions assigned" generation=\d+ partitions=[1-9]`)

// waitAssigned waits until the instance holds partitions of the raw topic (after a SIGKILL
// the group waits for the dead member's session to expire first) and returns how long that
// took since the start.
func (in *instance) waitAssigned(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(within)
	for !assignedLine.Match(in.out.Bytes()) {
		if !in.running() {
			t.Fatalf("processor instance %d exited before it was assigned partitions: %s", in.n, in.exit())
		}
		if time.Now().After(deadline) {
			t.Fatalf("processor instance %d held no partitions after %s", in.n, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(in.started).Round(time.Millisecond)
}

// backoffWhats counts the processor's "write failed; backing off" lines by what failed.
func backoffWhats(lines []string) string {
	n := map[string]int{}
	for _, l := range lines {
		what := "?"
		if _, rest, ok := strings.Cut(l, ` what="`); ok {
			what, _, _ = strings.Cut(rest, `"`)
		}
		n[what]++
	}
	return fmt.Sprint(n)
}

// restartClickHouse runs `scripts/services.sh restart-clickhouse` while live traffic goes on
// (at most 30k messages of it), so the processor has batches to insert while the server is
// down.
func restartClickHouse(t *testing.T, root string, live *liveTraffic) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "services.sh"), "restart-clickhouse")
	cmd.Dir = root
	var out servicetest.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("scripts/services.sh restart-clickhouse: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	from := live.next
	live.runUntil(t, func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
			return live.next-from >= 30000
		}
	})
	if err := <-done; err != nil {
		t.Fatalf("scripts/services.sh restart-clickhouse: %v\n%s", err, out.Bytes())
	}
	t.Logf("ClickHouse restarted in %s with %d live messages produced meanwhile:\n%s", time.Since(began).Round(time.Millisecond), live.next-from, strings.TrimSpace(string(out.Bytes())))
}

// liveTraffic is more of produce's mix (about 2% bad, 0.5% collector retries), generated up
// front and written at a steady pace while the faults happen.
type liveTraffic struct {
	wr   *kafka.Writer
	msgs []kafka.Message
	kind []string // "" accepted, else the rejection reason it must get
	leak []string // content that must be found nowhere, or ""
	next int      // msgs[:next] are written
}

const (
	liveChunk = 600                   // messages a write
	liveEvery = 50 * time.Millisecond // 12k messages a second: about a quarter of what one processor drains
)

func newLiveTraffic(t *testing.T, r *rig, seed uint64, n int) *liveTraffic {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, 11))
	now := time.Now()
	l := &liveTraffic{wr: &kafka.Writer{Addr: kafka.TCP(r.cfg.Kafka.Brokers...), Topic: r.cfg.Kafka.RawTopic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchSize: 5000, BatchBytes: 16 << 20, BatchTimeout: 5 * time.Millisecond, Compression: kafka.Lz4}}
	var sent []kafka.Message
	for i := range n {
		tenant := r.tenants[rnd.IntN(len(r.tenants))]
		ev := good(tenant, rnd, now)
		var value []byte
		kind, leak, retryable := "", "", true
		switch x := rnd.IntN(1000); {
		case x < 8:
			leak = fmt.Sprintf("hanako.suzuki%d@example.co.jp", i)
			ev["user"], kind, retryable = leak, "input_data.email", false
		case x < 12:
			leak = fmt.Sprintf("請求書_%d.xlsx", i)
			ev["data"].(map[string]any)["feature_id"], kind, retryable = leak, "input_data.file_name", false
		case x < 16:
			value, kind, retryable = []byte(`{"event_id": "broken`), "malformed_json", false
		case x < 20:
			ev["tenant_id"], tenant, kind, retryable = "tenant-unregistered", "tenant-unregistered", "unknown_tenant", false
		case x < 25 && len(sent) > 0:
			dup := sent[rnd.IntN(len(sent))]
			l.msgs = append(l.msgs, kafka.Message{Key: dup.Key, Value: dup.Value})
			l.kind, l.leak = append(l.kind, "duplicate_event_id"), append(l.leak, "")
			continue
		}
		if value == nil {
			value, _ = json.Marshal(ev)
		}
		m := kafka.Message{Key: []byte(tenant), Value: value}
		l.msgs = append(l.msgs, m)
		l.kind, l.leak = append(l.kind, kind), append(l.leak, leak)
		if retryable {
			sent = append(sent, m)
		}
	}
	return l
}

// runFor writes live traffic for d.
func (l *liveTraffic) runFor(t *testing.T, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	l.runUntil(t, func() bool { return !time.Now().Before(end) })
}

// runUntil writes a chunk every liveEvery until stop says so or the traffic is used up.
func (l *liveTraffic) runUntil(t *testing.T, stop func() bool) {
	t.Helper()
	tick := time.NewTicker(liveEvery)
	defer tick.Stop()
	for !stop() {
		if l.next < len(l.msgs) {
			chunk := l.msgs[l.next:min(l.next+liveChunk, len(l.msgs))]
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := l.wr.WriteMessages(ctx, chunk...)
			cancel()
			if err != nil {
				t.Fatalf("live traffic: %v", err)
			}
			l.next += len(chunk)
		}
		<-tick.C
	}
}

// written is the workload of what was written so far.
func (l *liveTraffic) written() workload {
	w := workload{rejected: map[string]int{}}
	for i := range l.next {
		w.total++
		if l.kind[i] == "" {
			w.accepted++
		} else {
			w.rejected[l.kind[i]]++
		}
		if l.leak[i] != "" {
			w.leaks = append(w.leaks, l.leak[i])
		}
	}
	return w
}

func (l *liveTraffic) close() { _ = l.wr.Close() }

func merged(a, b workload) workload {
	out := workload{total: a.total + b.total, accepted: a.accepted + b.accepted, rejected: map[string]int{}}
	for _, m := range []map[string]int{a.rejected, b.rejected} {
		for k, n := range m {
			out.rejected[k] += n
		}
	}
	out.leaks = append(append(out.leaks, a.leaks...), b.leaks...)
	return out
}

// tryAccounted is what counts reports (events plus rejections), but returns errors instead of
// failing: ClickHouse may be restarting.
func (r *rig) tryAccounted() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ev, rej uint64
	if err := r.conn.QueryRow(ctx, "SELECT count() FROM "+r.db+".events").Scan(&ev); err != nil {
		return 0, err
	}
	if err := r.conn.QueryRow(ctx, "SELECT count() FROM "+r.db+".rejections WHERE class != 'checkpoint'").Scan(&rej); err != nil {
		return 0, err
	}
	return ev + rej, nil
}

// waitStoreAnswers waits until the test's own connection pool answers three times in a row
// (pooled connections to the old server are dropped on the way).
func (r *rig) waitStoreAnswers(t *testing.T, within time.Duration) uint64 {
	t.Helper()
	deadline := time.Now().Add(within)
	ok := 0
	var lastErr error
	for {
		n, err := r.tryAccounted()
		if err == nil {
			ok++
			if ok == 3 {
				return n
			}
		} else {
			ok, lastErr = 0, err
		}
		if time.Now().After(deadline) {
			t.Fatalf("ClickHouse does not answer the test after %s: %v", within, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitProgress waits until the store accounts for more than from messages (or for all).
func (r *rig) waitProgress(t *testing.T, from uint64, total int, within time.Duration) uint64 {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n, err := r.tryAccounted()
		if err == nil && (n > from || n >= uint64(total)) {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress %s after ClickHouse came back: the store still accounts for %d of %d (err %v)", within, n, total, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const accountedRows = "SELECT kafka_partition, kafka_offset, 'event' AS src, ingested_at AS at FROM %[1]s.events " +
	"UNION ALL SELECT kafka_partition, kafka_offset, reason AS src, rejected_at AS at FROM %[1]s.rejections WHERE class != 'checkpoint'"

// lostDuplicated computes, from the store alone, how many produced messages it does not account
// for and how many it accounts for more than once (rows beyond one per offset, plus
// event_ids stored more than once).
func (r *rig) lostDuplicated(t *testing.T, total int) (lost, duplicated int64) {
	t.Helper()
	ctx := context.Background()
	var rows, distinct uint64
	if err := r.conn.QueryRow(ctx, "SELECT count(), uniqExact(kafka_partition, kafka_offset) FROM ("+fmt.Sprintf(accountedRows, r.db)+")").Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	var dupIDs int64
	if err := r.conn.QueryRow(ctx, "SELECT toInt64(count()) - toInt64(uniqExact(event_id)) FROM "+r.db+".events").Scan(&dupIDs); err != nil {
		t.Fatal(err)
	}
	return int64(total) - int64(distinct), int64(rows-distinct) + dupIDs
}

// diagnose logs, per partition, which offsets the store lacks or holds twice, and which
// event_ids are stored twice, with the rows and the checkpoints around them.
func (r *rig) diagnose(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	last := map[int]int64{}
	for p := range 6 {
		c, err := kafka.DialLeader(ctx, "tcp", r.cfg.Kafka.Brokers[0], r.cfg.Kafka.RawTopic, p)
		if err != nil {
			t.Errorf("diagnose: dial partition %d: %v", p, err)
			continue
		}
		last[p], err = c.ReadLastOffset()
		_ = c.Close()
		if err != nil {
			t.Errorf("diagnose: last offset of partition %d: %v", p, err)
		}
	}
	for p := range 6 {
		rows, err := r.conn.Query(ctx, "SELECT kafka_offset FROM ("+fmt.Sprintf(accountedRows, r.db)+") WHERE kafka_partition = ?", uint16(p))
		if err != nil {
			t.Errorf("diagnose: %v", err)
			return
		}
		seen := map[int64]int{}
		for rows.Next() {
			var o uint64
			if err := rows.Scan(&o); err != nil {
				t.Errorf("diagnose: %v", err)
			}
			seen[int64(o)]++
		}
		rows.Close()
		var missing, twice []int64
		for o := range last[p] {
			switch seen[o] {
			case 0:
				missing = append(missing, o)
			case 1:
			default:
				twice = append(twice, o)
			}
		}
		if len(missing)+len(twice) == 0 {
			t.Logf("partition %d: offsets 0..%d each accounted exactly once", p, last[p]-1)
			continue
		}
		t.Logf("partition %d (end offset %d): %d offsets missing %s, %d accounted more than once %s",
			p, last[p], len(missing), ranges(missing), len(twice), ranges(twice))
		for _, o := range append(missing[:min(len(missing), 3)], twice[:min(len(twice), 3)]...) {
			r.logAround(t, p, int64(o))
		}
	}
	rows, err := r.conn.Query(ctx, "SELECT toString(event_id), groupArray(kafka_partition), groupArray(kafka_offset), groupArray(toString(ingested_at)) FROM "+r.db+".events GROUP BY event_id HAVING count() > 1 LIMIT 20")
	if err != nil {
		t.Errorf("diagnose: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var parts []uint16
		var offs []uint64
		var at []string
		if err := rows.Scan(&id, &parts, &offs, &at); err != nil {
			t.Errorf("diagnose: %v", err)
			return
		}
		t.Logf("event_id %s stored more than once: partitions %v offsets %v ingested %v", id, parts, offs, at)
	}
}

// logAround logs the rows and checkpoints of the store near one offset of one partition.
func (r *rig) logAround(t *testing.T, p int, o int64) {
	t.Helper()
	ctx := context.Background()
	lo := uint64(max(o-3, 0))
	rows, err := r.conn.Query(ctx, "SELECT kafka_offset, src, toString(at) FROM ("+fmt.Sprintf(accountedRows, r.db)+") WHERE kafka_partition = ? AND kafka_offset BETWEEN ? AND ? ORDER BY kafka_offset",
		uint16(p), lo, uint64(o+3))
	if err == nil {
		var b strings.Builder
		for rows.Next() {
			var off uint64
			var src, at string
			if err := rows.Scan(&off, &src, &at); err == nil {
				fmt.Fprintf(&b, " %d:%s@%s", off, src, at)
			}
		}
		rows.Close()
		t.Logf("  partition %d around offset %d:%s", p, o, b.String())
	}
	rows, err = r.conn.Query(ctx, "SELECT kafka_offset, toString(rejected_at) FROM "+r.db+".rejections WHERE class = 'checkpoint' AND kafka_partition = ? ORDER BY abs(toInt64(kafka_offset) - ?) LIMIT 4",
		uint16(p), o)
	if err == nil {
		var b strings.Builder
		for rows.Next() {
			var off uint64
			var at string
			if err := rows.Scan(&off, &at); err == nil {
				fmt.Fprintf(&b, " %d@%s", off, at)
			}
		}
		rows.Close()
		t.Logf("  nearest checkpoints of partition %d:%s", p, b.String())
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Logf("  diagnose: %v", err)
	}
}

// ranges renders sorted offsets compactly: 3-7,12,20-21 (at most 20 runs).
func ranges(offs []int64) string {
	var parts []string
	for i := 0; i < len(offs); {
		j := i
		for j+1 < len(offs) && offs[j+1] == offs[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.FormatInt(offs[i], 10))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", offs[i], offs[j]))
		}
		i = j + 1
		if len(parts) == 20 && i < len(offs) {
			parts = append(parts, "…")
			break
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// checkDLQ compares the DLQ topic with the rejections table: every rejection should have a DLQ
// record (keyed topic/partition/offset). The ones without are logged by batch (rejected_at)
// next to the kill times, to tell which fault lost them.
func (r *rig) checkDLQ(t *testing.T, killedAt []time.Time) {
	t.Helper()
	ctx := context.Background()
	inDLQ := map[string]int{}
	for _, m := range servicetest.ReadTopic(t, r.cfg.Kafka.Brokers, r.cfg.Kafka.DLQTopic) {
		inDLQ[string(m.Key)]++
	}
	resent := 0
	for _, n := range inDLQ {
		resent += n - 1
	}
	rows, err := r.conn.Query(ctx, "SELECT kafka_partition, kafka_offset, reason, toString(rejected_at) FROM "+r.db+".rejections WHERE class != 'checkpoint' ORDER BY rejected_at, kafka_partition, kafka_offset")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type batchKey struct {
		at   string
		part uint16
	}
	missing := map[batchKey][]int64{}
	var order []batchKey
	total, lost := 0, 0
	for rows.Next() {
		var p uint16
		var o uint64
		var reason, at string
		if err := rows.Scan(&p, &o, &reason, &at); err != nil {
			t.Fatal(err)
		}
		total++
		if inDLQ[fmt.Sprintf("%s/%d/%d", r.cfg.Kafka.RawTopic, p, o)] > 0 {
			continue
		}
		lost++
		k := batchKey{at, p}
		if missing[k] == nil {
			order = append(order, k)
		}
		missing[k] = append(missing[k], int64(o))
	}
	t.Logf("DLQ: %d of %d rejections have a DLQ record (%d records sent more than once); dlq_missing=%d", total-lost, total, resent, lost)
	if lost == 0 {
		return
	}
	var kills []string
	for i, k := range killedAt {
		kills = append(kills, fmt.Sprintf("kill %d at %s", i+1, k.UTC().Format("15:04:05.000")))
	}
	t.Errorf("%d rejections stored in ClickHouse have no DLQ record; SIGKILLs: %s", lost, strings.Join(kills, ", "))
	for _, k := range order {
		t.Logf("  rejected_at %s partition %d: %d without DLQ record, offsets %s", k.at, k.part, len(missing[k]), ranges(missing[k]))
	}
}

// torn says whether the store holds a batch cut short between its two inserts (events stored,
// rejections and checkpoint not): what a kill at that moment leaves behind.
func (r *rig) torn() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := loadState(ctx, r.conn, []driver.Conn{r.conn}, r.db, []int{0, 1, 2, 3, 4, 5})
	if err != nil {
		return "high-water marks: " + err.Error()
	}
	var parts []string
	for p := range 6 {
		if n := len(st[p].done); n > 0 {
			parts = append(parts, fmt.Sprintf("partition %d: %d", p, n))
		}
	}
	if len(parts) == 0 {
		return "no events beyond the checkpoints"
	}
	return "killed between the two inserts, events beyond the checkpoint: " + strings.Join(parts, ", ")
}
