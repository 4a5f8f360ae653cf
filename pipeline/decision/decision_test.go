package decision

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

var now = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func testContext(t *testing.T, tenants ...*registry.Tenant) *Context {
	t.Helper()
	m, _ := pseudonym.ParseMasterKey(pseudonym.NewMasterKeyText())
	k := pseudonym.NewKeyring(m)
	for _, tn := range tenants {
		enc, _ := m.NewRoot(tn.ID)
		if err := k.Set(tn.ID, enc); err != nil {
			t.Fatal(err)
		}
	}
	v, err := policy.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	return &Context{
		Now: now, Limits: event.DefaultLimits(), Tenants: registry.NewSnapshot(tenants...),
		Keyring: k, Policy: NewPolicyTagger(v), HashKey: []byte("k"),
	}
}

func raw(t *testing.T, mutate func(map[string]any)) []byte {
	ev := map[string]any{
		"event_id": uuid.NewString(), "tenant_id": "acme", "occurred_at": now.Add(-time.Minute).Format(time.RFC3339),
		"schema": "feature_use/v1", "source": "web", "user": "u-1",
		"client": map[string]any{"os": "ios", "os_version": "17.4.1", "device_kind": "mobile"},
		"data":   map[string]any{"feature_id": "app.record.create", "count": 2, "records_registered": 1},
	}
	if mutate != nil {
		mutate(ev)
	}
	b, _ := json.Marshal(ev)
	return b
}

func TestDecide(t *testing.T) {
	acme := &registry.Tenant{ID: "acme", Status: "contracted", Edition: "standard", SizeBand: "m"}
	gone := &registry.Tenant{ID: "gone", Status: "terminated", Edition: "standard", SizeBand: "m"}
	c := testContext(t, acme, gone)

	tagged, rej := Decide(raw(t, nil), c)
	if rej != nil {
		t.Fatalf("good event rejected: %+v", rej)
	}
	if tagged.Event.User != "" {
		t.Error("the raw user id survived the decision")
	}
	want, _ := c.Keyring.Pseudonymize("acme", now.Add(-time.Minute), "u-1")
	if tagged.Pseudonym != want {
		t.Error("pseudonym is not the keyring's")
	}
	ps := policy.Set(tagged.Purposes)
	if tagged.PolicyVersion != 1 || !ps.Has(policy.ServiceImprovement) || !ps.Has(policy.ExternalAggregate) || ps.Has(policy.Support) || ps.Has(policy.ExternalConsented) {
		t.Errorf("feature_use of a contracted tenant tagged %s under v%d", ps, tagged.PolicyVersion)
	}

	f := func(name string, b []byte, reason event.Reason, class event.Class, keepsPayload bool) {
		t.Run(name, func(t *testing.T) {
			_, rej := Decide(b, c)
			if rej == nil {
				t.Fatal("accepted")
			}
			if rej.Reason != reason || rej.Class != class {
				t.Errorf("got %s/%s, want %s/%s", rej.Reason, rej.Class, reason, class)
			}
			if (rej.Payload != nil) != keepsPayload {
				t.Errorf("payload kept = %v, want %v", rej.Payload != nil, keepsPayload)
			}
			if rej.Hash == "" {
				t.Error("no keyed hash")
			}
		})
	}
	// Every refusal keeps its content-free form (keep_test.go checks what is in it), except a
	// message with no structure to keep.
	f("email as user", raw(t, func(m map[string]any) { m["user"] = "hanako@example.jp" }), "input_data.email", event.ClassInputData, true)
	f("malformed", []byte(`{"event_id":`), "malformed_json", event.ClassMalformed, false)
	f("not an object", []byte(`["a-1"]`), "wrong_type", event.ClassMalformed, false)
	f("unknown tenant", raw(t, func(m map[string]any) { m["tenant_id"] = "nobody" }), event.ReasonUnknownTenant, event.ClassPolicy, true)
	f("terminated tenant", raw(t, func(m map[string]any) { m["tenant_id"] = "gone" }), event.ReasonTerminated, event.ClassPolicy, false)

	// An email as tenant id must not be copied into the rejection's tenant field.
	_, rej = Decide(raw(t, func(m map[string]any) { m["tenant_id"] = "hanako@example.jp" }), c)
	if rej == nil || rej.Tenant != "" {
		t.Errorf("rejection carries the offending tenant id: %+v", rej)
	}
}

func TestPolicyTenantConsents(t *testing.T) {
	at := now.Add(-24 * time.Hour)
	rt := &registry.Tenant{ID: "acme", Status: "trial", Edition: "e", SizeBand: "s", Consents: []registry.Consent{
		{Purpose: "external_consented", PolicyVersion: 1, Given: true, At: at},
		{Purpose: "external_consented", PolicyVersion: 1, Given: false, At: at.Add(time.Hour)},
		{Purpose: ConsentToPolicy, PolicyVersion: 2, Given: true, At: at},
	}}
	pt := PolicyTenant(rt)
	if pt.Status != policy.Trial || len(pt.Consents) != 2 {
		t.Fatalf("%+v", pt)
	}
	if !pt.Consents[0].Purposes.Has(policy.ExternalConsented) || !pt.Consents[0].Withdrawn.Equal(at.Add(time.Hour)) {
		t.Errorf("purpose consent %+v", pt.Consents[0])
	}
	if !pt.Consents[1].Policy || pt.Consents[1].Version != 2 {
		t.Errorf("policy consent %+v", pt.Consents[1])
	}
}

func BenchmarkDecide(b *testing.B) {
	acme := &registry.Tenant{ID: "acme", Status: "contracted", Edition: "standard", SizeBand: "m"}
	c := testContext(&testing.T{}, acme)
	msg := raw(&testing.T{}, nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, rej := Decide(msg, c); rej != nil {
			b.Fatal(rej)
		}
	}
}

// A deleted tenant's events still in Kafka keep nothing: no payload, no tenant id, no user;
// an unknown tenant without a tombstone is still kept (for replay), with its id.
func TestDeletedTenantKeepsNothing(t *testing.T) {
	c := testContext(t)
	c.Tenants = c.Tenants.WithTombstones(TenantTombstone(c.HashKey, "acme"))
	b := raw(t, nil)
	_, rej := Decide(b, c)
	if rej == nil || rej.Reason != event.ReasonDeleted || rej.Class != event.ClassPolicy {
		t.Fatalf("a deleted tenant's event: %+v, want %s", rej, event.ReasonDeleted)
	}
	if rej.Tenant != "" || rej.Payload != nil || rej.Hash == "" {
		t.Errorf("a deleted tenant's refusal keeps tenant %q, payload %q (hash %q): want none, none, a hash", rej.Tenant, rej.Payload, rej.Hash)
	}
	other := raw(t, func(ev map[string]any) { ev["tenant_id"] = "newco" })
	if _, rej := Decide(other, c); rej == nil || rej.Reason != event.ReasonUnknownTenant || rej.Tenant != "newco" || rej.Payload == nil {
		t.Errorf("an unknown tenant without a tombstone: %+v, want unknown_tenant with its id and content-free payload", rej)
	}
	if TenantTombstone([]byte("k"), "acme") == TenantTombstone([]byte("other key"), "acme") || TenantTombstone(c.HashKey, "acme") == TenantTombstone(c.HashKey, "acme2") {
		t.Error("the tombstone must depend on the key and the id")
	}
}

// A raw-topic message keyed by another tenant than its own is refused, whatever it holds; one
// keyed by its tenant goes through as Decide decides; a refusal for another reason keeps that
// reason.
func TestDecideMessageKeyIsTenant(t *testing.T) {
	acme := &registry.Tenant{ID: "acme", Status: "contracted", Edition: "standard", SizeBand: "m"}
	globex := &registry.Tenant{ID: "globex", Status: "contracted", Edition: "standard", SizeBand: "m"}
	c := testContext(t, acme, globex)
	if _, rej := DecideMessage([]byte("acme"), raw(t, nil), c); rej != nil {
		t.Fatalf("keyed by its tenant: %+v", rej)
	}
	for _, key := range []string{"globex", "", "ACME", "acme "} {
		_, rej := DecideMessage([]byte(key), raw(t, nil), c)
		if rej == nil || rej.Reason != event.ReasonKeyMismatch || rej.Class != event.ClassMalformed || rej.Tenant != "acme" || rej.Payload == nil {
			t.Errorf("keyed %q: %+v", key, rej)
			continue
		}
		if bytes.Contains(rej.Payload, []byte("u-1")) {
			t.Errorf("keyed %q: the refusal keeps the raw user: %s", key, rej.Payload)
		}
	}
	if _, rej := DecideMessage([]byte("globex"), raw(t, func(m map[string]any) { m["user"] = "hanako@example.jp" }), c); rej == nil || rej.Reason != "input_data.email" {
		t.Errorf("content under another tenant's key: %+v", rej)
	}
}

// A deleted tenant's event under another tenant's key is refused as deleted, keeping neither
// payload nor tenant id: the key check comes after the decision, never before it.
func TestDecideMessageDeletedBeforeKey(t *testing.T) {
	acme := &registry.Tenant{ID: "acme", Status: "contracted", Edition: "standard", SizeBand: "m"}
	c := testContext(t, acme)
	c.Tenants = c.Tenants.WithTombstones(TenantTombstone(c.HashKey, "gone"))
	_, rej := DecideMessage([]byte("acme"), raw(t, func(m map[string]any) { m["tenant_id"] = "gone" }), c)
	if rej == nil || rej.Reason != event.ReasonDeleted || rej.Tenant != "" || rej.Payload != nil {
		t.Errorf("a deleted tenant's event under another key: %+v", rej)
	}
}

// A tenant whose deletion has begun (tombstoned, its registry row still there) has its events
// refused as deleted, and a refusal of any other reason keeps neither its id nor a payload.
func TestBeingDeletedKeepsNothing(t *testing.T) {
	acme := &registry.Tenant{ID: "acme", Status: "contracted", Edition: "standard", SizeBand: "m", Tombstoned: true}
	c := testContext(t, acme)
	if _, rej := DecideMessage([]byte("acme"), raw(t, nil), c); rej == nil || rej.Reason != event.ReasonDeleted || rej.Tenant != "" || rej.Payload != nil {
		t.Errorf("a good event of a tenant being deleted: %+v", rej)
	}
	_, rej := DecideMessage([]byte("acme"), raw(t, func(m map[string]any) { m["user"] = "hanako@example.jp" }), c)
	if rej == nil || rej.Reason != "input_data.email" || rej.Tenant != "" || rej.Payload != nil {
		t.Errorf("content of a tenant being deleted: %+v", rej)
	}
	acme.Tombstoned = false
	if _, rej := DecideMessage([]byte("acme"), raw(t, func(m map[string]any) { m["user"] = "hanako@example.jp" }), c); rej == nil || rej.Tenant != "acme" {
		t.Errorf("a refusal of a live tenant keeps its id: %+v", rej)
	}
}
