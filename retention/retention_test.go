package retention_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/pipeline/processor"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
	"github.com/shukei/shukei/retention"
)

// A tenant deleted end to end: its usage goes through Kafka and the real processor into the
// store and every purpose mart, it has consents and a ticket; then its contract ends, the
// retention period passes, and a retention run deletes it everywhere, destroys its keys and
// writes the receipt — while another tenant's data stays untouched. Old partitions are dropped.
func TestTenantDeletedEndToEnd(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	cfg.Kafka.RawTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 2)
	cfg.Kafka.DLQTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 1)
	cfg.Processor.GroupID = servicetest.Name(t, "proc.")
	cfg.Processor.BatchTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	master, _ := pseudonym.ParseMasterKey(pseudonym.NewMasterKeyText())
	reg := registry.New(conn, db, master)
	for _, id := range []string{"gone", "stays"} {
		if _, err := reg.Add(ctx, registry.Tenant{ID: id, Status: registry.StatusContracted, Edition: "standard", SizeBand: "m"}); err != nil {
			t.Fatal(err)
		}
		if err := reg.Consent(ctx, id, "external_consented", 1, true, time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.OpenTicket(ctx, id, "T-"+id, time.Hour, "helpdesk"); err != nil {
			t.Fatal(err)
		}
	}

	// Usage of both tenants through the processor.
	vs, _ := policy.Embedded()
	keyring := pseudonym.NewKeyring(master)
	cache := registry.NewCache(reg, keyring, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	p := processor.New(cfg, processor.Deps{Conn: conn, Database: db, Cache: cache, Keyring: keyring, Policy: decision.NewPolicyTagger(vs),
		HashKey: master.Derive("dlq"), Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	wr := &kafka.Writer{Addr: kafka.TCP(cfg.Kafka.Brokers...), Topic: cfg.Kafka.RawTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll}
	var msgs []kafka.Message
	now := time.Now().UTC()
	for _, id := range []string{"gone", "stays"} {
		for i := range 20 {
			schema, data := "feature_use/v1", map[string]any{"feature_id": "app.record.create", "count": 2, "records_registered": 1}
			switch i % 4 {
			case 1:
				schema, data = "operation/v1", map[string]any{"operation_id": "record.save", "app_id": "sheets", "result_code": "ok", "request_id": "0123456789abcdef0123"}
			case 2:
				schema, data = "settings/v1", map[string]any{"setting_key": "locale", "value": "ja", "customization_present": true, "customization_count": 2}
			}
			b, _ := json.Marshal(map[string]any{"event_id": uuid.NewString(), "tenant_id": id, "occurred_at": now.Add(-time.Duration(i) * time.Minute).Format(time.RFC3339),
				"schema": schema, "source": "web-app", "user": fmt.Sprintf("u-%d", i%3),
				"client": map[string]any{"os": "windows", "os_version": "11", "device_kind": "desktop"}, "data": data})
			msgs = append(msgs, kafka.Message{Key: []byte(id), Value: b})
		}
	}
	// One content event of "gone": a rejection row with its tenant id.
	bad, _ := json.Marshal(map[string]any{"event_id": uuid.NewString(), "tenant_id": "gone", "occurred_at": now.Format(time.RFC3339), "schema": "feature_use/v1",
		"source": "web-app", "user": "taro.yamada@example.co.jp", "client": map[string]any{"os": "windows", "os_version": "11", "device_kind": "desktop"},
		"data": map[string]any{"feature_id": "app.record.create", "count": 1, "records_registered": 0}})
	msgs = append(msgs, kafka.Message{Key: []byte("gone"), Value: bad})
	if err := wr.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	wr.Close()
	for {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT (SELECT count() FROM "+db+".events) + (SELECT count() FROM "+db+".rejections WHERE class != 'checkpoint')").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if int(n) >= len(msgs) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the processor stored %d of %d", n, len(msgs))
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	r := policy.Retention{AfterContractEnd: 90 * 24 * time.Hour, EventStore: 395 * 24 * time.Hour, DLQ: 30 * 24 * time.Hour}
	log := audit.New(conn, db)
	// A support trace of the tenant was read: its audit record names the tenant.
	if _, err := log.Append(ctx, audit.Record{Principal: "helpdesk", Kind: "employee", Purpose: "support", Report: "support_trace",
		Tenant: "gone", Decision: audit.Allowed}); err != nil {
		t.Fatal(err)
	}
	k := retention.New(config.Config{}, retention.Deps{Conn: conn, Database: db, Registry: reg, Audit: log, Policy: r})
	before, err := k.Verify(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	holding := map[string]uint64{}
	for _, c := range before {
		holding[c.Table.String()] = c.Rows
	}
	for _, want := range []string{".events", ".rejections", "_registry.tenants", "_registry.consents", "_registry.tickets", "_keys.pseudonym_roots",
		"_support.trace", "_service_improvement.feature_daily", "_marketing.activity_daily",
		"_follow_up.tenant_weekly", "_interview_selection.tenant_daily", "_external_consented.tenant_daily"} {
		if holding[db+want] == 0 {
			t.Errorf("before deletion %s%s holds no row of the tenant: the test would prove nothing there", db, want)
		}
	}

	// Not yet due: the contract ends, the retention period has not passed.
	end := now.Truncate(24*time.Hour).AddDate(0, 0, -10)
	if _, err := reg.Update(ctx, "gone", func(x *registry.Tenant) error { x.Status, x.ContractEnd = registry.StatusTerminated, end; return nil }); err != nil {
		t.Fatal(err)
	}
	if rep, err := k.Run(ctx, now); err != nil || len(rep.Deleted) != 0 {
		t.Fatalf("run before the retention period: %+v %v", rep, err)
	}
	// 90 days after the contract end: due.
	rep, err := k.Run(ctx, end.Add(r.AfterContractEnd))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deleted) != 1 || rep.Deleted[0].Tenant != "gone" || rep.Deleted[0].Rows == 0 {
		t.Fatalf("deleted %+v", rep.Deleted)
	}
	after, err := k.Verify(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range after {
		if c.Rows != 0 {
			t.Errorf("after deletion %s holds %d rows of the tenant", c.Table, c.Rows)
		}
	}
	if len(after) < 15 {
		t.Errorf("verify looked at %d tables", len(after))
	}
	// The deletion named the tenant in no mutation (ClickHouse keeps their text, in ZooKeeper on
	// a cluster, where system.zookeeper shows it to any user), and its mark is gone.
	var named, mutations, marks uint64
	if err := conn.QueryRow(ctx, "SELECT countIf(position(command, 'gone') > 0), count() FROM system.mutations WHERE startsWith(database, ?)", db).Scan(&named, &mutations); err != nil {
		t.Fatal(err)
	}
	if named != 0 || mutations < 15 {
		t.Errorf("%d of %d mutations of the deletion name the tenant; want 0 of at least 15", named, mutations)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"_registry.deleting").Scan(&marks); err != nil || marks != 0 {
		t.Errorf("the deletion left %d marks (%v)", marks, err)
	}
	// The other tenant keeps every row (it had the same usage, minus the content event).
	stays, _ := k.Verify(ctx, "stays")
	for _, c := range stays {
		g := holding[c.Table.String()]
		if c.Table.Name == "rejections" {
			continue
		}
		if c.Rows == 0 && g > 0 {
			t.Errorf("the other tenant lost its rows in %s", c.Table)
		}
	}
	if _, err := reg.Get(ctx, "gone"); err == nil {
		t.Error("the registry still knows the deleted tenant")
	}
	// The receipt is in the audit log, and the chain holds.
	var reason, decisionText string
	if err := conn.QueryRow(ctx, "SELECT reason, decision FROM "+db+"_audit.audit_log WHERE report = 'tenant_deletion'").Scan(&reason, &decisionText); err != nil {
		t.Fatal(err)
	}
	if decisionText != "deleted" || !strings.Contains(reason, "tenant gone deleted") || !strings.Contains(reason, "pseudonymisation root destroyed") {
		t.Errorf("receipt %q %q", decisionText, reason)
	}
	if n, err := log.Verify(ctx); err != nil || n != 2 {
		t.Errorf("audit chain: %d %v", n, err)
	}
	// The audit log is the one exception (promise 8): who read the tenant's trace stays, and
	// the chain still verifies (above).
	var read uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"_audit.audit_log WHERE tenant_id = 'gone' AND report = 'support_trace'").Scan(&read); err != nil || read != 1 {
		t.Errorf("the audit record of the trace read: %d %v", read, err)
	}
	// A second run finds nothing more to do.
	if rep, err := k.Run(ctx, end.Add(r.AfterContractEnd)); err != nil || len(rep.Deleted) != 0 {
		t.Errorf("second run: %+v %v", rep, err)
	}

	// Periodic retention: a partition older than the event store keeps is dropped whole.
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".events (event_id, tenant_id, occurred_at, ingested_at, category, purposes)")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC)
	if err := b.Append(uuid.New(), "stays", old, old, "feature_use", uint16(0)); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	dropped, err := k.DropExpired(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(dropped, db+".events", "202403") {
		t.Errorf("dropped %+v, want events partition 202403", dropped)
	}
	if contains(dropped, db+".events", now.Format("200601")) {
		t.Errorf("dropped the current month: %+v", dropped)
	}
	var recent uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".events WHERE tenant_id = 'stays'").Scan(&recent); err != nil || recent != 20 {
		t.Errorf("stays' recent events: %d %v", recent, err)
	}
}

func contains(ds []retention.Dropped, table, part string) bool {
	for _, d := range ds {
		if d.Table == table && d.Partition == part {
			return true
		}
	}
	return false
}

// DeleteTenantTo and VerifyTenantTo, the commands' one calls: deleting an unknown tenant
// writes its receipt and fails, and what is left of it is nothing.
func TestDeleteAndVerifyTenantTo(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	cfg.Kafka.RawTopic, cfg.Kafka.DLQTopic = servicetest.Name(t, "raw."), servicetest.Name(t, "dlq.") // never created
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var b strings.Builder
	err := retention.DeleteTenantTo(ctx, &b, cfg, quiet, "nobody", "a test")
	if err == nil || err.Error() != `no row of tenant "nobody" was found (an unknown id, or one already deleted); its tombstone is recorded all the same` {
		t.Errorf("error: %v", err)
	}
	if !strings.HasPrefix(b.String(), "deleted nobody: 0 rows in 0 tables, pseudonymisation root destroyed; audit record ") {
		t.Errorf("receipt: %q", b.String())
	}
	b.Reset()
	if err := retention.VerifyTenantTo(ctx, &b, cfg, quiet, "nobody"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{" rows of nobody left in ", "kafka raw topic " + cfg.Kafka.RawTopic + ": does not exist"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("verify: no %q in\n%s", want, b.String())
		}
	}
}
