package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

type rig struct {
	cfg     config.Config
	conn    driver.Conn
	wconn   driver.Conn // the processor's, dialled through disc as the role's are (Open)
	disc    *discarder
	db      string
	cache   *registry.Cache
	keyring *pseudonym.Keyring
	master  *pseudonym.MasterKey
	policy  decision.Tagger
	keyFile string // the master key, for subprocesses
	tenants []string
}

func newRig(t testing.TB, tenants int) *rig {
	t.Helper()
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	cfg.Kafka.RawTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 6)
	cfg.Kafka.DLQTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 2)
	cfg.Processor.GroupID = servicetest.Name(t, "proc.")
	cfg.Processor.BatchSize = 50000
	cfg.Processor.BatchTimeout = 200 * time.Millisecond
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	// The key is also written to a file, for a processor started as a subprocess.
	text := pseudonym.NewMasterKeyText()
	master, err := pseudonym.ParseMasterKey(text)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(keyFile, []byte(text+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A processor started as a subprocess connects as its role's own user (promise 16).
	servicetest.DeclareRoleUsers(t, cfg.ClickHouse.Database, master.Derive("clickhouse-users"))
	reg := registry.New(conn, cfg.ClickHouse.Database, master)
	r := &rig{cfg: cfg, conn: conn, db: cfg.ClickHouse.Database, master: master, keyFile: keyFile, disc: newDiscarder()}
	wcfg := cfg.ClickHouse
	wcfg.Dial = r.disc.dial
	if r.wconn, err = clickhouse.Open(wcfg.Options()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.wconn.Close() })
	statuses := []string{registry.StatusContracted, registry.StatusTrial, registry.StatusBeta}
	for i := range tenants {
		id := fmt.Sprintf("tenant-%02d", i)
		if _, err := reg.Add(ctx, registry.Tenant{ID: id, Status: statuses[i%3], Edition: "standard", SizeBand: "m"}); err != nil {
			t.Fatal(err)
		}
		r.tenants = append(r.tenants, id)
	}
	versions, err := policy.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	r.policy = decision.NewPolicyTagger(versions)
	r.keyring = pseudonym.NewKeyring(master)
	r.cache = registry.NewCache(reg, r.keyring, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := r.cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) processor(reg prometheus.Registerer) *Processor {
	return New(r.cfg, Deps{
		Conn: r.wconn, discarder: r.disc, Database: r.db, Cache: r.cache, Keyring: r.keyring, Policy: r.policy,
		HashKey: r.master.Derive("dlq"), Registry: reg, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}

// workload is what was produced and what should come of it.
type workload struct {
	total, accepted int
	rejected        map[string]int // by reason
	leaks           []string       // content that must be found nowhere
}

func good(tenant string, rnd *rand.Rand, now time.Time) map[string]any {
	return map[string]any{
		"event_id":    uuid.NewString(),
		"tenant_id":   tenant,
		"occurred_at": now.Add(-time.Duration(rnd.IntN(3600)) * time.Second).UTC().Format(time.RFC3339),
		"schema":      "feature_use/v1",
		"source":      "web-app",
		"user":        fmt.Sprintf("u-%d", rnd.IntN(500)),
		"client":      map[string]any{"os": "windows", "os_version": "11", "device_kind": "desktop"},
		"data":        map[string]any{"feature_id": []string{"app.record.create", "space.post.reaction", "app.view.list"}[rnd.IntN(3)], "count": 1 + rnd.IntN(5), "records_registered": rnd.IntN(3)},
	}
}

// produce writes n messages: about 2% bad ones (input data, malformed, unknown tenant) and
// about 0.5% collector retries of already produced events.
func produce(t testing.TB, r *rig, n int) workload {
	t.Helper()
	rnd := rand.New(rand.NewPCG(7, 7))
	now := time.Now()
	w := workload{rejected: map[string]int{}}
	msgs := make([]kafka.Message, 0, n)
	var sent []kafka.Message
	for i := range n {
		tenant := r.tenants[rnd.IntN(len(r.tenants))]
		ev := good(tenant, rnd, now)
		var value []byte
		switch x := rnd.IntN(1000); {
		case x < 8:
			leak := fmt.Sprintf("taro.yamada%d@example.co.jp", i)
			ev["user"] = leak
			w.leaks = append(w.leaks, leak)
			w.rejected["input_data.email"]++
		case x < 12:
			leak := fmt.Sprintf("見積書_%d.xlsx", i)
			ev["data"].(map[string]any)["feature_id"] = leak
			w.leaks = append(w.leaks, leak)
			w.rejected["input_data.file_name"]++
		case x < 16:
			value = []byte(`{"event_id": "broken`)
			w.rejected["malformed_json"]++
		case x < 20:
			ev["tenant_id"] = "tenant-unregistered"
			tenant = "tenant-unregistered"
			w.rejected["unknown_tenant"]++
		case x < 25 && len(sent) > 0:
			dup := sent[rnd.IntN(len(sent))]
			msgs = append(msgs, kafka.Message{Key: dup.Key, Value: dup.Value})
			w.rejected["duplicate_event_id"]++
			w.total++
			continue
		case x < 28 && len(r.tenants) > 1:
			// Keyed by another tenant than its own: refused, whatever it holds.
			value, _ = json.Marshal(ev)
			other := r.tenants[(slices.Index(r.tenants, tenant)+1)%len(r.tenants)]
			msgs = append(msgs, kafka.Message{Key: []byte(other), Value: value})
			w.rejected["key_mismatch"]++
			w.total++
			continue
		default:
			w.accepted++
		}
		if value == nil {
			value, _ = json.Marshal(ev)
		}
		m := kafka.Message{Key: []byte(tenant), Value: value}
		msgs = append(msgs, m)
		if value[0] == '{' && ev["tenant_id"] != "tenant-unregistered" && !strings.Contains(string(value), "example.co.jp") && !strings.Contains(string(value), "xlsx") && len(value) > 40 {
			sent = append(sent, m)
		}
		w.total++
	}
	wr := &kafka.Writer{Addr: kafka.TCP(r.cfg.Kafka.Brokers...), Topic: r.cfg.Kafka.RawTopic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchSize: 5000, BatchBytes: 16 << 20, BatchTimeout: 10 * time.Millisecond, Compression: kafka.Lz4}
	defer wr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := 0; i < len(msgs); i += 20000 {
		if err := wr.WriteMessages(ctx, msgs[i:min(i+20000, len(msgs))]...); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	return w
}

// counts reads what the store accounts for.
func (r *rig) counts(t *testing.T) (events, rejections uint64, byReason map[string]uint64) {
	t.Helper()
	ctx := context.Background()
	if err := r.conn.QueryRow(ctx, "SELECT count() FROM "+r.db+".events").Scan(&events); err != nil {
		t.Fatal(err)
	}
	rows, err := r.conn.Query(ctx, "SELECT reason, count() FROM "+r.db+".rejections WHERE class != 'checkpoint' GROUP BY reason")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	byReason = map[string]uint64{}
	for rows.Next() {
		var reason string
		var n uint64
		if err := rows.Scan(&reason, &n); err != nil {
			t.Fatal(err)
		}
		byReason[reason] = n
		rejections += n
	}
	return events, rejections, byReason
}

func (r *rig) waitAccounted(t *testing.T, total int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ev, rej, _ := r.counts(t)
		if int(ev+rej) >= total {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the store accounts for %d of %d messages (%d events, %d rejections)", within, ev+rej, total, ev, rej)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func TestExactAccountingOnRealServices(t *testing.T) {
	r := newRig(t, 12)
	w := produce(t, r, 200000)
	p := r.processor(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	r.waitAccounted(t, w.total, 3*time.Minute)
	time.Sleep(time.Second) // anything extra would show now
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r.checkExact(t, w)
}

func (r *rig) checkExact(t *testing.T, w workload) {
	t.Helper()
	ctx := context.Background()
	events, rejections, byReason := r.counts(t)
	t.Logf("produced %d: stored %d, rejected %d %v", w.total, events, rejections, byReason)
	if int(events) != w.accepted {
		t.Errorf("stored %d events, want %d", events, w.accepted)
	}
	if int(events+rejections) != w.total {
		t.Errorf("store accounts for %d messages, want exactly %d", events+rejections, w.total)
	}
	for reason, n := range w.rejected {
		if int(byReason[reason]) != n {
			t.Errorf("rejections for %s: %d, want %d", reason, byReason[reason], n)
		}
	}
	var dupIDs int64
	var dupOffsets uint64
	if err := r.conn.QueryRow(ctx, "SELECT toInt64(count()) - toInt64(uniqExact(event_id)) FROM "+r.db+".events").Scan(&dupIDs); err != nil {
		t.Fatal(err)
	}
	if err := r.conn.QueryRow(ctx, "SELECT count() FROM (SELECT kafka_partition, kafka_offset, count() AS n FROM (SELECT kafka_partition, kafka_offset FROM "+r.db+".events UNION ALL SELECT kafka_partition, kafka_offset FROM "+r.db+".rejections WHERE class != 'checkpoint') GROUP BY kafka_partition, kafka_offset HAVING n > 1)").Scan(&dupOffsets); err != nil {
		t.Fatal(err)
	}
	if dupIDs != 0 || dupOffsets != 0 {
		t.Errorf("duplicated=%d event ids, %d offsets accounted twice", dupIDs, dupOffsets)
	}
	// Every stored feature_use event carries the policy's tag: service_improvement and
	// external_aggregate among its purposes, never support (3(1)-1 needs operations only).
	var untagged uint64
	if err := r.conn.QueryRow(ctx, "SELECT count() FROM "+r.db+".events WHERE policy_version != 1 OR bitAnd(purposes, ?) != ? OR bitAnd(purposes, ?) != 0",
		uint16(policy.SetOf(policy.ServiceImprovement, policy.ExternalAggregate)), uint16(policy.SetOf(policy.ServiceImprovement, policy.ExternalAggregate)), uint16(policy.SetOf(policy.Support))).Scan(&untagged); err != nil {
		t.Fatal(err)
	}
	if untagged != 0 {
		t.Errorf("%d stored events lack the policy's purposes", untagged)
	}
	// No content of an input-data rejection anywhere: not in ClickHouse, not in the DLQ topic.
	var leaked uint64
	for _, leak := range w.leaks[:min(len(w.leaks), 50)] {
		var n uint64
		if err := r.conn.QueryRow(ctx, "SELECT count() FROM "+r.db+".rejections WHERE position(payload, ?) > 0 OR position(field, ?) > 0", leak, leak).Scan(&n); err != nil {
			t.Fatal(err)
		}
		leaked += n
	}
	dlq := servicetest.ReadTopic(t, r.cfg.Kafka.Brokers, r.cfg.Kafka.DLQTopic)
	if len(dlq) < int(rejections) {
		t.Errorf("DLQ topic holds %d records, want at least %d", len(dlq), rejections)
	}
	for _, m := range dlq {
		for _, leak := range w.leaks {
			if strings.Contains(string(m.Value), leak) {
				leaked++
			}
		}
		kept := ""
		for _, h := range m.Headers {
			if h.Key == "kept" {
				kept = string(h.Value)
			}
		}
		if want := map[bool]string{true: "payload", false: "metadata"}[len(m.Value) != 0]; kept != want {
			t.Errorf("a DLQ record with %d bytes of payload says kept=%q", len(m.Value), kept)
		}
	}
	if leaked != 0 {
		t.Errorf("content of input-data rejections found %d times in ClickHouse or the DLQ", leaked)
	}
}
