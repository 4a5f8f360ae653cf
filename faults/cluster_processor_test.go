//go:build cluster

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/processor"
	"github.com/shukei/shukei/registry"
	"github.com/shukei/shukei/retention"
)

// The processor on the cluster writes each tenant's events to the tenant's shard (both
// replicas), and stays exactly-once per shard through a replica stopped while it writes, a
// shard with both replicas stopped for 20 s, and a restart of the processor while that shard
// is away (resuming waits for every replica): every event is stored once, on its shard, and
// the marts its views fill are on the same shard.
func TestClusterProcessorWritesEachShardExactlyOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	conns := make([]driver.Conn, len(clusterCH))
	for i, addr := range clusterCH {
		conns[i] = clusterConn(t, addr)
	}
	db := fmt.Sprintf("t_proc_%d", time.Now().UnixNano())
	t.Cleanup(func() { dropRunDatabases(t, db) })
	layout := clusterLayout(t)
	clusterGrant(t, db)
	if _, err := migrations.ApplyLayout(ctx, conns[0], db, layout); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	asClusterAdmin(t, &cfg)
	cfg.ClickHouse.Database = db
	cfg.Kafka.Brokers = clusterBrokers
	cfg.Kafka.RawTopic = servicetest.Topic(t, clusterBrokers, 6)
	cfg.Kafka.DLQTopic = servicetest.Topic(t, clusterBrokers, 2)
	cfg.Processor.GroupID = servicetest.Name(t, "proc.")
	cfg.Processor.BatchTimeout = 500 * time.Millisecond

	text := pseudonym.NewMasterKeyText()
	master, err := pseudonym.ParseMasterKey(text)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(conns[0], db, master).Placing("shukei")
	var tenants []string
	for i := range 40 {
		id := fmt.Sprintf("tenant-%02d", i)
		if _, err := reg.Add(ctx, registry.Tenant{ID: id, Status: registry.StatusContracted, Edition: "standard", SizeBand: "m"}); err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, id)
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	start := func() (stop func()) {
		admin := cfg.ClickHouse
		shards, more, err := processor.ClusterShards(ctx, conns[0], admin)
		if err != nil {
			t.Fatal(err)
		}
		if len(shards) != 2 || len(shards[0].Replicas) != 2 || len(shards[1].Replicas) != 2 {
			t.Fatalf("cluster shukei: %d shards, want 2 of 2 replicas", len(shards))
		}
		write, err := clickhouse.Open(admin.Options())
		if err != nil {
			t.Fatal(err)
		}
		p, _, err := processor.Wire(ctx, write, conns[0], cfg, master, log, func(d *processor.Deps) { d.Shards = shards })
		if err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Run(pctx) }()
		return func() {
			pcancel()
			if err := <-done; err != nil {
				t.Errorf("processor: %v", err)
			}
			more.Close()
			_ = write.Close()
		}
	}

	wr := &kafka.Writer{Addr: kafka.TCP(clusterBrokers...), Topic: cfg.Kafka.RawTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 10 * time.Millisecond, BatchSize: 2000}
	defer wr.Close()
	produced := 0
	produce := func(n int) {
		t.Helper()
		now := time.Now().UTC()
		msgs := make([]kafka.Message, n)
		for i := range msgs {
			tenant := tenants[(produced+i)%len(tenants)]
			b, _ := json.Marshal(map[string]any{
				"event_id": uuid.NewString(), "tenant_id": tenant, "occurred_at": now.Add(-time.Duration(i%3600) * time.Second).Format(time.RFC3339),
				"schema": "feature_use/v1", "source": "web-app", "user": fmt.Sprintf("u-%d", i%300),
				"client": map[string]any{"os": "windows", "os_version": "11", "device_kind": "desktop"},
				"data":   map[string]any{"feature_id": "app.record.create", "count": 1 + i%4, "records_registered": i % 2},
			})
			msgs[i] = kafka.Message{Key: []byte(tenant), Value: b}
		}
		if err := wr.WriteMessages(ctx, msgs...); err != nil {
			t.Fatalf("produce: %v", err)
		}
		produced += n
	}
	// stored counts the events on one replica of each shard (the writes' replica may lag the
	// other; every replica is compared at the end).
	count := func(conn driver.Conn, q string) (uint64, error) {
		var n uint64
		err := conn.QueryRow(ctx, q).Scan(&n)
		return n, err
	}
	waitStored := func(within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			a, errA := count(conns[0], "SELECT count() FROM "+db+".events")
			b, errB := count(conns[2], "SELECT count() FROM "+db+".events")
			if errA == nil && errB == nil && int(a+b) >= produced {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %v the shards hold %d + %d of %d events (%v, %v)", within, a, b, produced, errA, errB)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	stop := start()
	produce(10_000)
	waitStored(time.Minute)

	t.Log("a replica of shard 1 stopped while events arrive")
	node(t, "stop-node", "ch-s1r2")
	produce(10_000)
	waitStored(time.Minute)
	node(t, "start-node", "ch-s1r2")

	t.Log("both replicas of shard 2 stopped for 20 s, the processor restarted meanwhile")
	node(t, "stop-node", "ch-s2r1")
	node(t, "stop-node", "ch-s2r2")
	produce(10_000)
	time.Sleep(10 * time.Second)
	stop()
	stop = start() // resumes only once every replica answers
	produce(5_000)
	time.Sleep(10 * time.Second)
	node(t, "start-node", "ch-s2r1")
	node(t, "start-node", "ch-s2r2")
	waitStored(3 * time.Minute)
	time.Sleep(2 * time.Second) // anything stored twice would show now
	stop()

	for i, conn := range conns {
		if err := conn.Exec(ctx, "SYSTEM SYNC REPLICA "+db+".events"); err != nil {
			t.Fatalf("%s: sync replica: %v", clusterNodes[i], err)
		}
	}
	// Every tenant was placed when registered: the shard ClickHouse's own cityHash64 gives
	// over the two shards (registry.PlaceShard agrees with it), on both shards.
	var unplaced, otherHash, onShard2 uint64
	if err := conns[3].QueryRow(ctx, "SELECT countIf(shard = 0), countIf(shard != cityHash64(tenant_id) % 2 + 1), countIf(shard = 2) FROM "+db+"_registry.tenants FINAL").Scan(&unplaced, &otherHash, &onShard2); err != nil {
		t.Fatal(err)
	}
	if unplaced != 0 || otherHash != 0 || onShard2 == 0 || onShard2 == uint64(len(tenants)) {
		t.Errorf("placement: %d tenants unplaced, %d not where cityHash64 puts them, %d of %d on shard 2", unplaced, otherHash, onShard2, len(tenants))
	}
	shardIdx := []int{0, 0, 1, 1}
	var total [2]uint64
	for i, conn := range conns {
		rows, distinct, misplaced := uint64(0), uint64(0), uint64(0)
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count(), uniqExact(event_id), countIf(tenant_id NOT IN (SELECT tenant_id FROM %s_registry.tenants FINAL WHERE shard = %d)) FROM %s.events", db, shardIdx[i]+1, db)).Scan(&rows, &distinct, &misplaced); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d events (%d distinct), %d of another shard's tenants", clusterNodes[i], rows, distinct, misplaced)
		if rows != distinct {
			t.Errorf("%s stores %d events, %d distinct: duplicates", clusterNodes[i], rows, distinct)
		}
		if misplaced != 0 {
			t.Errorf("%s holds %d events of tenants of the other shard", clusterNodes[i], misplaced)
		}
		var martMisplaced, martRows uint64
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count(), countIf(tenant_id NOT IN (SELECT tenant_id FROM %s_registry.tenants FINAL WHERE shard = %d)) FROM %s_service_improvement.feature_daily", db, shardIdx[i]+1, db)).Scan(&martRows, &martMisplaced); err != nil {
			t.Fatal(err)
		}
		if martRows == 0 || martMisplaced != 0 {
			t.Errorf("%s: the mart holds %d rows, %d of the other shard's tenants", clusterNodes[i], martRows, martMisplaced)
		}
		if i%2 == 0 {
			total[shardIdx[i]] = rows
		} else if rows != total[shardIdx[i]] {
			t.Errorf("the replicas of shard %d disagree: %d and %d events", shardIdx[i]+1, total[shardIdx[i]], rows)
		}
	}
	if got := total[0] + total[1]; int(got) != produced || total[0] == 0 || total[1] == 0 {
		t.Errorf("the shards hold %d + %d events of %d produced: lost=%d duplicated=%d", total[0], total[1], produced, max(0, produced-int(got)), max(0, int(got)-produced))
	} else {
		t.Logf("cluster processor: lost=0 duplicated=0 (%d events: %d on shard 1, %d on shard 2)", produced, total[0], total[1])
	}

	// Every node reads both shards through the Distributed tables: each event once.
	for i, conn := range conns {
		if n, err := count(conn, "SELECT count() FROM "+databases.Across("shukei", db+".events")); err != nil || int(n) != produced {
			t.Errorf("%s reads %d events through %s (%v), want %d", clusterNodes[i], n, databases.Across("shukei", db+".events"), err, produced)
		}
	}

	// Retention deletes a tenant of shard 2 on its shard, while one replica of it is down: the
	// deletion waits for the replica, then no replica holds a row of the tenant.
	victim := ""
	for _, id := range tenants {
		tn, err := reg.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if tn.Shard == 2 {
			victim = id
			break
		}
	}
	var before uint64
	if err := conns[2].QueryRow(ctx, "SELECT count() FROM "+db+".events WHERE tenant_id = ?", victim).Scan(&before); err != nil || before == 0 {
		t.Fatalf("the victim %s has %d events on shard 2 (%v)", victim, before, err)
	}
	keyFile := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(keyFile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	rcfg := cfg
	rcfg.Anonymizer.MasterKeyFile = keyFile
	node(t, "stop-node", "ch-s2r2")
	deleted := make(chan error, 1)
	var receipt strings.Builder
	began := time.Now()
	go func() { deleted <- retention.DeleteTenantTo(ctx, &receipt, rcfg, log, victim, "cluster test") }()
	time.Sleep(25 * time.Second) // past the commit window: the deletion now waits for ch-s2r2
	select {
	case err := <-deleted:
		t.Fatalf("the deletion ended while a replica of the tenant's shard was down: %v", err)
	default:
	}
	node(t, "start-node", "ch-s2r2")
	if err := <-deleted; err != nil {
		t.Fatalf("tenants delete: %v", err)
	}
	t.Logf("deleted %s in %v with a replica down for 25 s: %s", victim, time.Since(began).Round(time.Second), strings.TrimSpace(receipt.String()))
	for i, conn := range conns {
		for _, table := range []string{db + ".events", db + "_service_improvement.feature_daily", db + "_support.trace", db + "_registry.tenants"} {
			if n, err := count(conn, "SELECT count() FROM "+table+" WHERE tenant_id = '"+victim+"'"); err != nil || n != 0 {
				t.Errorf("%s: %s holds %d rows of the deleted tenant (%v)", clusterNodes[i], table, n, err)
			}
		}
		if n, err := count(conn, "SELECT count() FROM "+databases.Across("shukei", db+".events")); err != nil || n != uint64(produced)-before {
			t.Errorf("%s reads %d events after the deletion (%v), want %d", clusterNodes[i], n, err, uint64(produced)-before)
		}
	}
}
