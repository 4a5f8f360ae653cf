package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/demo"
	"github.com/shukei/shukei/internal/freeport"
	"github.com/shukei/shukei/loadgen"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/processor"
	"github.com/shukei/shukei/pipeline/topic"
	"github.com/shukei/shukei/query/principal"
)

// roleProc is a role running as a child process of the bench, so its memory and CPU can be
// read from /proc.
type roleProc struct {
	name string
	cmd  *exec.Cmd
	addr string
	logs bytes.Buffer
}

// usage is a process's peak resident memory and CPU time so far.
func (r *roleProc) usage() (rssPeakMB float64, cpu time.Duration, err error) {
	pid := r.cmd.Process.Pid
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(st))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			rssPeakMB = kb / 1024
		}
	}
	cpu, err = cpuOf(pid)
	return rssPeakMB, cpu, err
}

// cpuOf is the CPU time (user and system) process pid has used.
func cpuOf(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

// clickhouseCPU is the CPU time the ClickHouse servers on this machine have used (every
// process whose name starts with "clickhouse"); ok is false when there is none (a remote
// server), and the bench then reports no ClickHouse CPU.
func clickhouseCPU() (cpu time.Duration, ok bool) {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || !bytes.HasPrefix(comm, []byte("clickhouse")) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		if c, err := cpuOf(pid); err == nil {
			cpu, ok = cpu+c, true
		}
	}
	return cpu, ok
}

// chCPU measures the ClickHouse CPU a stage of the bench causes, per event.
type chCPU struct {
	start time.Duration
	ok    bool
}

func startCHCPU() chCPU { c, ok := clickhouseCPU(); return chCPU{c, ok} }

// perEvent is the ClickHouse CPU since start over n events, in µs; nil without a local server.
func (c chCPU) perEvent(n uint64) any {
	end, ok := clickhouseCPU()
	if !c.ok || !ok || n == 0 {
		return nil
	}
	return float64((end - c.start).Microseconds()) / float64(n)
}

func (r *roleProc) stop() {
	_ = r.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
}

func freeAddr() (string, error) { return freeport.Addr() }

// startRole runs this binary as role with env, and waits for its /healthz.
func startRole(ctx context.Context, role string, env []string, args ...string) (*roleProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	r := &roleProc{name: role, addr: addr}
	r.cmd = exec.Command(self, append([]string{role}, args...)...)
	r.cmd.Env = append(env, "SHUKEI_"+strings.ToUpper(role)+"_LISTEN="+addr)
	r.cmd.Stdout, r.cmd.Stderr = &r.logs, &r.logs
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(time.Minute); ; {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			return r, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.stop()
			return nil, fmt.Errorf("%s did not start: %s", role, r.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricSum sums a metric family on a role's /metrics.
func metricSum(addr, name string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	var v float64
	for _, m := range fams[name].GetMetric() {
		v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return v, nil
}

// roleResult is one role's line of the results.
type roleResult struct {
	EventsPerSec  float64 `json:"events_per_sec,omitempty"`
	RSSPeakMB     float64 `json:"rss_peak_mb"`
	CPUusPerEvent float64 `json:"cpu_us_per_event"`
}

// PipelineOptions are the choices of Pipeline.
type PipelineOptions struct {
	Events int    // events the load generator sends
	Out    string // where to write the results (bench/results/latest.json)
}

// Pipeline measures every role's throughput, memory and CPU against a raw-copy and a ClickHouse
// Kafka-engine baseline, and the end-to-end and report latency, merges reports.json (beside
// opts.Out) and writes the results to opts.Out. It runs each role as a child process of the
// running binary, which must be shukei ('shukei bench pipeline' runs it).
func Pipeline(ctx context.Context, out io.Writer, cfg config.Config, opts PipelineOptions) error {
	events, outPath := opts.Events, opts.Out
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	run := hex.EncodeToString(rnd[:])
	cfg.ClickHouse.Database += "_pipe"
	cfg.Kafka.RawTopic, cfg.Kafka.DLQTopic, cfg.Kafka.ReleaseTopic = "bench.raw."+run, "bench.dlq."+run, "bench.releases."+run
	cfg.Processor.GroupID, cfg.Aggregator.GroupID = "bench-proc-"+run, "bench-agg-"+run
	cfg.Events.MaxAge = 3 * 24 * time.Hour
	db := cfg.ClickHouse.Database
	conn, err := ops.OpenClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	// What a run stopped half-way left (its Kafka-engine table's topic is still there then, so
	// the drop does not hang).
	for _, suffix := range append([]string{"", "_rawcopy", "_deccopy", "_kafka"}, migrations.DatabaseSuffixes()...) {
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+suffix); err != nil {
			return err
		}
	}
	if err := ops.Migrate(ctx, io.Discard, cfg); err != nil {
		return err
	}
	if _, err := topic.Ensure(ctx, cfg.Kafka.Brokers, topic.Specs(cfg.Kafka)); err != nil {
		return err
	}
	defer func() {
		_ = topic.Delete(context.Background(), cfg.Kafka.Brokers, cfg.Kafka.RawTopic, cfg.Kafka.DLQTopic, cfg.Kafka.ReleaseTopic)
	}()
	master, err := ops.MasterKey(cfg.Anonymizer)
	if err != nil {
		return err
	}
	keyFile := filepath.Join(os.TempDir(), "shukei-bench-"+run+".key")
	if err := os.WriteFile(keyFile, []byte(masterKeyText(cfg.Anonymizer)), 0o600); err != nil {
		return err
	}
	defer os.Remove(keyFile)
	env := append(os.Environ(),
		"SHUKEI_CLICKHOUSE_DATABASE="+db, "SHUKEI_KAFKA_RAW_TOPIC="+cfg.Kafka.RawTopic, "SHUKEI_KAFKA_DLQ_TOPIC="+cfg.Kafka.DLQTopic, "SHUKEI_KAFKA_RELEASE_TOPIC="+cfg.Kafka.ReleaseTopic,
		"SHUKEI_PROCESSOR_GROUP_ID="+cfg.Processor.GroupID, "SHUKEI_AGGREGATOR_GROUP_ID="+cfg.Aggregator.GroupID,
		// The bench's data spans a few days: it measures daily releases, not weeks and months.
		"SHUKEI_AGGREGATOR_EPSILON=0.2", "SHUKEI_AGGREGATOR_WEEK_EPSILON=0", "SHUKEI_AGGREGATOR_MONTH_EPSILON=0",
		"SHUKEI_EVENTS_MAX_AGE=72h", "SHUKEI_ANONYMIZER_MASTER_KEY_FILE="+keyFile, "SHUKEI_ANONYMIZER_MASTER_KEY=",
		"SHUKEI_REGISTRY_REFRESH=500ms", "SHUKEI_LOG_LEVEL=warn", "SHUKEI_COLLECTOR_OPS_LISTEN=127.0.0.1:0",
		"SHUKEI_AGGREGATOR_FEATURES="+strings.Join(population.Features, ","), "SHUKEI_AGGREGATOR_SETTINGS="+strings.Join(population.Settings, ","))
	res := map[string]any{"measured_at": time.Now().UTC().Format(time.RFC3339), "cores": runtime.NumCPU(), "events": events}
	roles := map[string]roleResult{}
	table := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(table, "measure\tvalue\t")
	row := func(k string, v float64, unit string) {
		res[k] = v
		fmt.Fprintf(table, "%s\t%.1f %s\t\n", k, v, unit)
	}

	// 1. Collector: the load generator posts the events.
	col, err := startRole(ctx, "collector", env)
	if err != nil {
		return err
	}
	defer col.stop()
	g, err := loadgen.New(loadgen.Config{Tenants: 300, Seed: 9, Events: events, Days: 2, BadShare: 0.01, Prefix: "bench-"})
	if err != nil {
		return err
	}
	tokens, _, err := loadgen.RegisterTenants(ctx, cfg, master, g.Tenants(), "")
	if err != nil {
		return err
	}
	time.Sleep(1500 * time.Millisecond) // the collector's registry refresh picks the tokens up
	st, err := loadgen.SendHTTP(ctx, "http://"+col.addr, tokens, g, loadgen.Options{Workers: 4, Batch: 500})
	if err != nil {
		return err
	}
	rss, cpu, _ := col.usage()
	roles["collector"] = roleResult{EventsPerSec: st.Rate(), RSSPeakMB: rss, CPUusPerEvent: float64(cpu.Microseconds()) / float64(st.Sent)}
	row("collector_events_per_sec", st.Rate(), "events/s")
	total := uint64(st.Accepted)

	// 2. Processor, as a role: from the first row stored to the last.
	countStored := "SELECT (SELECT count() FROM " + db + ".events) + (SELECT count() FROM " + db + ".rejections WHERE class != 'checkpoint')"
	// Its CPU and allocation profiles are written beside the results when it stops.
	profile := filepath.Join(filepath.Dir(outPath), "processor")
	chProc := startCHCPU()
	procStart := time.Now()
	proc, err := startRole(ctx, "processor", append(env[:len(env):len(env)], "SHUKEI_PROCESSOR_PROFILE="+profile))
	if err != nil {
		return err
	}
	procRate, err := waitRate(ctx, conn, countStored, total, 5*time.Minute)
	procWall := float64(total) / time.Since(procStart).Seconds()
	if err != nil {
		proc.stop()
		return fmt.Errorf("processor: %w", err)
	}
	chCPUs := map[string]any{"processor": chProc.perEvent(total)}
	rss, cpu, _ = proc.usage()
	roles["processor"] = roleResult{EventsPerSec: procRate, RSSPeakMB: rss, CPUusPerEvent: float64(cpu.Microseconds()) / float64(total)}
	row("processor_events_per_sec", procRate, "events/s")
	row("processor_with_startup_events_per_sec", procWall, "events/s")

	// 3. Raw copy (same consumer, batches and insert, no decision), same topic, same run.
	copyDB := db + "_rawcopy"
	for _, q := range []string{
		"CREATE DATABASE " + copyDB,
		"CREATE TABLE " + copyDB + ".rejections AS " + db + ".rejections",
		"CREATE TABLE " + copyDB + ".events AS " + db + ".events",
		"CREATE TABLE " + copyDB + ".raw_copy (ingested_at DateTime, kafka_partition UInt16, kafka_offset UInt64, payload String) ENGINE = MergeTree PARTITION BY toYYYYMM(ingested_at) ORDER BY (kafka_partition, kafka_offset)",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			return err
		}
	}
	chRaw := startCHCPU()
	rawRate, err := benchRawCopy(ctx, conn, cfg, master, copyDB, total)
	chCPUs["raw_copy"] = chRaw.perEvent(total)
	if err != nil {
		return fmt.Errorf("raw copy: %w", err)
	}
	row("raw_copy_events_per_sec", rawRate, "events/s")
	row("processor_vs_raw_ratio", procRate/rawRate, "")

	// 3b. Decoding copy (encoding/json into the event store's typed columns, nothing else),
	// same topic, same run.
	decDB := db + "_deccopy"
	for _, q := range []string{"CREATE DATABASE " + decDB, "CREATE TABLE " + decDB + ".events AS " + db + ".events"} {
		if err := conn.Exec(ctx, q); err != nil {
			return err
		}
	}
	chDec := startCHCPU()
	decRate, err := benchDecodingCopy(ctx, conn, cfg, decDB, total)
	chCPUs["decoding_copy"] = chDec.perEvent(total)
	if err != nil {
		return fmt.Errorf("decoding copy: %w", err)
	}
	row("decoding_copy_events_per_sec", decRate, "events/s")
	row("processor_vs_decoding_copy_ratio", procRate/decRate, "")
	// ClickHouse's CPU for each, over the same events (background merges of earlier stages
	// may fall into a later one's figure).
	res["clickhouse_cpu_us_per_event"] = chCPUs
	for _, k := range []string{"processor", "raw_copy", "decoding_copy"} {
		if v, ok := chCPUs[k].(float64); ok {
			fmt.Fprintf(table, "clickhouse_cpu_us_per_event.%s\t%.1f µs/event\t\n", k, v)
		}
	}

	// 4. ClickHouse's Kafka engine over the same topic: the peer baseline.
	if kr, err := benchKafkaEngine(ctx, conn, cfg, db+"_kafka", total); err != nil {
		res["clickhouse_kafka_engine_events_per_sec"] = nil
		res["clickhouse_kafka_engine_error"] = err.Error()
		fmt.Fprintf(table, "clickhouse_kafka_engine_events_per_sec\tnone: %s\t\n", firstLine(err.Error()))
	} else {
		row("clickhouse_kafka_engine_events_per_sec", kr, "events/s")
		row("processor_vs_kafka_engine_ratio", procWall/kr, "")
	}

	// 5. End-to-end latency with the collector and the processor running.
	lat, err := demo.ProbeLatency(ctx, conn, db+".events", "http://"+col.addr, tokens[g.Tenants()[0].ID], g.Tenants()[0].ID, 60)
	if err != nil {
		return fmt.Errorf("end-to-end: %w", err)
	}
	p95 := lat[len(lat)*95/100]
	row("end_to_end_p95_ms", float64(p95.Microseconds())/1000, "ms")
	proc.stop()
	for _, kind := range []string{"cpu", "allocs"} {
		f := profile + "." + kind + ".pprof"
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			return fmt.Errorf("the processor wrote no %s profile: %v", kind, err)
		}
		res["processor_"+kind+"_profile"] = filepath.Base(f)
	}

	// 6. Aggregator, as a role: messages read per second.
	agg, err := startRole(ctx, "aggregator", env)
	if err != nil {
		return err
	}
	aggRate, err := waitMetricRate(ctx, agg.addr, "shukei_aggregator_events_total", float64(total), 5*time.Minute)
	if err != nil {
		agg.stop()
		return fmt.Errorf("aggregator: %w", err)
	}
	rss, cpu, _ = agg.usage()
	roles["aggregator"] = roleResult{EventsPerSec: aggRate, RSSPeakMB: rss, CPUusPerEvent: float64(cpu.Microseconds()) / float64(total)}
	row("aggregator_events_per_sec", aggRate, "events/s")
	agg.stop()

	// 7. Query service, as a role: 200 report requests; CPU per request. The aggregate
	// reports read sealed weeks: every complete week is sealed first, as the release step does
	// aggregator.seal_after after each week ends.
	if err := os.MkdirAll(filepath.Dir(outPath), 0o755); err != nil {
		return err
	}
	if _, err := aggregator.SealEveryWeek(ctx, cfg, conn, nil); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	q, err := startRole(ctx, "query", env)
	if err != nil {
		return err
	}
	nreq, qerr := benchQueryRequests(ctx, conn, db, "http://"+q.addr, 200)
	rss, cpu, _ = q.usage()
	q.stop()
	if qerr != nil {
		return fmt.Errorf("query: %w", qerr)
	}
	roles["query"] = roleResult{RSSPeakMB: rss, CPUusPerEvent: float64(cpu.Microseconds()) / float64(nreq)}

	// The report latency over 10M events comes from 'bench reports'.
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(outPath), "reports.json")); err == nil {
		var r struct {
			P95    float64 `json:"report_p95_ms"`
			Events int     `json:"events"`
		}
		if json.Unmarshal(b, &r) == nil {
			row("report_p95_ms", r.P95, fmt.Sprintf("ms (%d stored events, bench reports)", r.Events))
		}
	}
	rssM, cpuM := map[string]float64{}, map[string]float64{}
	for name, r := range roles {
		rssM[name], cpuM[name] = r.RSSPeakMB, r.CPUusPerEvent
		fmt.Fprintf(table, "rss_peak_mb.%s\t%.0f MB\t\n", name, r.RSSPeakMB)
		unit := "µs/event"
		if name == "query" {
			unit = "µs/request"
		}
		fmt.Fprintf(table, "cpu_us_per_event.%s\t%.1f %s\t\n", name, r.CPUusPerEvent, unit)
	}
	res["rss_peak_mb"], res["cpu_us_per_event"] = rssM, cpuM
	_ = table.Flush()
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the results: %w", err)
	}
	if err := os.WriteFile(outPath, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "written to %s\n", outPath)
	return nil
}

func firstLine(s string) string { line, _, _ := strings.Cut(s, "\n"); return line }

// masterKeyText returns the master key as text for a child process.
func masterKeyText(c config.Anonymizer) string {
	if c.MasterKey != "" {
		return c.MasterKey
	}
	b, _ := os.ReadFile(c.MasterKeyFile)
	return strings.TrimSpace(string(b))
}

// waitCount waits until query counts want rows.
func waitCount(ctx context.Context, conn driver.Conn, query string, want uint64, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		var n uint64
		if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d after %s", n, want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRate waits until query counts want rows and returns rows per second from the first row.
func waitRate(ctx context.Context, conn driver.Conn, query string, want uint64, within time.Duration) (float64, error) {
	return waitRateOf(ctx, func() (uint64, error) {
		var n uint64
		err := conn.QueryRow(ctx, query).Scan(&n)
		return n, err
	}, want, within)
}

// waitRateOf polls count until it reaches want and returns the rate while there was a backlog:
// from the first count above zero to the last change before the final one. The final write may
// have waited for its batch's timeout after the input ran out (idle time, not throughput: a
// second of it in a run of a few seconds); with only two writes the rate runs to the last.
func waitRateOf(ctx context.Context, count func() (uint64, error), want uint64, within time.Duration) (float64, error) {
	var first, prev time.Time
	var firstN, prevN uint64
	deadline := time.Now().Add(within)
	for {
		n, err := count()
		if err != nil {
			return 0, err
		}
		now := time.Now()
		if n > 0 && first.IsZero() {
			first, firstN = now, n
			prev, prevN = now, n
		}
		if n >= want {
			if n == firstN {
				return 0, fmt.Errorf("all %d rows arrived in one write: too few events to time the rate between the first write and the last (send more than one batch)", n)
			}
			if prevN > firstN {
				return float64(prevN-firstN) / max(prev.Sub(first).Seconds(), 1e-3), nil
			}
			return float64(n-firstN) / max(now.Sub(first).Seconds(), 1e-3), nil
		}
		if n != prevN && !first.IsZero() {
			prev, prevN = now, n
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d after %s", n, want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitMetricRate(ctx context.Context, addr, name string, want float64, within time.Duration) (float64, error) {
	var first time.Time
	var firstN float64
	deadline := time.Now().Add(within)
	for {
		n, err := metricSum(addr, name)
		if err == nil && n > 0 && first.IsZero() {
			first, firstN = time.Now(), n
		}
		if err == nil && n >= want {
			return (n - firstN) / max(time.Since(first).Seconds(), 1e-3), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%.0f of %.0f after %s", n, want, within)
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func benchRawCopy(ctx context.Context, conn driver.Conn, cfg config.Config, master *pseudonym.MasterKey, copyDB string, want uint64) (float64, error) {
	c := cfg
	c.Processor.GroupID += "-raw"
	p, _, err := processor.Wire(ctx, conn, conn, c, master, ops.NewLogger(io.Discard, cfg.Log), func(d *processor.Deps) { d.Database, d.RawCopy = copyDB, true })
	if err != nil {
		return 0, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	return waitRate(ctx, conn, "SELECT count() FROM "+copyDB+".raw_copy", want, 5*time.Minute)
}

// benchDecodingCopy runs DecodingCopy over the raw topic until every message is stored or
// counted as undecodable, and returns its rate measured as the processor's is.
func benchDecodingCopy(ctx context.Context, conn driver.Conn, cfg config.Config, decDB string, want uint64) (float64, error) {
	var bad atomic.Int64
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- DecodingCopy(runCtx, conn, cfg, decDB, &bad) }()
	defer func() { cancel(); <-done }()
	return waitRateOf(ctx, func() (uint64, error) {
		select {
		case err := <-done:
			done <- err
			return 0, fmt.Errorf("stopped: %v", err)
		default:
		}
		var n uint64
		err := conn.QueryRow(ctx, "SELECT count() FROM "+decDB+".events").Scan(&n)
		return n + uint64(bad.Load()), err
	}, want, 5*time.Minute)
}

// benchKafkaEngine lets ClickHouse's Kafka table engine read the topic into a plain table: a
// Kafka table, a MergeTree table and a materialized view between them, as ClickHouse documents
// it. It returns the rate from the view's creation (the engine's group join and first poll
// included) until every message is stored: 18.16's engine writes what it read in one block a
// flush interval, so a rate from the first row stored to the last (the processor's) does not
// exist for it; compare it with the processor's rate from its start, measured the same way.
//
// Two things this ClickHouse (18.16, librdkafka 2.0.2) needs, both found in its librdkafka
// debug log (<kafka><debug>cgrp,fetch</debug></kafka>): a new consumer group starts at the END
// of each partition (librdkafka's default auto.offset.reset, which 18.16 does not change), so
// the group's offsets are committed at 0 first, else the engine skips everything the topic
// already holds; and the Kafka table must be dropped while its topic still exists, since
// dropping it after the topic is gone hangs in librdkafka's consumer close until the server is
// killed.
func benchKafkaEngine(ctx context.Context, conn driver.Conn, cfg config.Config, kdb string, want uint64) (float64, error) {
	group := "bench-ch-" + kdb
	if err := commitOffsetsAtStart(ctx, cfg.Kafka, group); err != nil {
		return 0, fmt.Errorf("start the engine's group at offset 0: %w", err)
	}
	for _, q := range []string{
		"CREATE DATABASE " + kdb,
		"CREATE TABLE " + kdb + ".queue (event_id String, tenant_id String, schema String) ENGINE = Kafka SETTINGS kafka_broker_list = '" +
			strings.Join(cfg.Kafka.Brokers, ",") + "', kafka_topic_list = '" + cfg.Kafka.RawTopic + "', kafka_group_name = '" + group +
			"', kafka_format = 'JSONEachRow', kafka_num_consumers = 1",
		"CREATE TABLE " + kdb + ".events (event_id String, tenant_id String, schema String) ENGINE = MergeTree ORDER BY tenant_id",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			return 0, err
		}
	}
	defer func() { _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+kdb) }() // before the topic goes
	began := time.Now()
	if err := conn.Exec(ctx, "CREATE MATERIALIZED VIEW "+kdb+".mv TO "+kdb+".events AS SELECT event_id, tenant_id, schema FROM "+kdb+".queue"); err != nil {
		return 0, err
	}
	if err := waitCount(ctx, conn, "SELECT count() FROM "+kdb+".events", want, 3*time.Minute); err != nil {
		return 0, fmt.Errorf("ClickHouse's Kafka engine did not ingest the topic: %w", err)
	}
	rate := float64(want) / time.Since(began).Seconds()
	var rows, ids uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(event_id) FROM "+kdb+".events").Scan(&rows, &ids); err != nil {
		return 0, err
	}
	if rows != want {
		return 0, fmt.Errorf("ClickHouse's Kafka engine stored %d rows (%d event ids) of the topic's %d messages", rows, ids, want)
	}
	return rate, nil
}

// commitOffsetsAtStart commits offset 0 of every partition of the raw topic for group, so a
// consumer of that group starts at the beginning whatever its auto.offset.reset says.
func commitOffsetsAtStart(ctx context.Context, k config.Kafka, group string) error {
	parts, err := topic.Partitions(ctx, k.Brokers, k.RawTopic)
	if err != nil {
		return err
	}
	var oc []kafka.OffsetCommit
	for p := range parts[k.RawTopic] {
		oc = append(oc, kafka.OffsetCommit{Partition: p, Offset: 0})
	}
	cl := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	resp, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{k.RawTopic: oc}})
	if err != nil {
		return err
	}
	for _, ps := range resp.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return fmt.Errorf("partition %d: %w", p.Partition, p.Error)
			}
		}
	}
	return nil
}

// benchQueryRequests sends n report requests to a query service as a principal made for it.
func benchQueryRequests(ctx context.Context, conn driver.Conn, db, base string, n int) (int, error) {
	token, err := principal.New(conn, db).Add(ctx, principal.Principal{ID: "bench", Kind: principal.Employee,
		Purposes: []string{"service_improvement", "marketing", "follow_up", "interview_selection", "external_aggregate"}})
	if err != nil {
		return 0, err
	}
	reqs := []struct {
		report string
		q      url.Values
	}{
		{"feature_ranking", url.Values{"purpose": {"service_improvement"}, "week": {"last_week"}}},
		{"contract_comparison", url.Values{"purpose": {"marketing"}, "week": {"last_week"}}},
		{"tenant_signals", url.Values{"purpose": {"follow_up"}}},
		{"interview_candidates", url.Values{"purpose": {"interview_selection"}}},
		{"dp_budget", url.Values{"purpose": {"external_aggregate"}}},
	}
	// The service learns a new principal's token within a second (its token index reloads
	// at most once a second, promise 18): the first request waits for that.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, status, err := demo.Get(ctx, base, token, reqs[0].report, reqs[0].q)
		if err == nil && (status != http.StatusUnauthorized || time.Now().After(deadline)) {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	for i := range n {
		r := reqs[i%len(reqs)]
		res, status, err := demo.Get(ctx, base, token, r.report, r.q)
		if err != nil {
			return i, err
		}
		if status != http.StatusOK {
			return i, fmt.Errorf("%s: %d %s", r.report, status, res.Error)
		}
	}
	return n, nil
}
