package dlq

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/event"
)

// FuzzParse feeds arbitrary keys, header values and values to the parser. Whatever comes in,
// Parse must not panic, must answer a *Malformed or a record whose every printed field passed
// its check, and the record must survive Prepare and WriteRecord; a key that parses must print
// back as itself.
func FuzzParse(f *testing.F) {
	f.Add("usage.raw/3/17", "unknown_tenant", "policy", "", "acme", "feature_use/v1", "3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f", strings.Repeat("ab", 32), "payload", []byte(payloadNoUser), uint8(0))
	f.Add("usage.raw/0/0", "input_data.email", "input_data", "data.feature_id", "acme", "", "", "", "metadata", []byte(nil), uint8(0))
	f.Add("usage.raw/0/1", "invalid_field", "malformed", "data.*", "", "", "", "", "payload", []byte(`{"user":"hmac-sha256:00","a":[{"b":"hmac\u002dsha256:x"}]}`), uint8(0))
	f.Add("x/01/2", "r", "duplicate", "", "", "", "", "", "", []byte("{}"), uint8(0x80))
	f.Add("a/b/c", "", "", "", "", "", "", "", "payload", []byte("{"), uint8(0x07))
	f.Add("t/1/1", "no_purpose", "policy", "", "t", "tenant_profile/v1", "", "", "payload", []byte(` {} `), uint8(0))
	f.Fuzz(func(t *testing.T, key, reason, class, field, tenant, schema, eventID, hmac, kept string, value []byte, omit uint8) {
		vals := []string{reason, class, field, tenant, schema, eventID, hmac, kept}
		keys := []string{HeaderReason, HeaderClass, HeaderField, HeaderTenant, HeaderSchema, HeaderEventID, HeaderPayloadHMAC, HeaderKept}
		var hs []kafka.Header
		for i, k := range keys {
			if omit&(1<<i) == 0 {
				hs = append(hs, kafka.Header{Key: k, Value: []byte(vals[i])})
			}
		}
		if omit&1 != 0 && len(vals[0]) > 0 { // a repeated header instead of a missing one
			hs = append(hs, kafka.Header{Key: HeaderReason, Value: []byte(vals[0])}, kafka.Header{Key: HeaderReason, Value: []byte(vals[0])})
		}
		m := kafka.Message{Key: []byte(key), Value: value, Headers: hs}
		r, err := Parse(m)
		if err != nil {
			var mal *Malformed
			if !errors.As(err, &mal) || mal.Code == "" {
				t.Fatalf("Parse error %T %v is not a *Malformed with a code", err, err)
			}
			if strings.ContainsAny(mal.Code, " \n\"") {
				t.Fatalf("malformed code %q is not an identifier", mal.Code)
			}
			// A malformed record is still counted, never shown.
			st := NewStats(Dims)
			st.Add(m)
			if st.MalformedTotal() != 1 || st.Records != 0 {
				t.Fatalf("a malformed record was not counted as malformed: %+v", st)
			}
			return
		}
		if r.Key.String() != key {
			t.Fatalf("key %q parsed as %+v, which prints as %q", key, r.Key, r.Key.String())
		}
		if !validReason(r.Reason) || !validClass(r.Class) || !validField(r.Field) ||
			(r.Tenant != "" && !event.IsID(r.Tenant)) || (r.EventID != "" && !event.IsUUID(r.EventID)) {
			t.Fatalf("Parse let an unchecked header through: %+v", r)
		}
		switch r.Kept {
		case KeptPayload:
			if !isJSONObject(r.Payload) {
				t.Fatalf("kept payload is not a JSON object: %q", r.Payload)
			}
		case KeptMetadata, KeptLegacy:
			if r.Payload != nil {
				t.Fatalf("kept=%s with a payload", r.Kept)
			}
		default:
			t.Fatalf("kept %q", r.Kept)
		}
		if err := WriteRecord(io.Discard, Found{Record: r}); err != nil {
			t.Fatalf("WriteRecord: %v", err)
		}
		c, skip := Prepare(r)
		if skip != "" {
			return
		}
		var obj map[string]any
		if err := json.Unmarshal(c.Value, &obj); err != nil {
			t.Fatalf("replay value is not a JSON object: %v: %q", err, c.Value)
		}
		if bytes.Contains(c.Value, []byte(Marker)) || holdsMarker(obj) {
			t.Fatalf("replay value holds the marker: %q", c.Value)
		}
		if !event.IsEventID(c.EventID) || !event.IsID(c.Tenant) || obj["event_id"] != c.EventID || obj["tenant_id"] != c.Tenant {
			t.Fatalf("candidate %+v does not match its value %q", c, c.Value)
		}
		if c.NilUser && obj["user"] != NilUser {
			t.Fatalf("nil user announced but not in %q", c.Value)
		}
	})
}
