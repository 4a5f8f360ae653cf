package dlq

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func TestParseKey(t *testing.T) {
	good := []struct {
		in   string
		want Position
	}{
		{"usage.raw/0/0", Position{"usage.raw", 0, 0}},
		{"usage.raw/5/1042", Position{"usage.raw", 5, 1042}},
		{"test.raw_x-1/2147483647/9223372036854775807", Position{"test.raw_x-1", 2147483647, 9223372036854775807}},
	}
	for _, c := range good {
		got, err := ParseKey(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseKey(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if got.String() != c.in {
			t.Errorf("ParseKey(%q).String() = %q", c.in, got.String())
		}
	}
	for _, in := range []string{
		"", "usage.raw", "usage.raw/1", "/1/2", "usage.raw//2", "usage.raw/1/", "usage.raw/01/2", "usage.raw/1/02",
		"usage.raw/-1/2", "usage.raw/+1/2", "usage.raw/1/-2", "usage.raw/2147483648/1", "usage.raw/1/9223372036854775808",
		"usage raw/1/2", "a/b/1/2", "usage.raw/1/2 ", "../1/2", "./1/2", "usage.raw/1/0x10", "usage.raw/１/2",
		strings.Repeat("t", 250) + "/1/2",
	} {
		if p, err := ParseKey(in); err == nil {
			t.Errorf("ParseKey(%q) = %+v, want an error", in, p)
		}
	}
}

// msg builds a DLQ message as the processor writes it; hdr overrides or (with value "\x00")
// removes headers.
func msg(key string, value string, hdr map[string]string) kafka.Message {
	h := map[string]string{
		HeaderReason: "unknown_tenant", HeaderClass: ClassPolicy, HeaderField: "", HeaderTenant: "acme",
		HeaderSchema: "feature_use/v1", HeaderEventID: "3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f",
		HeaderPayloadHMAC: strings.Repeat("ab", 32), HeaderKept: KeptPayload,
	}
	if value == "" {
		h[HeaderKept] = KeptMetadata
	}
	for k, v := range hdr {
		h[k] = v
	}
	var hs []kafka.Header
	for _, k := range []string{HeaderReason, HeaderClass, HeaderField, HeaderTenant, HeaderSchema, HeaderEventID, HeaderPayloadHMAC, HeaderKept} {
		if v := h[k]; v != "\x00" {
			hs = append(hs, kafka.Header{Key: k, Value: []byte(v)})
		}
	}
	var v []byte
	if value != "" {
		v = []byte(value)
	}
	return kafka.Message{Key: []byte(key), Value: v, Headers: hs, Time: time.Date(2025, 6, 1, 23, 30, 0, 0, time.FixedZone("x", -3*3600))}
}

const payloadNoUser = `{"event_id":"3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f","tenant_id":"acme","occurred_at":"2025-06-01T10:00:00Z","schema":"feature_use/v1","source":"web-sdk","client":{"os":"windows","device_kind":"desktop"},"data":{"feature_id":"app.view.list","count":1}}`

func TestParse(t *testing.T) {
	r, err := Parse(msg("usage.raw/3/17", payloadNoUser, nil))
	if err != nil {
		t.Fatal(err)
	}
	if r.Key != (Position{"usage.raw", 3, 17}) || r.Reason != "unknown_tenant" || r.Class != ClassPolicy || r.Tenant != "acme" ||
		r.Kept != KeptPayload || string(r.Payload) != payloadNoUser {
		t.Errorf("Parse = %+v", r)
	}
	r, err = Parse(msg("usage.raw/3/18", "", map[string]string{HeaderReason: "input_data.email", HeaderClass: ClassInputData, HeaderField: "data.feature_id"}))
	if err != nil || r.Kept != KeptMetadata || r.Payload != nil || r.Field != "data.feature_id" {
		t.Errorf("metadata record: %+v, %v", r, err)
	}
	r, err = Parse(msg("usage.raw/3/19", "not json at all", map[string]string{HeaderKept: "\x00"}))
	if err != nil || r.Kept != KeptLegacy || r.Payload != nil {
		t.Errorf("legacy record: %+v, %v; want kept=legacy and no payload", r, err)
	}
	// Extra headers a later processor may add are ignored.
	m := msg("usage.raw/3/20", "", nil)
	m.Headers = append(m.Headers, kafka.Header{Key: "trace", Value: []byte("x")})
	if _, err := Parse(m); err != nil {
		t.Errorf("an extra header made the record malformed: %v", err)
	}

	bad := []struct {
		name string
		m    kafka.Message
		code string
	}{
		{"bad key", msg("garbage", "", nil), "bad_key"},
		{"no key", msg("", "", nil), "bad_key"},
		{"missing reason", msg("r/0/1", "", map[string]string{HeaderReason: "\x00"}), "missing_header.reason"},
		{"missing class", msg("r/0/1", "", map[string]string{HeaderClass: "\x00"}), "missing_header.class"},
		{"missing hmac", msg("r/0/1", "", map[string]string{HeaderPayloadHMAC: "\x00"}), "missing_header.payload_hmac"},
		{"empty reason", msg("r/0/1", "", map[string]string{HeaderReason: ""}), "bad_header.reason"},
		{"content in reason", msg("r/0/1", "", map[string]string{HeaderReason: "jane@example.com"}), "bad_header.reason"},
		{"unknown class", msg("r/0/1", "", map[string]string{HeaderClass: "checkpoint"}), "bad_header.class"},
		{"content in field", msg("r/0/1", "", map[string]string{HeaderField: "data.Jane Doe"}), "bad_header.field"},
		{"content in tenant", msg("r/0/1", "", map[string]string{HeaderTenant: "Jane Doe"}), "bad_header.tenant_id"},
		{"bad schema", msg("r/0/1", "", map[string]string{HeaderSchema: "feature use"}), "bad_header.schema"},
		{"bad event id", msg("r/0/1", "", map[string]string{HeaderEventID: "X"}), "bad_header.event_id"},
		{"bad hmac", msg("r/0/1", "", map[string]string{HeaderPayloadHMAC: "not hex"}), "bad_header.payload_hmac"},
		{"bad kept", msg("r/0/1", "", map[string]string{HeaderKept: "all"}), "bad_header.kept"},
		{"kept payload but empty", msg("r/0/1", "", map[string]string{HeaderKept: KeptPayload}), "bad_payload"},
		{"kept payload not json", msg("r/0/1", "hello", nil), "bad_payload"},
		{"kept payload an array", msg("r/0/1", `[1]`, nil), "bad_payload"},
		{"kept payload truncated", msg("r/0/1", `{"a":`, nil), "bad_payload"},
		{"metadata with a value", msg("r/0/1", `{}`, map[string]string{HeaderKept: KeptMetadata}), "unexpected_payload"},
	}
	for _, c := range bad {
		_, err := Parse(c.m)
		var mal *Malformed
		if !errors.As(err, &mal) || mal.Code != c.code {
			t.Errorf("%s: Parse error %v, want code %s", c.name, err, c.code)
			continue
		}
		// The error names what is wrong, never what the record holds.
		for _, h := range c.m.Headers {
			if h.Key != HeaderKept && len(h.Value) > 3 && strings.Contains(err.Error(), string(h.Value)) {
				t.Errorf("%s: the error quotes the header %s: %v", c.name, h.Key, err)
			}
		}
	}
	rep := msg("r/0/1", "", nil)
	rep.Headers = append(rep.Headers, kafka.Header{Key: HeaderReason, Value: []byte("no_purpose")})
	if _, err := Parse(rep); err == nil || err.(*Malformed).Code != "repeated_header.reason" {
		t.Errorf("a repeated header: %v", err)
	}
}

func TestEligibility(t *testing.T) {
	rec := func(payload string, hdr map[string]string) Record {
		r, err := Parse(msg("usage.raw/0/1", payload, hdr))
		if err != nil {
			t.Fatalf("%s: %v", payload, err)
		}
		return r
	}
	// A user-level event without user gets the nil user, as its first member; the rest is
	// unchanged byte for byte.
	c, skip := Prepare(rec(payloadNoUser, nil))
	if skip != "" || !c.NilUser || c.EventID != "3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f" || c.Tenant != "acme" {
		t.Fatalf("Prepare = %+v, %q", c, skip)
	}
	if want := `{"user":"` + NilUser + `",` + payloadNoUser[1:]; string(c.Value) != want {
		t.Errorf("value with the nil user:\n%s\nwant\n%s", c.Value, want)
	}
	var m map[string]any
	if err := json.Unmarshal(c.Value, &m); err != nil || m["user"] != NilUser {
		t.Errorf("value is not JSON with the nil user: %v %v", m, err)
	}

	// A kept user (a pseudonym) stays; so does a payload with a user of another form.
	withUser := strings.Replace(payloadNoUser, `"source"`, `"user":"0123456789abcdef0123456789abcdef","source"`, 1)
	if c, skip := Prepare(rec(withUser, nil)); skip != "" || c.NilUser || string(c.Value) != withUser {
		t.Errorf("payload with user: %+v, %q", c, skip)
	}
	// tenant_profile/v1 has no user and gets none.
	profile := `{"event_id":"3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f","tenant_id":"acme","occurred_at":"2025-06-01T10:00:00Z","schema":"tenant_profile/v1","source":"batch","data":{"user_count":12}}`
	if c, skip := Prepare(rec(profile, map[string]string{HeaderSchema: "tenant_profile/v1"})); skip != "" || c.NilUser || string(c.Value) != profile {
		t.Errorf("tenant profile: %+v, %q", c, skip)
	}
	// A newer version of a user-level category is user-level too.
	v2 := strings.Replace(payloadNoUser, "feature_use/v1", "feature_use/v2", 1)
	if c, skip := Prepare(rec(v2, map[string]string{HeaderSchema: ""})); skip != "" || !c.NilUser {
		t.Errorf("feature_use/v2 without user: %+v, %q", c, skip)
	}

	hashed := strings.Replace(payloadNoUser, `"app.view.list"`, `"hmac-sha256:0123456789abcdef0123456789abcdef"`, 1)
	escaped := strings.Replace(payloadNoUser, `"app.view.list"`, `"hmac\u002dsha256:0123456789abcdef0123456789abcdef"`, 1)
	hashedKey := strings.Replace(payloadNoUser, `"count":1`, `"count":1,"hmac-sha256:0123456789abcdef0123456789abcdef":3`, 1)
	escapedKey := strings.Replace(payloadNoUser, `"count":1`, `"count":1,"hmac\u002Dsha256:0123456789abcdef0123456789abcdef":3`, 1)
	skips := []struct {
		name string
		r    Record
		want string
	}{
		{"hashed value", rec(hashed, nil), SkipHashed},
		{"escaped hashed value", rec(escaped, nil), SkipHashed},
		{"hashed key", rec(hashedKey, nil), SkipHashed},
		{"escaped hashed key", rec(escapedKey, nil), SkipHashed},
		{"metadata only", rec("", nil), SkipNotKept},
		{"duplicate", rec("", map[string]string{HeaderReason: ReasonDuplicate, HeaderClass: ClassDuplicate}), SkipNotKept},
		{"legacy", rec(payloadNoUser, map[string]string{HeaderKept: "\x00"}), SkipLegacy},
		{"no event id", rec(`{"tenant_id":"acme","schema":"feature_use/v1"}`, map[string]string{HeaderEventID: ""}), SkipNoEventID},
		{"nil event id", rec(strings.Replace(payloadNoUser, "3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f", NilUser, 1), map[string]string{HeaderEventID: ""}), SkipNoEventID},
		{"event id a number", rec(`{"event_id":1,"tenant_id":"acme"}`, map[string]string{HeaderEventID: ""}), SkipNoEventID},
		{"no tenant", rec(strings.Replace(payloadNoUser, `"tenant_id":"acme",`, "", 1), map[string]string{HeaderTenant: ""}), SkipNoTenant},
		{"other event id in header", rec(payloadNoUser, map[string]string{HeaderEventID: "4c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f"}), SkipMismatch},
		{"other tenant in header", rec(payloadNoUser, map[string]string{HeaderTenant: "other"}), SkipMismatch},
	}
	for _, s := range skips {
		if c, got := Prepare(s.r); got != s.want {
			t.Errorf("%s: Prepare = %+v, %q; want skip %q", s.name, c, got, s.want)
		}
	}
}

func TestWithNilUserOnAnEmptyObject(t *testing.T) {
	if got := string(withNilUser([]byte(" {} "), false)); got != `{"user":"`+NilUser+`"}` {
		t.Errorf("withNilUser({}) = %s", got)
	}
}

func TestStatsGrouping(t *testing.T) {
	day1 := time.Date(2025, 6, 1, 23, 30, 0, 0, time.UTC)
	day2 := day1.Add(2 * time.Hour) // 2025-06-02 UTC
	at := func(m kafka.Message, tm time.Time) kafka.Message { m.Time = tm; return m }
	msgs := []kafka.Message{
		at(msg("r/0/1", payloadNoUser, nil), day1),
		at(msg("r/0/1", payloadNoUser, nil), day1), // re-sent copy
		at(msg("r/0/2", "", map[string]string{HeaderTenant: "beta"}), day2),
		at(msg("r/1/1", "", map[string]string{HeaderReason: "input_data.email", HeaderClass: ClassInputData, HeaderField: "data.feature_id"}), day2),
		at(msg("r/1/2", "", map[string]string{HeaderReason: "input_data.email", HeaderClass: ClassInputData, HeaderField: "data.app_id", HeaderTenant: ""}), day2),
		at(msg("r/1/3", `{"a":1}`, map[string]string{HeaderKept: "\x00", HeaderReason: "no_purpose"}), day2),
		at(msg("bad", "", nil), day2),
		at(msg("r/1/4", "", map[string]string{HeaderClass: "\x00"}), day2),
	}
	st := NewStats([]Dim{DimReason, DimClass})
	for _, m := range msgs {
		st.Add(m)
	}
	st.Sort()
	if st.Read != 8 || st.Records != 5 || st.Copies != 1 || st.Legacy != 1 || st.MalformedTotal() != 2 ||
		st.Malformed["bad_key"] != 1 || st.Malformed["missing_header.class"] != 1 {
		t.Fatalf("totals: %+v", st)
	}
	want := []Group{
		{Keys: map[Dim]string{DimReason: "input_data.email", DimClass: ClassInputData}, Records: 2},
		{Keys: map[Dim]string{DimReason: "unknown_tenant", DimClass: ClassPolicy}, Records: 2, Kept: 1},
		{Keys: map[Dim]string{DimReason: "no_purpose", DimClass: ClassPolicy}, Records: 1},
	}
	if !groupsEqual(st.Groups, want) {
		t.Errorf("groups by reason,class:\n%+v\nwant\n%+v", st.Groups, want)
	}

	st = NewStats([]Dim{DimDay, DimTenant, DimField})
	for _, m := range msgs {
		st.Add(m)
	}
	st.Sort()
	// Equal counts sort by the keys in --by order.
	sortedWant := []Group{
		{Keys: map[Dim]string{DimDay: "2025-06-01", DimTenant: "acme", DimField: ""}, Records: 1, Kept: 1},
		{Keys: map[Dim]string{DimDay: "2025-06-02", DimTenant: "", DimField: "data.app_id"}, Records: 1},
		{Keys: map[Dim]string{DimDay: "2025-06-02", DimTenant: "acme", DimField: ""}, Records: 1},
		{Keys: map[Dim]string{DimDay: "2025-06-02", DimTenant: "acme", DimField: "data.feature_id"}, Records: 1},
		{Keys: map[Dim]string{DimDay: "2025-06-02", DimTenant: "beta", DimField: ""}, Records: 1},
	}
	if !groupsEqual(st.Groups, sortedWant) {
		t.Errorf("groups by day,tenant,field:\n%+v\nwant\n%+v", st.Groups, sortedWant)
	}

	var out bytes.Buffer
	if err := st.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"DAY", "TENANT", "FIELD", "RECORDS", "PAYLOAD KEPT", "2025-06-01", "data.app_id", "5 records", "1 re-sent copies",
		"1 legacy records", "2 malformed records, not counted above: bad_key 1, missing_header.class 1"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, out.String())
		}
	}
	// Nothing of a payload is printed.
	if strings.Contains(out.String(), "app.view.list") || strings.Contains(out.String(), "windows") {
		t.Errorf("the table prints payload content:\n%s", out.String())
	}
	b, err := json.Marshal(st)
	if err != nil || !bytes.Contains(b, []byte(`"resent_copies":1`)) || bytes.Contains(b, []byte("app.view.list")) {
		t.Errorf("stats JSON: %s, %v", b, err)
	}
}

func groupsEqual(a, b []Group) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Records != b[i].Records || a[i].Kept != b[i].Kept || len(a[i].Keys) != len(b[i].Keys) {
			return false
		}
		for k, v := range a[i].Keys {
			if b[i].Keys[k] != v {
				return false
			}
		}
	}
	return true
}

func TestParseByAndSince(t *testing.T) {
	by, err := ParseBy(" day, reason,day")
	if err != nil || len(by) != 2 || by[0] != DimDay || by[1] != DimReason {
		t.Errorf("ParseBy = %v, %v", by, err)
	}
	for _, bad := range []string{"", ",", "user", "reason,payload"} {
		if _, err := ParseBy(bad); err == nil {
			t.Errorf("ParseBy(%q) accepted", bad)
		}
	}
	now := time.Date(2025, 6, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                          {},
		"7d":                        now.Add(-7 * 24 * time.Hour),
		"36h":                       now.Add(-36 * time.Hour),
		"2025-06-01":                time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
		"2025-06-01T09:00:00+09:00": time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
	} {
		if got, err := ParseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-3h", "0d", "7", "2025-6-1"} {
		if _, err := ParseSince(bad, now); err == nil {
			t.Errorf("ParseSince(%q) accepted", bad)
		}
	}
}
