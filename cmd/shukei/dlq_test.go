package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/pipeline/dlq"
)

// 'shukei dlq stats|show|replay' on the real services, through the cobra command.
func TestDLQCommand(t *testing.T) {
	raw, dlqTopic := ownServices(t)
	if out, err := runCLI(t, "migrate"); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "topics"); err != nil {
		t.Fatalf("topics: %v\n%s", err, out)
	}
	cfg := config.Default()
	if err := cfg.ApplyEnv(os.Environ()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	id, stored := uuid.NewString(), uuid.NewString()
	at := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339)
	payload := func(id string) string {
		return fmt.Sprintf(`{"event_id":%q,"tenant_id":"acme","occurred_at":%q,"schema":"app_access/v1","source":"web-sdk","client":{"os":"linux","device_kind":"desktop"},"data":{"app_id":"crm","action":"open"}}`, id, at)
	}
	hdr := func(reason, class, field, eventID, kept string) []kafka.Header {
		return []kafka.Header{{Key: "reason", Value: []byte(reason)}, {Key: "class", Value: []byte(class)}, {Key: "field", Value: []byte(field)},
			{Key: "tenant_id", Value: []byte("acme")}, {Key: "schema", Value: []byte("app_access/v1")}, {Key: "event_id", Value: []byte(eventID)},
			{Key: "payload_hmac", Value: []byte(strings.Repeat("0f", 32))}, {Key: "kept", Value: []byte(kept)}}
	}
	w := &kafka.Writer{Addr: kafka.TCP(cfg.Kafka.Brokers...), Topic: dlqTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	err := w.WriteMessages(ctx,
		kafka.Message{Key: []byte(raw + "/0/7"), Value: []byte(payload(id)), Headers: hdr("unknown_tenant", "policy", "", id, "payload")},
		kafka.Message{Key: []byte(raw + "/1/8"), Value: []byte(payload(stored)), Headers: hdr("unknown_tenant", "policy", "", stored, "payload")},
		kafka.Message{Key: []byte(raw + "/1/9"), Headers: hdr("input_data.email", "input_data", "data.app_id", uuid.NewString(), "metadata")},
		kafka.Message{Key: []byte("not-a-key"), Headers: hdr("unknown_tenant", "policy", "", "", "metadata")},
	)
	_ = w.Close()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(cfg.ClickHouse.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+cfg.ClickHouse.Database+".events (event_id, tenant_id, occurred_at, ingested_at, category)")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := b.Append(uuid.MustParse(stored), "acme", now, now, "app_access"); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}

	out, err := runCLI(t, "dlq", "stats", "--by", "reason,field", "--json")
	if err != nil {
		t.Fatalf("dlq stats: %v\n%s", err, out)
	}
	var st dlq.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("dlq stats --json: %v\n%s", err, out)
	}
	if st.Records != 3 || st.Malformed["bad_key"] != 1 || len(st.Groups) != 2 || st.Groups[0].Records != 2 || st.Groups[0].Keys["reason"] != "unknown_tenant" ||
		st.Groups[1].Keys["field"] != "data.app_id" {
		t.Errorf("dlq stats --json:\n%s", out)
	}
	out, err = runCLI(t, "dlq", "stats", "--since", "1d")
	t.Logf("shukei dlq stats --since 1d:\n%s", out)
	if err != nil || !strings.Contains(out, "REASON") || !strings.Contains(out, "unknown_tenant") || !strings.Contains(out, "1 malformed records") || strings.Contains(out, "crm") {
		t.Errorf("dlq stats: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "dlq", "stats", "--by", "payload"); err == nil {
		t.Error("dlq stats --by payload was accepted")
	}

	out, err = runCLI(t, "dlq", "show", raw+"/0/7")
	t.Logf("shukei dlq show:\n%s", out)
	if err != nil || !strings.Contains(out, `"app_id": "crm"`) || !strings.Contains(out, "kept          payload") {
		t.Errorf("dlq show (kept):\n%s %v", out, err)
	}
	out, err = runCLI(t, "dlq", "show", raw+"/1/9")
	if err != nil || !strings.Contains(out, "payload not kept (metadata only)") || !strings.Contains(out, "field         data.app_id") {
		t.Errorf("dlq show (metadata):\n%s %v", out, err)
	}
	if out, err := runCLI(t, "dlq", "show", raw+"/01/9"); err == nil {
		t.Errorf("dlq show with a non-canonical key: %s", out)
	}
	if _, err := runCLI(t, "dlq", "show", raw+"/0/99"); err == nil || !strings.Contains(err.Error(), "no DLQ record") {
		t.Errorf("dlq show of a missing key: %v", err)
	}

	out, err = runCLI(t, "dlq", "replay", "--reason", "unknown_tenant")
	t.Logf("shukei dlq replay --reason unknown_tenant:\n%s", out)
	if err != nil {
		t.Fatalf("dlq replay: %v\n%s", err, out)
	}
	for _, want := range []string{"eligible  1", "replayed  1", "already_stored", "1 of them without a kept user", "audit record #1"} {
		if !strings.Contains(out, want) {
			t.Errorf("dlq replay output lacks %q:\n%s", want, out)
		}
	}
	var got []kafka.Message
	if _, err := (dlq.Source{Brokers: cfg.Kafka.Brokers, Topic: raw}).Scan(ctx, time.Time{}, nil, func(m kafka.Message) error {
		got = append(got, m)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Key) != "acme" || !strings.Contains(string(got[0].Value), `"user":"`+dlq.NilUser+`"`) || !strings.Contains(string(got[0].Value), id) {
		t.Errorf("raw topic after the replay: %d messages %v", len(got), got)
	}
	recs, err := audit.New(conn, cfg.ClickHouse.Database).Report(ctx, dlq.OperatorPrincipal(), now.Format("2006-01"))
	if err != nil || len(recs) != 1 || !strings.HasPrefix(recs[0].Principal, "operator:") || recs[0].Report != "dlq_replay" || recs[0].Decision != audit.Allowed {
		t.Errorf("audit record of the replay: %+v %v", recs, err)
	}
	if n, err := audit.New(conn, cfg.ClickHouse.Database).Verify(ctx); err != nil || n != 1 {
		t.Errorf("audit chain: %d %v", n, err)
	}
}
