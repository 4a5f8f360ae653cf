//go:build faults

package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/loadgen"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/query/principal"
	"github.com/shukei/shukei/registry"
)

// TestStackSurvivesFaults runs collector, processor, aggregator and query service as real
// subprocesses under one steady load through the collector's HTTP API and, meanwhile,
// SIGKILLs each role five times at random moments, restarts ClickHouse, restarts the Kafka
// broker and breaks ClickHouse's insert path for ten seconds. Then it demands one exact
// accounting (docs/DESIGN.md §8):
//   - every event the collector acknowledged is stored exactly once, or rejected by the
//     processor with a reason and in the DLQ; nothing is stored that was not acknowledged;
//     nothing the collector refused is stored; every offset of the raw topic is accounted once;
//   - every window that closed is released once (one release id, one row per cell), from
//     stored partials equal to a fault-free in-process run over the same topic; the ledger
//     holds one charge per window;
//   - the query service's audit chain verifies and holds a record for every answered request.
//
// It prints "lost=N duplicated=N". SHUKEI_TEST_FAULT_SEED=<n> replays a schedule.
func TestStackSurvivesFaults(t *testing.T) {
	summarise(t)
	began := time.Now()
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	brokers := cfg.Kafka.Brokers
	db := cfg.ClickHouse.Database
	raw := servicetest.Topic(t, brokers, 6)
	dlq := servicetest.Topic(t, brokers, 2)
	releases := servicetest.Topic(t, brokers, 1)
	usersDir := servicetest.UsersDir(t)
	root := servicetest.ModuleRoot(t)
	ctx := context.Background()

	seed := servicetest.FaultSeed(t)

	bin := filepath.Join(t.TempDir(), "shukei")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(root, "cmd", "shukei")).CombinedOutput(); err != nil {
		fatalf(t, "build: %v\n%s", err, out)
	}
	keyText := pseudonym.NewMasterKeyText()
	master, err := pseudonym.ParseMasterKey(keyText)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(keyFile, []byte(keyText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	proxy := newCHProxy(t, cfg.ClickHouse.Addr[0], seed)
	addrs := map[string]string{"collector": freeAddr(t), "processor": freeAddr(t), "aggregator": freeAddr(t), "query": freeAddr(t)}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SHUKEI_") && !strings.HasPrefix(k, "SHUKEI_TEST_") {
			continue // nothing from outside decides what the roles do
		}
		env = append(env, kv)
	}
	env = append(append(env, servicetest.AggregatorEnv()...),
		"SHUKEI_CLICKHOUSE_ADDR="+proxy.addr(), "SHUKEI_CLICKHOUSE_DATABASE="+db, "SHUKEI_CLICKHOUSE_USERS_DIR="+usersDir,
		"SHUKEI_KAFKA_BROKERS="+strings.Join(brokers, ","), "SHUKEI_KAFKA_RAW_TOPIC="+raw, "SHUKEI_KAFKA_DLQ_TOPIC="+dlq, "SHUKEI_KAFKA_RELEASE_TOPIC="+releases,
		"SHUKEI_PROCESSOR_GROUP_ID="+servicetest.Name(t, "proc."), "SHUKEI_AGGREGATOR_GROUP_ID="+servicetest.Name(t, "agg."),
		"SHUKEI_PROCESSOR_BATCH_TIMEOUT=200ms", "SHUKEI_AGGREGATOR_RELEASE_INTERVAL=250ms",
		"SHUKEI_AGGREGATOR_WINDOW="+window.String(), "SHUKEI_AGGREGATOR_ALLOWED_LATENESS="+lateness.String(),
		"SHUKEI_AGGREGATOR_BUDGET_EPSILON=100000", "SHUKEI_AGGREGATOR_BUDGET_DELTA=0.5",
		"SHUKEI_AGGREGATOR_FEATURES="+strings.Join(population.Features, ","), "SHUKEI_AGGREGATOR_SETTINGS="+strings.Join(population.Settings, ","),
		"SHUKEI_ANONYMIZER_MASTER_KEY_FILE="+keyFile,
		"SHUKEI_COLLECTOR_LISTEN="+addrs["collector"], "SHUKEI_PROCESSOR_LISTEN="+addrs["processor"],
		"SHUKEI_COLLECTOR_OPS_LISTEN=127.0.0.1:0",
		"SHUKEI_AGGREGATOR_LISTEN="+addrs["aggregator"], "SHUKEI_QUERY_LISTEN="+addrs["query"],
		"SHUKEI_LOG_LEVEL=info", "SHUKEI_LOG_FORMAT=text",
	)
	workDir := t.TempDir() // no ./shukei.yaml to pick up
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Env = workDir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			fatalf(t, "shukei %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	cli("migrate")

	// Tenants and their ingest tokens, a principal for the dashboards' requests.
	gen, err := loadgen.New(loadgen.Config{Tenants: 300, Seed: seed, Events: 10_000_000, BadShare: 0.02, Prefix: "ft-"})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(conn, db, master)
	tokens := map[string]string{}
	for _, ten := range gen.Tenants() {
		if tokens[ten.ID], err = reg.Add(ctx, ten); err != nil {
			t.Fatal(err)
		}
	}
	qtoken, err := principal.New(conn, db).Add(ctx, principal.Principal{ID: "fault-dashboard", Kind: principal.Employee,
		Purposes: []string{"service_improvement", "external_aggregate"}})
	if err != nil {
		t.Fatal(err)
	}

	roles := map[string]*role{}
	var names []string
	for _, n := range []string{"collector", "processor", "aggregator", "query"} {
		roles[n] = &role{name: n, bin: bin, dir: workDir, env: env, listen: addrs[n]}
		names = append(names, n)
	}
	t.Cleanup(func() {
		for _, n := range names {
			roles[n].cleanup()
		}
		if t.Failed() {
			for _, n := range names {
				roles[n].dump(t)
			}
		}
	})
	for _, n := range names {
		roles[n].start(t)
	}
	if t.Failed() {
		t.FailNow()
	}

	var logMu sync.Mutex
	var events []string
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		line := fmt.Sprintf("%6.1fs ", time.Since(began).Seconds()) + fmt.Sprintf(format, args...)
		events = append(events, line)
		t.Log(line)
	}

	// The steady load and the dashboard's requests run from here to the end of the faults.
	loadCtx, stopLoad := context.WithCancel(ctx)
	snd := newSender("http://"+addrs["collector"], tokens)
	snd.loseEvery = 100 // 1% of answered batches come again: retried copies the pipeline must drop
	prb := &prober{base: "http://" + addrs["query"], token: qtoken}
	var loadWG sync.WaitGroup
	loadWG.Add(2)
	loadStart := time.Now()
	go func() { defer loadWG.Done(); snd.run(loadCtx, gen, rate, 3) }()
	go func() { defer loadWG.Done(); prb.run(loadCtx) }()
	defer stopLoad()

	// The faults: four killers at once, and the service faults one after another.
	var faultWG sync.WaitGroup
	for i, n := range names {
		rnd := rand.New(rand.NewPCG(seed, uint64(100+i)))
		faultWG.Add(1)
		go func() { defer faultWG.Done(); roles[n].killer(t, rnd, killsPer, faultSpan, logf) }()
	}
	rnd := rand.New(rand.NewPCG(seed, 99))
	pause := func(lo, hi time.Duration) { time.Sleep(lo + time.Duration(rnd.Int64N(int64(hi-lo)))) }
	pause(8*time.Second, 15*time.Second)
	logf("restarting ClickHouse")
	logf("ClickHouse restarted in %s", services(t, root, "restart-clickhouse").Round(time.Millisecond))
	pause(6*time.Second, 12*time.Second)
	logf("restarting the Kafka broker")
	logf("Kafka broker restarted in %s", services(t, root, "restart-kafka").Round(time.Millisecond))
	pause(5*time.Second, 10*time.Second)
	proxy.failing.Store(true)
	logf("ClickHouse's insert path fails from now")
	time.Sleep(10 * time.Second)
	proxy.failing.Store(false)
	logf("ClickHouse's insert path works again; %d inserts were broken", proxy.broken.Load())
	faultWG.Wait()
	// Some load after the last fault, and at least three windows in the run (two whole ones)
	// to compare with the fault-free run.
	time.Sleep(max(5*time.Second, time.Until(aggregator.WindowOf(loadStart, window).Start.Add(2*window+2*time.Second))))
	stopLoad()
	loadWG.Wait()
	loadEnd := time.Now()
	if left := snd.drain(time.Minute); left > 0 {
		fatalf(t, "%d events still unanswered a minute after the load stopped", left)
	}
	if f, ok := snd.fatal.Load().(string); ok {
		fatalf(t, "the load: %s", f)
	}
	for _, n := range names {
		if k := roles[n].kills; k != killsPer {
			errorf(t, "%s was SIGKILLed %d times, want %d", n, k, killsPer)
		}
	}
	if proxy.broken.Load() == 0 {
		errorf(t, "no insert went through the proxy while it failed them: the insert-error fault tested nothing")
	}
	t.Logf("load: %d events generated in %s, %d posts, %d events resent, %d connection errors, %d 503s, %d replies lost on purpose; acknowledged %d, refused by the collector %v",
		snd.generated.Load(), loadEnd.Sub(loadStart).Round(time.Second), snd.posts.Load(), snd.resent.Load(), snd.httpErrs.Load(), snd.unavailable.Load(), snd.lostReplies.Load(), len(snd.acked), snd.reasons)
	t.Logf("dashboard requests: %d answered, %d refused or failed (503 while the audit log could not be written), %d connection errors", prb.answered.Load(), prb.other.Load(), prb.errs.Load())

	// The processor accounts for every offset of the raw topic.
	end := endOffsets(t, brokers, raw)
	var total int64
	for _, o := range end {
		total += o
	}
	eventually(t, "the processor accounts for every message in the raw topic", 4*time.Minute, func() bool {
		n, err := accounted(ctx, conn, db, "")
		return err == nil && n >= uint64(total)
	})
	if snd.lostReplies.Load() == 0 {
		errorf(t, "no reply was lost: the collector retries were not exercised")
	}
	// The aggregator releases every window up to the one holding the load's end.
	last := aggregator.WindowOf(loadEnd, window)
	first := aggregator.WindowOf(loadStart, window)
	eventually(t, "every window of the run released", lateness+3*time.Minute, func() bool {
		var n uint64
		err := conn.QueryRow(ctx, "SELECT uniqExact(window_start) FROM "+db+"_external_aggregate.releases WHERE window_start >= ? AND window_start <= ?", first.Start, last.Start).Scan(&n)
		return err == nil && n == uint64(last.Start.Sub(first.Start)/window)+1
	})
	time.Sleep(2 * time.Second) // a second release or charge would show now
	for _, n := range names {
		roles[n].stop(t)
	}

	lost, dup := checkEvents(t, conn, db, "", raw, brokers, dlq, snd, total)
	fmt.Printf("stack faults: lost=%d duplicated=%d\n", lost, dup)
	t.Logf("lost=%d duplicated=%d", lost, dup)
	if lost != 0 || dup != 0 {
		errorf(t, "lost=%d duplicated=%d", lost, dup)
	}
	checkReleases(t, conn, db, raw, brokers, master, reg, first, last)
	checkAudit(t, conn, db, prb)
	logMu.Lock()
	t.Logf("schedule:\n  %s", strings.Join(events, "\n  "))
	logMu.Unlock()
	t.Logf("processor logged %d failed writes, aggregator %d; %d windows were released by an instance after an earlier one had charged the ledger and died; total runtime %s",
		roles["processor"].count(`msg="write failed; backing off"`), roles["aggregator"].count("failed"), roles["aggregator"].count("charged_before=true"), time.Since(began).Round(time.Second))
}
