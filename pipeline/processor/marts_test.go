package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/policy"
)

// mixed returns a valid event of each category in turn.
func mixed(i int, tenant string, rnd *rand.Rand, now time.Time) map[string]any {
	ev := good(tenant, rnd, now)
	switch i % 5 {
	case 1:
		ev["schema"] = "app_access/v1"
		ev["data"] = map[string]any{"app_id": "expense-claims", "action": "open"}
	case 2:
		ev["schema"] = "operation/v1"
		ev["data"] = map[string]any{"operation_id": "record.save", "app_id": "expense-claims", "result_code": "permission_denied", "request_id": "9f86d081884c7d65"}
	case 3:
		ev["schema"] = "settings/v1"
		ev["data"] = map[string]any{"setting_key": "notification.digest", "value": "weekly", "customization_present": true, "customization_count": 3}
	case 4:
		ev["schema"] = "tenant_profile/v1"
		delete(ev, "user")
		ev["data"] = map[string]any{"user_count": 120, "organization_count": 4}
	}
	return ev
}

// The purpose marts fill as batches are stored, each with only the rows its purpose bit
// allows, and with the same totals as the event store.
func TestPurposeMartsFollowTheStore(t *testing.T) {
	r := newRig(t, 6)
	rnd := rand.New(rand.NewPCG(3, 3))
	now := time.Now()
	var msgs []kafka.Message
	for i := range 5000 {
		tenant := r.tenants[i%len(r.tenants)]
		b, _ := json.Marshal(mixed(i, tenant, rnd, now))
		msgs = append(msgs, kafka.Message{Key: []byte(tenant), Value: b})
	}
	w := &kafka.Writer{Addr: kafka.TCP(r.cfg.Kafka.Brokers...), Topic: r.cfg.Kafka.RawTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	p := r.processor(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	r.waitAccounted(t, len(msgs), 2*time.Minute)
	cancel()
	<-done

	q := func(sql string) uint64 {
		t.Helper()
		var n uint64
		if err := r.conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return n
	}
	db := r.db
	ev, rej, reasons := r.counts(t)
	if ev != 5000 || rej != 0 {
		t.Fatalf("stored %d, rejected %d %v; want all 5000 stored", ev, rej, reasons)
	}
	// Each mart is read until it equals the store, for at most 10 s: once (in one CI run of
	// many) two marts read 0 just after the store held every event, and equal a moment later
	// is what the marts promise; a mart that never equals the store still fails.
	f := func(name, martSQL, storeSQL string) {
		t.Run(name, func(t *testing.T) {
			var mart, store uint64
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				mart, store = q(martSQL), q(storeSQL)
				if mart != 0 && mart == store || time.Now().After(deadline) {
					break
				}
			}
			if mart == 0 || mart != store {
				t.Errorf("mart says %d, store says %d", mart, store)
			}
		})
	}
	f("support traces = events tagged support",
		"SELECT count() FROM "+db+"_support.trace",
		"SELECT count() FROM "+db+".events WHERE "+policy.Support.SQL("purposes"))
	f("support sees operations",
		"SELECT count() FROM "+db+"_support.trace WHERE category = 'operation'",
		"SELECT count() FROM "+db+".events WHERE category = 'operation'")
	f("service_improvement uses",
		"SELECT sumMerge(uses) FROM "+db+"_service_improvement.feature_daily",
		"SELECT sum(if(category = 'feature_use', use_count, 1)) FROM "+db+".events WHERE "+policy.ServiceImprovement.SQL("purposes")+" AND category IN ('feature_use', 'app_access')")
	f("service_improvement distinct users of a feature",
		"SELECT uniqMerge(users) FROM "+db+"_service_improvement.feature_daily WHERE feature = 'app.record.create'",
		"SELECT uniq(user_pseudonym) FROM "+db+".events WHERE feature_id = 'app.record.create' AND "+policy.ServiceImprovement.SQL("purposes"))
	f("marketing events",
		"SELECT sumMerge(events) FROM "+db+"_marketing.activity_daily",
		"SELECT count() FROM "+db+".events WHERE "+policy.Marketing.SQL("purposes")+" AND category IN ('feature_use', 'app_access', 'tenant_profile')")
	f("follow_up events",
		"SELECT sumMerge(events) FROM "+db+"_follow_up.tenant_daily",
		"SELECT count() FROM "+db+".events WHERE "+policy.FollowUp.SQL("purposes"))
	f("interview_selection events",
		"SELECT sumMerge(events) FROM "+db+"_interview_selection.tenant_daily",
		"SELECT count() FROM "+db+".events WHERE "+policy.InterviewSelection.SQL("purposes"))
	// No tenant in this rig consented to external sharing: that mart stays empty.
	if n := q("SELECT count() FROM " + db + "_external_consented.tenant_daily"); n != 0 {
		t.Errorf("external_consented mart holds %d rows without any consent", n)
	}
	// Data minimisation: settings never reach support, operations never reach marketing.
	for _, c := range []struct{ sql, what string }{
		{"SELECT count() FROM " + db + "_support.trace WHERE category IN ('settings', 'feature_use', 'tenant_profile')", "support sees settings, feature use or tenant profiles"},
		{"SELECT count() FROM " + db + "_marketing.activity_daily WHERE category IN ('operation', 'settings', 'client_env')", "marketing sees operations, settings or client environments"},
	} {
		if n := q(c.sql); n != 0 {
			t.Errorf("%s: %d rows", c.what, n)
		}
	}
	// No mart outside support has a column that could carry a user or a single request.
	for _, m := range [][2]string{{"_service_improvement", "feature_daily"}, {"_marketing", "activity_daily"}, {"_follow_up", "tenant_daily"}, {"_interview_selection", "tenant_daily"}, {"_external_consented", "tenant_daily"}} {
		if n := q(fmt.Sprintf("SELECT count() FROM system.columns WHERE database = '%s' AND table = '%s' AND name IN ('user_pseudonym', 'user', 'request_id', 'event_id')", db+m[0], m[1])); n != 0 {
			t.Errorf("%s%s.%s has per-user or per-request columns", db, m[0], m[1])
		}
	}
}
