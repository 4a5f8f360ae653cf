package processor

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/registry"
)

// A tenant deleted while its events are decided but not yet stored: the batch that holds them
// is abandoned at the fence and decided again, and the tenant's events are refused as deleted;
// nothing of it reaches the event store or a mart. The rig's registry view is refreshed only
// by the processor's fence, so every decision before it still takes the tenant for alive.
func TestFenceAbandonsABatchOfATenantDeletedMeanwhile(t *testing.T) {
	r := newRig(t, 2)
	r.cfg.Processor.BatchTimeout = 5 * time.Second
	victim, bystander := r.tenants[0], r.tenants[1]
	metrics := prometheus.NewRegistry()
	p := r.processor(metrics)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	wr := &kafka.Writer{Addr: kafka.TCP(r.cfg.Kafka.Brokers...), Topic: r.cfg.Kafka.RawTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 5000, BatchBytes: 900_000, BatchTimeout: 10 * time.Millisecond, Compression: kafka.Lz4}
	defer wr.Close()
	rnd := rand.New(rand.NewPCG(8, 8))
	send := func(tenants ...string) {
		t.Helper()
		msgs := make([]kafka.Message, 0, len(tenants))
		for _, tenant := range tenants {
			b, _ := json.Marshal(good(tenant, rnd, time.Now()))
			msgs = append(msgs, kafka.Message{Key: []byte(tenant), Value: b})
		}
		if err := wr.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	warm := make([]string, 10)
	for i := range warm {
		warm[i] = bystander
	}
	send(warm...) // the group is joined and the first batch stored
	r.waitAccounted(t, 10, time.Minute)

	// Both tenants' events, more than a chunk of them: the batch that takes them streams chunks
	// at once and ends batch_timeout (5 s) after its first event. The tenant is deleted as soon
	// as the first of them are in Kafka, before the rest are produced: the batch's fence comes
	// more than its freshness (1 s) after the tombstone however long producing the rest takes
	// (24,000 events took 5.7 s under -race on a loaded machine), and the tenant's events decided
	// before the fence still take it for alive.
	const n, first = 12_000, 1_000
	both := make([]string, 0, 2*n)
	for range n {
		both = append(both, victim, bystander)
	}
	sent := time.Now()
	send(both[:first]...)
	reg := registry.New(r.conn, r.db, r.master)
	if err := reg.Tombstone(context.Background(), decision.TenantTombstone(r.master.Derive("dlq"), victim), time.Now()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(sent); d > 3500*time.Millisecond {
		t.Fatalf("producing the first events and the tombstone took %v: the batch may end too soon after the deletion for the test to mean anything", d)
	}
	send(both[first:]...)
	r.waitAccounted(t, 10+2*n, time.Minute)
	time.Sleep(time.Second)

	count := func(q string, args ...any) uint64 {
		t.Helper()
		var c uint64
		if err := r.conn.QueryRow(context.Background(), q, args...).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if got := count("SELECT count() FROM "+r.db+".events WHERE tenant_id = ?", victim); got != 0 {
		t.Errorf("the event store holds %d events of the tenant deleted before they were stored", got)
	}
	for _, mart := range []string{"_service_improvement.feature_daily", "_support.trace", "_follow_up.tenant_daily"} {
		if got := count("SELECT count() FROM "+r.db+mart+" WHERE tenant_id = ?", victim); got != 0 {
			t.Errorf("%s holds %d rows of the deleted tenant", mart, got)
		}
	}
	if got := count("SELECT count() FROM " + r.db + ".rejections WHERE reason = 'tenant_deleted'"); got != n {
		t.Errorf("%d of the deleted tenant's %d events refused as tenant_deleted", got, n)
	}
	if got := count("SELECT count() FROM "+r.db+".events WHERE tenant_id = ?", bystander); got != 10+n {
		t.Errorf("the other tenant: %d events stored, want %d", got, 10+n)
	}
	if f := testutil.ToFloat64(p.m.fenced); f < 1 {
		t.Errorf("no batch was fenced (shukei_processor_fenced_batches_total %v): the test did not reach the fence", f)
	} else {
		t.Logf("%v batch(es) fenced", f)
	}
}

// The fence reads the deleted tenants afresh once its last read is older than fenceFresh.
func TestDeletionsAreReadAfresh(t *testing.T) {
	reads := 0
	d := &deletions{load: func(context.Context) (map[string]bool, error) {
		reads++
		return map[string]bool{"x": reads > 1}, nil
	}}
	ctx := context.Background()
	g, _ := d.current(ctx)
	g2, _ := d.current(ctx)
	if reads != 1 || g["x"] || g2["x"] {
		t.Fatalf("two checks within fenceFresh read %d times", reads)
	}
	d.read = d.read.Add(-fenceFresh - time.Millisecond)
	if g, _ := d.current(ctx); reads != 2 || !g["x"] {
		t.Errorf("a check after fenceFresh did not read again (%d reads)", reads)
	}
}
