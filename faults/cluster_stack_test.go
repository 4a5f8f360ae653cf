//go:build cluster

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/loadgen"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/marts"
	"github.com/shukei/shukei/pipeline/topic"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/query/principal"
	"github.com/shukei/shukei/registry"
)

// Under the cluster the load is lighter than TestStackSurvivesFaults's (eight more server
// processes share the two cores) and each stream instance is killed twice.
const (
	clusterRate  = 800
	clusterKills = 2
)

// TestClusterStackSurvivesFaults is the whole-stack fault test on the cluster
// (docs/CLUSTER.md): a collector, three processors, two aggregators and the query service as
// real subprocesses on ClickHouse as two shards of two replicas and three Kafka brokers, under
// one steady load, while ch-s1r1 (the node every role reaches first) is SIGKILLed and started
// again, both replicas of shard 2 are stopped for 20 s, the broker leading the raw topic's
// partition 0 is SIGKILLed and started again, and every processor and aggregator instance is
// SIGKILLed twice. Then the accounting of TestStackSurvivesFaults: every acknowledged event
// stored once (lost=0 duplicated=0, read through the Distributed event store, and both replicas
// of each shard equal), every window released once from partials equal to a fault-free run,
// the audit chain verified. Last, the same events through one server (the raw topic copied to
// the single-node Kafka, a processor and a query service on the single-node ClickHouse, the
// same registry): the event store answers the same on both (ids and pseudonyms); the gated
// atoms of the week and the per-tenant reports must be equal too, as the faults left them (the
// processors repair what inserts cut short left out of the marts) and after 'shukei retention
// rebuild-marts' re-derives the cluster's marts twice.
func TestClusterStackSurvivesFaults(t *testing.T) {
	summarise(t)
	began := time.Now()
	ctx := context.Background()
	conns := make([]driver.Conn, len(clusterCH))
	for i, addr := range clusterCH {
		conns[i] = clusterConn(t, addr)
	}
	conn := conns[0]
	db := fmt.Sprintf("t_cstack_%d", time.Now().UnixNano())
	t.Cleanup(func() { dropRunDatabases(t, db) })
	dirs := clusterUsersDirs(t)
	t.Cleanup(func() {
		for _, d := range dirs {
			_ = os.Remove(filepath.Join(d, migrations.UsersFileName(db)))
		}
	})
	root := servicetest.ModuleRoot(t)
	seed := servicetest.FaultSeed(t)

	// The topics, replicated three times with min.insync.replicas=2 (topic.Durable).
	raw, dlq, releases, auditTopic := servicetest.Name(t, "raw."), servicetest.Name(t, "dlq."), servicetest.Name(t, "rel."), servicetest.Name(t, "audit.")
	specs := []topic.Spec{
		{Name: raw, Partitions: 6, ReplicationFactor: 3, Config: topic.RetentionConfig(time.Hour)},
		{Name: dlq, Partitions: 2, ReplicationFactor: 3, Config: topic.RetentionConfig(time.Hour)},
		{Name: releases, Partitions: 1, ReplicationFactor: 3, Config: topic.RetentionConfig(time.Hour)},
		{Name: auditTopic, Partitions: 1, ReplicationFactor: 3, Config: topic.RetentionConfig(time.Hour)},
	}
	st, err := topic.Ensure(ctx, clusterBrokers, specs)
	if err != nil {
		t.Fatal(err)
	}
	if got := st[0].Config[topic.MinInsyncReplicas]; got != "2" {
		errorf(t, "the raw topic's min.insync.replicas is %q, want 2", got)
	}
	t.Cleanup(func() { _ = topic.Delete(context.Background(), clusterBrokers, raw, dlq, releases, auditTopic) })

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

	var base []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SHUKEI_") && !strings.HasPrefix(k, "SHUKEI_TEST_") {
			continue
		}
		base = append(base, kv)
	}
	base = append(append(base, servicetest.AggregatorEnv()...),
		"SHUKEI_KAFKA_RAW_TOPIC="+raw, "SHUKEI_KAFKA_DLQ_TOPIC="+dlq, "SHUKEI_KAFKA_RELEASE_TOPIC="+releases, "SHUKEI_AUDIT_TOPIC="+auditTopic,
		"SHUKEI_PROCESSOR_BATCH_TIMEOUT=200ms", "SHUKEI_AGGREGATOR_RELEASE_INTERVAL=250ms",
		"SHUKEI_AGGREGATOR_WINDOW="+window.String(), "SHUKEI_AGGREGATOR_ALLOWED_LATENESS="+lateness.String(),
		"SHUKEI_AGGREGATOR_BUDGET_EPSILON=100000", "SHUKEI_AGGREGATOR_BUDGET_DELTA=0.5",
		"SHUKEI_AGGREGATOR_FEATURES="+strings.Join(population.Features, ","), "SHUKEI_AGGREGATOR_SETTINGS="+strings.Join(population.Settings, ","),
		"SHUKEI_ANONYMIZER_MASTER_KEY_FILE="+keyFile, "SHUKEI_COLLECTOR_OPS_LISTEN=127.0.0.1:0", "SHUKEI_QUERY_OPS_LISTEN=127.0.0.1:0",
		"SHUKEI_LOG_LEVEL=info", "SHUKEI_LOG_FORMAT=text",
	)
	env := append(append([]string{}, base...),
		"SHUKEI_CLICKHOUSE_ADDR="+strings.Join(clusterCH, ","), "SHUKEI_CLICKHOUSE_DATABASE="+db, "SHUKEI_CLICKHOUSE_CLUSTER=shukei",
		"SHUKEI_CLICKHOUSE_PASSWORD="+clusterPassword(t, "admin"), "SHUKEI_CLICKHOUSE_CLUSTER_USER="+clusterUser,
		"SHUKEI_CLICKHOUSE_USERS_DIR="+strings.Join(dirs, string(filepath.ListSeparator)),
		"SHUKEI_KAFKA_BROKERS="+strings.Join(clusterBrokers, ","), "SHUKEI_KAFKA_REPLICATION_FACTOR=3",
		"SHUKEI_PROCESSOR_GROUP_ID="+servicetest.Name(t, "proc."), "SHUKEI_AGGREGATOR_GROUP_ID="+servicetest.Name(t, "agg."),
	)
	workDir := t.TempDir()
	cli := func(env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Env = workDir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			fatalf(t, "shukei %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	cli(env, "migrate")

	gen, err := loadgen.New(loadgen.Config{Tenants: 120, Seed: seed, Events: 10_000_000, BadShare: 0.02, Prefix: "cf-"})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(conn, db, master).Placing("shukei")
	tokens := map[string]string{}
	for _, ten := range gen.Tenants() {
		if tokens[ten.ID], err = reg.Add(ctx, ten); err != nil {
			t.Fatal(err)
		}
	}
	qtoken, err := principal.New(conn, db).Add(ctx, principal.Principal{ID: "fault-dashboard", Kind: principal.Employee,
		Purposes: []string{"service_improvement", "external_aggregate", "follow_up", "interview_selection"}})
	if err != nil {
		t.Fatal(err)
	}

	roles := map[string]*role{}
	var names []string
	add := func(name, sub, listenVar string) {
		addr := freeAddr(t)
		roles[name] = &role{name: name, sub: sub, bin: bin, dir: workDir, listen: addr, env: append(append([]string{}, env...), listenVar+"="+addr)}
		names = append(names, name)
	}
	add("collector", "collector", "SHUKEI_COLLECTOR_LISTEN")
	for i := 1; i <= 3; i++ {
		add(fmt.Sprintf("processor-%d", i), "processor", "SHUKEI_PROCESSOR_LISTEN")
	}
	for i := 1; i <= 2; i++ {
		add(fmt.Sprintf("aggregator-%d", i), "aggregator", "SHUKEI_AGGREGATOR_LISTEN")
	}
	add("query", "query", "SHUKEI_QUERY_LISTEN")
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

	loadCtx, stopLoad := context.WithCancel(ctx)
	snd := newSender("http://"+roles["collector"].listen, tokens)
	snd.loseEvery = 100
	prb := &prober{base: "http://" + roles["query"].listen, token: qtoken}
	var loadWG sync.WaitGroup
	loadWG.Add(2)
	loadStart := time.Now()
	go func() { defer loadWG.Done(); snd.run(loadCtx, gen, clusterRate, 3) }()
	go func() { defer loadWG.Done(); prb.run(loadCtx) }()
	defer stopLoad()

	// The faults: the stream instances' killers, and the services' faults one after another.
	killed := []string{"processor-1", "processor-2", "processor-3", "aggregator-1", "aggregator-2"}
	var faultWG sync.WaitGroup
	for i, n := range killed {
		rnd := rand.New(rand.NewPCG(seed, uint64(200+i)))
		faultWG.Add(1)
		go func() { defer faultWG.Done(); roles[n].killer(t, rnd, clusterKills, 80*time.Second, logf) }()
	}
	rnd := rand.New(rand.NewPCG(seed, 199))
	pause := func(lo, hi time.Duration) { time.Sleep(lo + time.Duration(rnd.Int64N(int64(hi-lo)))) }
	pause(8*time.Second, 12*time.Second)
	logf("SIGKILL ch-s1r1")
	node(t, "kill-node", "ch-s1r1")
	pause(3*time.Second, 6*time.Second)
	node(t, "start-node", "ch-s1r1")
	logf("ch-s1r1 started again")
	pause(5*time.Second, 10*time.Second)
	logf("stopping both replicas of shard 2 for 20 s")
	node(t, "stop-node", "ch-s2r1")
	node(t, "stop-node", "ch-s2r2")
	time.Sleep(20 * time.Second)
	node(t, "start-node", "ch-s2r1")
	node(t, "start-node", "ch-s2r2")
	logf("shard 2 started again")
	pause(5*time.Second, 10*time.Second)
	leader := rawLeader(t, raw)
	logf("SIGKILL %s, the leader of %s's partition 0", leader, raw)
	node(t, "kill-node", leader)
	pause(5*time.Second, 10*time.Second)
	node(t, "start-node", leader)
	logf("%s started again", leader)
	faultWG.Wait()
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
	for _, n := range killed {
		if k := roles[n].kills; k != clusterKills {
			errorf(t, "%s was SIGKILLed %d times, want %d", n, k, clusterKills)
		}
	}
	t.Logf("load: %d events generated in %s, %d posts, %d resent, %d connection errors, %d 503s, %d replies lost on purpose; acknowledged %d, refused by the collector %v",
		snd.generated.Load(), loadEnd.Sub(loadStart).Round(time.Second), snd.posts.Load(), snd.resent.Load(), snd.httpErrs.Load(), snd.unavailable.Load(), snd.lostReplies.Load(), len(snd.acked), snd.reasons)
	t.Logf("dashboard requests: %d answered, %d refused or failed, %d connection errors", prb.answered.Load(), prb.other.Load(), prb.errs.Load())

	end := endOffsets(t, clusterBrokers, raw)
	var total int64
	for _, o := range end {
		total += o
	}
	eventually(t, "the processors account for every message in the raw topic", 4*time.Minute, func() bool {
		n, err := accounted(ctx, conn, db, "shukei")
		return err == nil && n >= uint64(total)
	})
	last := aggregator.WindowOf(loadEnd, window)
	first := aggregator.WindowOf(loadStart, window)
	eventually(t, "every window of the run released", lateness+3*time.Minute, func() bool {
		var n uint64
		err := conn.QueryRow(ctx, "SELECT uniqExact(window_start) FROM "+db+"_external_aggregate.releases WHERE window_start >= ? AND window_start <= ?", first.Start, last.Start).Scan(&n)
		return err == nil && n == uint64(last.Start.Sub(first.Start)/window)+1
	})
	time.Sleep(2 * time.Second)
	for _, n := range names {
		roles[n].stop(t)
	}
	// Every replica caught up before the checks read one of them.
	for i, c := range conns {
		for _, table := range []string{db + ".events", db + ".rejections", db + "_aggregator.aggregate_state", db + "_external_aggregate.releases", db + "_external_aggregate.budget_ledger", db + "_audit.audit_log"} {
			if err := c.Exec(ctx, "SYSTEM SYNC REPLICA "+table); err != nil {
				fatalf(t, "%s: sync %s: %v", clusterNodes[i], table, err)
			}
		}
	}

	lost, dup := checkEvents(t, conn, db, "shukei", raw, clusterBrokers, dlq, snd, total)
	fmt.Printf("stack faults: lost=%d duplicated=%d\n", lost, dup)
	t.Logf("lost=%d duplicated=%d", lost, dup)
	if lost != 0 || dup != 0 {
		errorf(t, "lost=%d duplicated=%d", lost, dup)
	}
	checkReplicasAgree(t, conns, db)
	checkReleases(t, conn, db, raw, clusterBrokers, master, reg, first, last)
	checkAudit(t, conn, db, prb)
	logMu.Lock()
	t.Logf("schedule:\n  %s", strings.Join(events, "\n  "))
	logMu.Unlock()

	// The cluster's query service again (stopped with the others) for the comparison.
	roles["query"].start(t)
	repairs := func() string {
		resumed, repaired, unrepaired := 0, 0, 0
		for _, n := range killed[:3] {
			resumed += roles[n].count("resuming after a batch cut short")
			repaired += roles[n].count("repaired a purpose mart after a batch cut short")
			unrepaired += roles[n].count("differs from the event store in a way a cut batch does not explain")
		}
		if unrepaired > 0 {
			errorf(t, "processors found %d purpose-mart differences a cut batch does not explain", unrepaired)
			shown := 0
			for _, n := range killed[:3] {
				for _, l := range roles[n].lines("does not explain") {
					if shown++; shown <= 4 {
						errorf(t, "%s: %s", n, l)
					}
				}
			}
		}
		return fmt.Sprintf("%d resumes after a batch cut short, %d marts repaired, %d differences unexplained", resumed, repaired, unrepaired)
	}
	sameOnOneServer(t, bin, base, conn, db, raw, qtoken, roles["query"].listen, loadStart, repairs, func(since time.Time) string {
		return cli(env, "retention", "rebuild-marts", "--since", since.UTC().Format(time.DateOnly))
	})
	t.Logf("total runtime %s", time.Since(began).Round(time.Second))
}

// rawLeader names the broker node (kafka-N) leading partition 0 of topic.
func rawLeader(t *testing.T, name string) string {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(clusterBrokers...), Timeout: 10 * time.Second}
	meta, err := client.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{name}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range meta.Topics {
		for _, p := range tp.Partitions {
			if p.ID == 0 {
				for i, b := range clusterBrokers {
					if strings.HasSuffix(b, fmt.Sprintf(":%d", p.Leader.Port)) {
						return fmt.Sprintf("kafka-%d", i+1)
					}
				}
			}
		}
	}
	fatalf(t, "no leader of %s's partition 0", name)
	return ""
}

// checkReplicasAgree: each shard's two replicas hold the same events, and each tenant's events
// are on the shard the registry recorded for it, on both of its replicas.
func checkReplicasAgree(t *testing.T, conns []driver.Conn, db string) {
	t.Helper()
	ctx := context.Background()
	var got [4][3]uint64
	for i, c := range conns {
		q := fmt.Sprintf("SELECT count(), sum(cityHash64(toString(event_id))), countIf(tenant_id NOT IN (SELECT tenant_id FROM %s_registry.tenants FINAL WHERE shard = %d)) FROM %s.events", db, i/2+1, db)
		if err := c.QueryRow(ctx, q).Scan(&got[i][0], &got[i][1], &got[i][2]); err != nil {
			fatalf(t, "%s: %v", clusterNodes[i], err)
		}
		if got[i][2] != 0 {
			errorf(t, "%s holds %d events of tenants recorded on the other shard", clusterNodes[i], got[i][2])
		}
	}
	for s := 0; s < 2; s++ {
		a, b := got[2*s], got[2*s+1]
		if a != b || a[0] == 0 {
			errorf(t, "the replicas of shard %d disagree or are empty: %d events (hash %d) and %d (hash %d)", s+1, a[0], a[1], b[0], b[1])
		}
	}
	t.Logf("shard 1: %d events on each replica; shard 2: %d", got[0][0], got[2][0])
}

// sameOnOneServer sends the cluster run's raw topic through one server: the topic copied to
// the single-node Kafka (each message to its partition, in order), the cluster's registry,
// keys and principals copied into a single-node database, a processor and a query service
// there. The event store must answer the same as on the cluster, and so must the gated atoms
// of the run's week and the per-tenant reports: as the faults left them (repairs says what the
// processors repaired) and after rebuild re-derives the cluster's marts.
func sameOnOneServer(t *testing.T, bin string, base []string, cluster driver.Conn, cdb, raw, qtoken, clusterQuery string, loadStart time.Time, repairs func() string, rebuild func(since time.Time) string) {
	t.Helper()
	ctx := context.Background()
	single, scfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	sdb := scfg.ClickHouse.Database
	sraw := servicetest.Topic(t, scfg.Kafka.Brokers, 6)
	sdlq := servicetest.Topic(t, scfg.Kafka.Brokers, 2)
	env := append(append([]string{}, base...),
		"SHUKEI_CLICKHOUSE_ADDR="+strings.Join(scfg.ClickHouse.Addr, ","), "SHUKEI_CLICKHOUSE_DATABASE="+sdb,
		"SHUKEI_CLICKHOUSE_USERS_DIR="+servicetest.UsersDir(t), "SHUKEI_KAFKA_BROKERS="+strings.Join(scfg.Kafka.Brokers, ","),
		"SHUKEI_KAFKA_RAW_TOPIC="+sraw, "SHUKEI_KAFKA_DLQ_TOPIC="+sdlq, "SHUKEI_AUDIT_TOPIC="+servicetest.Name(t, "audit."),
		"SHUKEI_PROCESSOR_GROUP_ID="+servicetest.Name(t, "proc1."),
	)
	dir := t.TempDir()
	mig := exec.Command(bin, "migrate")
	mig.Dir, mig.Env = dir, env
	if out, err := mig.CombinedOutput(); err != nil {
		fatalf(t, "migrate one server: %v\n%s", err, out)
	}
	// The same registry, pseudonymisation roots and principals: the same pseudonyms, tokens.
	for _, table := range []string{databases.Registry(cdb) + ".tenants", databases.Registry(cdb) + ".consents", databases.Registry(cdb) + ".policy_activations",
		databases.Keys(cdb) + ".pseudonym_roots", databases.Principals(cdb) + ".principals"} {
		d, name, _ := strings.Cut(table, ".")
		to := sdb + strings.TrimPrefix(d, cdb) + "." + name
		if err := single.Exec(ctx, "INSERT INTO "+to+" SELECT * FROM remote('"+clusterCH[1]+"', "+d+", "+name+", 'default', '"+clusterPassword(t, "admin")+"')"); err != nil {
			fatalf(t, "copy %s: %v", table, err)
		}
	}
	// The raw topic, partition by partition, in order.
	end := endOffsets(t, clusterBrokers, raw)
	w := &kafka.Writer{Addr: kafka.TCP(scfg.Kafka.Brokers...), Topic: sraw, RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: 10 * time.Millisecond,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition })}
	defer w.Close()
	var copied int64
	for p, hi := range end {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: clusterBrokers, Topic: raw, Partition: p, MaxWait: 200 * time.Millisecond})
		var batch []kafka.Message
		for off := int64(0); off < hi; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				fatalf(t, "read %s/%d at %d: %v", raw, p, off, err)
			}
			batch = append(batch, kafka.Message{Partition: p, Key: m.Key, Value: m.Value, Headers: m.Headers, Time: m.Time})
			if len(batch) == 1000 || off == hi-1 {
				if err := w.WriteMessages(ctx, batch...); err != nil {
					fatalf(t, "copy to %s: %v", sraw, err)
				}
				copied += int64(len(batch))
				batch = batch[:0]
			}
		}
		_ = r.Close()
	}
	proc := &role{name: "processor", bin: bin, dir: dir, listen: freeAddr(t)}
	proc.env = append(append([]string{}, env...), "SHUKEI_PROCESSOR_LISTEN="+proc.listen)
	qry := &role{name: "query", bin: bin, dir: dir, listen: freeAddr(t)}
	qry.env = append(append([]string{}, env...), "SHUKEI_QUERY_LISTEN="+qry.listen)
	t.Cleanup(func() {
		proc.cleanup()
		qry.cleanup()
		if t.Failed() {
			proc.dump(t)
			qry.dump(t)
		}
	})
	proc.start(t)
	qry.start(t)
	eventually(t, "one server accounts for every copied message", 3*time.Minute, func() bool {
		n, err := accounted(ctx, single, sdb, "")
		return err == nil && n >= uint64(copied)
	})
	proc.stop(t)

	// The event store: per tenant, the events and their ids.
	store := func(c driver.Conn, table string) map[string][2]uint64 {
		rows, err := c.Query(ctx, "SELECT tenant_id, count(), sum(cityHash64(toString(event_id), toString(user_pseudonym))) FROM "+table+" GROUP BY tenant_id")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string][2]uint64{}
		for rows.Next() {
			var id string
			var n, h uint64
			if err := rows.Scan(&id, &n, &h); err != nil {
				t.Fatal(err)
			}
			out[id] = [2]uint64{n, h}
		}
		return out
	}
	onCluster, onOne := store(cluster, databases.Across("shukei", cdb+".events")), store(single, sdb+".events")
	if !reflect.DeepEqual(onCluster, onOne) || len(onOne) == 0 {
		errorf(t, "the event store differs: %d tenants on the cluster, %d on one server", len(onCluster), len(onOne))
	}
	// What the marts read besides ids and pseudonyms, per tenant (logged).
	cols := func(c driver.Conn, table string) map[string]uint64 {
		rows, err := c.Query(ctx, "SELECT tenant_id, sum(cityHash64(toString(event_id), purposes, toString(contract_status), use_count, toString(occurred_at), edition, size_band)) FROM "+table+" GROUP BY tenant_id")
		if err != nil {
			t.Logf("the event store's columns: %v", err)
			return nil
		}
		defer rows.Close()
		out := map[string]uint64{}
		for rows.Next() {
			var id string
			var h uint64
			if rows.Scan(&id, &h) == nil {
				out[id] = h
			}
		}
		return out
	}
	ca, cb := cols(cluster, databases.Across("shukei", cdb+".events")), cols(single, sdb+".events")
	differ := 0
	for id, h := range ca {
		if cb[id] != h {
			differ++
		}
	}
	t.Logf("the event store's other columns (purposes, status, counts, times, edition, size) differ for %d of %d tenants", differ, len(ca))
	// The marts: the gated atoms of the run's week (what every aggregate report is built
	// from) and the per-tenant reports, through each query service. Compared once as the
	// faults left them, then after 'shukei retention rebuild-marts' on the cluster: a
	// ClickHouse node killed between an insert's event-store part and its marts' parts keeps
	// the events without the marts' rows (docs/CLUSTER.md), which the rebuild re-derives.
	week := gate.Monday(loadStart)
	compare := func(strict bool) (differ int) {
		report := func(format string, args ...any) {
			differ++
			if strict {
				errorf(t, format, args...)
			} else {
				t.Logf("differs: "+format, args...)
			}
		}
		for _, p := range []policy.Purpose{policy.ServiceImprovement, policy.Marketing} {
			a, errA := gate.Compute(ctx, cluster, cdb, "shukei", p.String(), week, policy.MinK)
			b, errB := gate.Compute(ctx, single, sdb, "", p.String(), week, policy.MinK)
			if errA != nil || errB != nil {
				fatalf(t, "atoms of %s: %v, %v", p, errA, errB)
			}
			ka, kb := atomSet(a), atomSet(b)
			if len(a) == 0 {
				report("no %s atoms of the week", p)
			}
			for k, v := range ka {
				if kb[k] != v {
					report("%s atom %s: %s on the cluster, %s on one server", p, k, v, kb[k])
				}
			}
			for k := range kb {
				if _, ok := ka[k]; !ok {
					report("%s atom %s: only on one server", p, k)
				}
			}
		}
		for _, r := range []string{"tenant_signals?purpose=follow_up", "interview_candidates?purpose=interview_selection"} {
			a, b := reportRows(t, "http://"+clusterQuery+"/v1/reports/"+r, qtoken), reportRows(t, "http://"+qry.listen+"/v1/reports/"+r, qtoken)
			if !reflect.DeepEqual(a, b) || len(a) == 0 {
				report("%s answers %d rows on the cluster, %d on one server, or differently", r, len(a), len(b))
			}
		}
		return differ
	}
	// As the faults left them: a ClickHouse node killed mid-insert stored the event store's
	// part and only some marts' parts, which the processors repaired when they resumed; every
	// figure must be one server's, then and after the rebuild (docs/CLUSTER.md, "The whole
	// stack under faults").
	// A Distributed read takes one replica of each shard: every replica has caught up on the
	// marts (the rebuild's deletions and inserts too) before each comparison.
	syncMarts := func() {
		rows, err := cluster.Query(ctx, "SELECT database, name FROM system.tables WHERE (database = ? OR startsWith(database, ?)) AND engine LIKE 'Replicated%'", cdb, cdb+"_")
		if err != nil {
			t.Fatal(err)
		}
		var tables []string
		for rows.Next() {
			var d, n string
			if err := rows.Scan(&d, &n); err != nil {
				t.Fatal(err)
			}
			if sh, _ := migrations.Sharded(cdb, d, n); sh {
				tables = append(tables, d+"."+n)
			}
		}
		rows.Close()
		for _, n := range clusterLayout(t).Nodes {
			for _, tb := range tables {
				if err := n.Conn.Exec(ctx, "SYSTEM SYNC REPLICA "+tb); err != nil {
					fatalf(t, "%s: sync %s: %v", n.Name, tb, err)
				}
			}
		}
		// SYNC REPLICA waits for what a replica's queue holds; a replica whose ZooKeeper
		// session was renewed may not have pulled the log yet. The replicas of each shard must
		// read the same events and mart rows before a Distributed read is compared.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			differ := replicasDiffer(t, cdb)
			if len(differ) == 0 {
				return
			}
			if time.Now().After(deadline) {
				for _, d := range differ {
					errorf(t, "two minutes after SYNC REPLICA the replicas still differ: %s", d)
				}
				logReplicaState(t, cdb)
				return
			}
			time.Sleep(time.Second)
		}
	}
	// Which tenants, and where: per tenant, the service-improvement mart's uses and what the
	// event store says they should be, on each side (logged when the marts differ).
	explain := func() {
		uses := func(c driver.Conn, mart, events string) map[string][2]uint64 {
			out := map[string][2]uint64{}
			for i, q := range []string{
				"SELECT tenant_id, sumMerge(uses) FROM " + mart + " GROUP BY tenant_id",
				"SELECT tenant_id, sum(toUInt64(if(category = 'feature_use', use_count, 1))) FROM " + events + " WHERE " + policy.ServiceImprovement.SQL("purposes") + " AND category IN ('feature_use', 'app_access') GROUP BY tenant_id",
			} {
				rows, err := c.Query(ctx, q)
				if err != nil {
					t.Logf("explain: %v", err)
					return out
				}
				for rows.Next() {
					var id string
					var n uint64
					if rows.Scan(&id, &n) == nil {
						v := out[id]
						v[i] = n
						out[id] = v
					}
				}
				rows.Close()
			}
			return out
		}
		a := uses(cluster, databases.Across("shukei", cdb+"_service_improvement.feature_daily"), databases.Across("shukei", cdb+".events"))
		b := uses(single, sdb+"_service_improvement.feature_daily", sdb+".events")
		shown := 0
		for id, v := range a {
			if v != b[id] && shown < 10 {
				shown++
				t.Logf("tenant %s: service-improvement uses mart/events: cluster %d/%d, one server %d/%d", id, v[0], v[1], b[id][0], b[id][1])
			}
		}
		t.Logf("tenants whose service-improvement uses differ (mart or events): %d shown", shown)
	}
	syncMarts()
	// Promise 20 node by node: every replica's marts read as their views over its own store.
	martDrift(t, cdb)
	before := compare(true)
	if before > 0 {
		explain()
	}
	// rebuild-marts, run twice over the same weeks (a replicated mart drops an insert equal to
	// one before unless told not to), must leave the same figures.
	out := rebuild(loadStart)
	out += rebuild(loadStart)
	syncMarts()
	after := compare(true)
	if after > 0 {
		explain()
		martDrift(t, cdb)
	}
	t.Logf("the marts: %d differences with one server as the faults left them (the processors repaired what cut inserts left out: %s), %d after rebuild-marts twice (%s)",
		before, repairs(), after, strings.TrimSpace(out))
	t.Logf("one server: %d events of %d tenants stored, as on the cluster", func() (n uint64) {
		for _, v := range onOne {
			n += v[0]
		}
		return
	}(), len(onOne))
}

// atomSet keys each atom by its cell (the week in UTC) and gives its counts.
func atomSet(atoms []gate.Atom) map[string]string {
	out := map[string]string{}
	for _, a := range atoms {
		out[fmt.Sprintf("%s %s %s %s %s", a.Week.UTC().Format(time.DateOnly), a.Category, a.Feature, a.Status, a.Edition)] = fmt.Sprintf("tenants=%d users=%d uses=%d", a.Tenants, a.Users, a.Uses)
	}
	return out
}

// reportRows GETs a report and returns its rows.
func reportRows(t *testing.T, url, token string) []map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		fatalf(t, "%s: %s: %s", url, resp.Status, body)
	}
	var res struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	return res.Rows
}

// martDrift reports, node by node, every purpose mart whose rows differ from what its view
// makes of that node's event store, with one differing key as each side reads it: whether the
// rows a comparison misses are missing on every replica of a shard (a part lost, a cut insert
// not repaired) or on one only (a replica behind), and which batch they came from.
func martDrift(t *testing.T, db string) {
	ctx := context.Background()
	for _, n := range clusterLayout(t).Nodes {
		all, err := marts.List(ctx, n.Conn, db)
		if err != nil {
			errorf(t, "%s: the marts: %v", n.Name, err)
			continue
		}
		var drift []string
		example := ""
		for _, m := range all {
			have, err := marts.ReadValues(ctx, n.Conn, m.Values(m.Rows("1")))
			if err != nil {
				errorf(t, "%s: %s: %v", n.Name, m.Table, err)
				continue
			}
			want, err := marts.ReadValues(ctx, n.Conn, m.Values(m.Over("1")))
			if err != nil {
				errorf(t, "%s: %s over the store: %v", n.Name, m.Table, err)
				continue
			}
			differ := marts.Differ(have, want)
			if len(differ) == 0 {
				continue
			}
			drift = append(drift, fmt.Sprintf("%s %d of %d keys", strings.TrimPrefix(m.Table, db), len(differ), len(want)))
			if example == "" {
				k := differ[0]
				example = fmt.Sprintf("%s: mart: %s; event store: %s", m.Table, marts.ShowKey(ctx, n.Conn, m, m.Rows("1"), k), marts.ShowKey(ctx, n.Conn, m, m.Over("1"), k))
			}
		}
		if len(drift) == 0 {
			t.Logf("%s: every mart reads as its view over the node's event store", n.Name)
			continue
		}
		errorf(t, "%s: marts differing from their views over the node's event store: %s", n.Name, strings.Join(drift, ", "))
		errorf(t, "%s: e.g. %s", n.Name, example)
	}
}

// replicasDiffer compares the replicas of each shard: the event store's ids and every purpose
// mart's rows (marts.Fingerprint). It names what differs.
func replicasDiffer(t *testing.T, db string) []string {
	ctx := context.Background()
	nodes := clusterLayout(t).Nodes
	var out []string
	for i := 0; i+1 < len(nodes); i += 2 {
		a, b := nodes[i], nodes[i+1]
		all, err := marts.List(ctx, a.Conn, db)
		if err != nil {
			return []string{fmt.Sprintf("%s: the marts: %v", a.Name, err)}
		}
		queries := map[string]string{db + ".events": "SELECT sum(cityHash64(toString(event_id))) FROM " + db + ".events"}
		for _, m := range all {
			queries[m.Table] = m.Fingerprint(m.Rows("1"))
		}
		for table, q := range queries {
			var va, vb uint64
			errA, errB := a.Conn.QueryRow(ctx, q).Scan(&va), b.Conn.QueryRow(ctx, q).Scan(&vb)
			if errA != nil || errB != nil || va != vb {
				out = append(out, fmt.Sprintf("%s on %s and %s (%d, %v; %d, %v)", table, a.Name, b.Name, va, errA, vb, errB))
			}
		}
	}
	slices.Sort(out)
	return out
}

// logReplicaState logs, node by node, the replication state of db's tables that are behind:
// read-only, session expired, entries queued, or log entries not yet pulled.
func logReplicaState(t *testing.T, db string) {
	ctx := context.Background()
	for _, n := range clusterLayout(t).Nodes {
		rows, err := n.Conn.Query(ctx, "SELECT concat(database, '.', table), is_readonly, is_session_expired, queue_size, log_pointer, log_max_index, absolute_delay FROM system.replicas "+
			"WHERE (database = ? OR startsWith(database, ?)) AND (is_readonly OR is_session_expired OR queue_size > 0 OR log_pointer <= log_max_index)", db, db+"_")
		if err != nil {
			errorf(t, "%s: system.replicas: %v", n.Name, err)
			continue
		}
		for rows.Next() {
			var table string
			var ro, expired uint8
			var queue uint32
			var ptr, max, delay uint64
			if err := rows.Scan(&table, &ro, &expired, &queue, &ptr, &max, &delay); err != nil {
				errorf(t, "%s: system.replicas: %v", n.Name, err)
				break
			}
			errorf(t, "%s: %s read-only %d, session expired %d, queue %d, log pointer %d of %d, delay %d s", n.Name, table, ro, expired, queue, ptr, max, delay)
		}
		rows.Close()
	}
}
