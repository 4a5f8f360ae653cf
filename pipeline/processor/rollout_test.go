package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

// A policy rollout with mixed consent (clause 4): v2 (which adds per-tenant operation
// summaries for external_consented, with consent) is activated with 'policy activate' while
// the processor runs. Tenant a consented to v2 before the activation, tenant c consented after
// it, tenant b never: a's events collected after the activation are tagged v2 with the new
// purpose; b's stay on v1; c's switch only at its consent, and its earlier events stay v1.
func TestPolicyRolloutWithMixedConsent(t *testing.T) {
	r := newRig(t, 0)
	ctx := context.Background()
	reg := registry.New(r.conn, r.db, r.master)
	for _, id := range []string{"ten-a", "ten-b", "ten-c"} {
		if _, err := reg.Add(ctx, registry.Tenant{ID: id, Status: registry.StatusContracted, Edition: "standard", SizeBand: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	activation := now.Add(3 * time.Second)
	consentC := activation.Add(2 * time.Second)
	consent := func(id string, at time.Time) {
		for _, p := range []string{decision.ConsentToPolicy, "external_consented"} {
			if err := reg.Consent(ctx, id, p, 2, true, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	consent("ten-a", now.Add(-10*time.Minute))
	consent("ten-c", consentC)

	// The processor follows the recorded activations through its registry cache.
	vs, err := policy.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	r.cache.Follow(vs)
	r.policy = decision.NewPolicyTagger(vs)
	if err := r.cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	p := r.processor(prometheus.NewRegistry())
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	go func() { _ = r.cache.Run(runCtx) }() // as the processor role runs it: refresh every second
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	if _, err := reg.ActivatePolicy(ctx, 2, now.Add(-time.Hour), "test"); err == nil || !strings.Contains(err.Error(), "in the past") {
		t.Errorf("activation in the past: %v", err)
	}
	if _, err := reg.ActivatePolicy(ctx, 3, activation, "test"); err == nil {
		t.Error("a version not built in was activated")
	}
	if _, err := reg.ActivatePolicy(ctx, 2, activation, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.ActivatePolicy(ctx, 2, activation.Add(time.Hour), "test"); err == nil {
		t.Error("an activation time moved")
	}
	// Events are collected at these times; produce them once all lie in the past.
	before, between, after := now.Add(-5*time.Minute), activation.Add(time.Second), consentC.Add(time.Second)
	time.Sleep(time.Until(after) + 1500*time.Millisecond)

	wr := &kafka.Writer{Addr: kafka.TCP(r.cfg.Kafka.Brokers...), Topic: r.cfg.Kafka.RawTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll}
	defer wr.Close()
	var msgs []kafka.Message
	for _, id := range []string{"ten-a", "ten-b", "ten-c"} {
		for _, at := range []time.Time{before, between, after} {
			b, _ := json.Marshal(map[string]any{
				"event_id": uuid.NewString(), "tenant_id": id, "occurred_at": at.Format(time.RFC3339), "schema": "operation/v1",
				"source": "web-app", "user": "u-1", "client": map[string]any{"os": "windows", "os_version": "11", "device_kind": "desktop"},
				"data": map[string]any{"operation_id": "record.save", "app_id": "sheets", "result_code": "ok", "request_id": "0123456789abcdef0123"},
			})
			msgs = append(msgs, kafka.Message{Key: []byte(id), Value: b})
		}
	}
	if err := wr.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	r.waitAccounted(t, len(msgs), time.Minute)

	rows, err := r.conn.Query(ctx, "SELECT tenant_id, occurred_at, policy_version, "+policy.ExternalConsented.SQL("purposes")+" FROM "+r.db+".events ORDER BY tenant_id, occurred_at")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var id string
		var at time.Time
		var v uint16
		var shared bool
		if err := rows.Scan(&id, &at, &v, &shared); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s v%d external_consented=%v", id, map[time.Time]string{before: "before", between: "between", after: "after"}[at.UTC()], v, shared))
	}
	rows.Close()
	want := []string{
		"ten-a before v1 external_consented=false", // collected before the activation
		"ten-a between v2 external_consented=true",
		"ten-a after v2 external_consented=true",
		"ten-b before v1 external_consented=false", // never consented: v1 throughout
		"ten-b between v1 external_consented=false",
		"ten-b after v1 external_consented=false",
		"ten-c before v1 external_consented=false",
		"ten-c between v1 external_consented=false", // collected before its consent
		"ten-c after v2 external_consented=true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stored events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The external_consented mart holds the consented tenants' v2 operations only.
	var inMart uint64
	if err := r.conn.QueryRow(ctx, "SELECT count() FROM "+r.db+"_external_consented.tenant_daily WHERE tenant_id = 'ten-b'").Scan(&inMart); err != nil || inMart != 0 {
		t.Errorf("ten-b in the external_consented mart: %d %v", inMart, err)
	}
}
