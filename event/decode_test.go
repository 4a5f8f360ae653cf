package event

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// base is a valid feature_use event as a template: each case replaces one part.
const base = `{"event_id":"6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c40","tenant_id":"acme-jp","occurred_at":"2025-05-31T09:15:00+09:00","schema":"feature_use/v1","source":"web-sdk","user":"10452","client":{"os":"windows","os_version":"10.0.22631","device_kind":"desktop"},"data":{"feature_id":"app.record.create","count":3,"records_registered":3}}`

func with(old, new string) string {
	if !strings.Contains(base, old) {
		panic("test template does not contain " + old)
	}
	return strings.Replace(base, old, new, 1)
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  Reason // "" for accepted
		field string
	}{
		{"valid", base, "", ""},
		{"white space everywhere", " \n\t{ \"event_id\" : \"6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c40\" ,\r\n" + base[len(`{"event_id":"6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c40",`):] + " \n", "", ""},
		{"escaped key", with(`"source"`, `"sour\u0063e"`), "", ""},
		{"escaped solidus in value", with(`"web-sdk"`, `"web\/sdk"`), "", ""},
		{"negative zero", with(`"records_registered":3`, `"records_registered":-0`), "", ""},
		{"empty", "", ReasonMalformedJSON, ""},
		{"only space", "  \n", ReasonMalformedJSON, ""},
		{"invalid utf-8", with(`"web-sdk"`, "\"web\xff\""), ReasonMalformedJSON, ""},
		{"raw control character", with(`"web-sdk"`, "\"web\x01\""), ReasonMalformedJSON, ""},
		{"lone high surrogate", with(`"web-sdk"`, `"web\ud800"`), ReasonMalformedJSON, ""},
		{"lone low surrogate", with(`"web-sdk"`, `"web\udc00x"`), ReasonMalformedJSON, ""},
		{"bad escape", with(`"web-sdk"`, `"web\x41"`), ReasonMalformedJSON, ""},
		{"trailing data", base + `{}`, ReasonMalformedJSON, ""},
		{"trailing garbage", base + ` x`, ReasonMalformedJSON, ""},
		{"two events", base + "\n" + base, ReasonMalformedJSON, ""},
		{"trailing comma", with(`"records_registered":3`, `"records_registered":3,`), ReasonMalformedJSON, ""},
		{"leading zero", with(`"count":3`, `"count":03`), ReasonMalformedJSON, ""},
		{"bare minus", with(`"count":3`, `"count":-`), ReasonMalformedJSON, ""},
		{"syntax error beats wrong type", with(`"count":3`, `"count":"3"`) + `]`, ReasonMalformedJSON, ""},
		{"syntax error beats unknown field", with(`"data":{`, `"x":1,"data":{`)[:200], ReasonMalformedJSON, ""},
		{"top-level array", "[" + base + "]", ReasonWrongType, ""},
		{"top-level null", "null", ReasonWrongType, ""},
		{"null value", with(`"10452"`, `null`), ReasonWrongType, "user"},
		{"number for string", with(`"10452"`, `10452`), ReasonWrongType, "user"},
		{"string for integer", with(`"count":3`, `"count":"3"`), ReasonWrongType, "data.count"},
		{"fraction for integer", with(`"count":3`, `"count":3.0`), ReasonWrongType, "data.count"},
		{"exponent for integer", with(`"count":3`, `"count":3e0`), ReasonWrongType, "data.count"},
		{"boolean for integer", with(`"count":3`, `"count":true`), ReasonWrongType, "data.count"},
		{"object for string", with(`"acme-jp"`, `{"name":"acme"}`), ReasonWrongType, "tenant_id"},
		{"array for client", with(`"client":{"os":"windows","os_version":"10.0.22631","device_kind":"desktop"}`, `"client":[]`), ReasonWrongType, "client"},
		{"string for data", with(`"data":{"feature_id":"app.record.create","count":3,"records_registered":3}`, `"data":"x"`), ReasonWrongType, "data"},
		{"nested object in data", with(`"count":3`, `"count":{"n":3}`), ReasonWrongType, "data.count"},
		{"int64 overflow", with(`"count":3`, `"count":9223372036854775808`), ReasonOutOfRange, "data.count"},
		{"int64 min is fine for decode", with(`"count":3`, `"count":-9223372036854775808`), "", ""},
		{"unknown envelope key", with(`"source"`, `"ip":"10.0.0.1","source"`), ReasonUnknownField, "*"},
		{"unknown key differs in case only", with(`"source"`, `"Source"`), ReasonUnknownField, "*"},
		{"unknown client key", with(`"os":"windows"`, `"os":"windows","arch":"x64"`), ReasonUnknownField, "client.*"},
		{"unknown data key", with(`"count":3`, `"count":3,"label":"x"`), ReasonUnknownField, "data.*"},
		{"key of another category", with(`"count":3`, `"count":3,"app_id":"1047"`), ReasonUnknownField, "data.*"},
		{"duplicate envelope key", with(`"source":"web-sdk"`, `"source":"web-sdk","source":"web-sdk"`), ReasonDuplicateKey, "source"},
		{"duplicate client key", with(`"os":"windows"`, `"os":"windows","os":"linux"`), ReasonDuplicateKey, "client.os"},
		{"duplicate data key", with(`"count":3`, `"count":3,"count":4`), ReasonDuplicateKey, "data.count"},
		{"duplicate via escape", with(`"count":3`, `"count":3,"c\u006funt":4`), ReasonDuplicateKey, "data.count"},
		{"duplicate data object", with(`"source"`, `"data":{"feature_id":"x","count":1,"records_registered":0},"source"`), ReasonDuplicateKey, "data"},
		{"missing event_id", with(`"event_id":"6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c40",`, ``), ReasonMissingField, "event_id"},
		{"missing data", with(`,"data":{"feature_id":"app.record.create","count":3,"records_registered":3}`, ``), ReasonMissingField, "data"},
		{"missing user", with(`"user":"10452",`, ``), ReasonMissingField, "user"},
		{"missing client", with(`,"client":{"os":"windows","os_version":"10.0.22631","device_kind":"desktop"}`, ``), ReasonMissingField, "client"},
		{"missing device_kind", with(`,"device_kind":"desktop"`, ``), ReasonMissingField, "client.device_kind"},
		{"empty client", with(`{"os":"windows","os_version":"10.0.22631","device_kind":"desktop"}`, `{}`), ReasonMissingField, "client.os"},
		{"missing records_registered", with(`,"records_registered":3`, ``), ReasonMissingField, "data.records_registered"},
		{"empty os_version", with(`"10.0.22631"`, `""`), ReasonInvalidField, "client.os_version"},
		{"unknown schema", with(`"feature_use/v1"`, `"feature_use/v2"`), ReasonUnknownSchema, "schema"},
		{"unknown schema beats unknown data key", with(`"feature_use/v1"`, `"x/v1"`), ReasonUnknownSchema, "schema"},
		{"user on tenant_profile", strings.Replace(with(`"feature_use/v1"`, `"tenant_profile/v1"`), `{"feature_id":"app.record.create","count":3,"records_registered":3}`, `{"user_count":3,"organization_count":1}`, 1), ReasonForbiddenField, "user"},
		{"payload problem found where data is", with(`"feature_use/v1"`, `"tenant_profile/v1"`), ReasonUnknownField, "data.*"},
		{"invalid UTF-8 in an escaped string", with(`"web-sdk"`, "\"w\\u0065b\xc3\""), ReasonMalformedJSON, ""},
		{"invalid UTF-8 in a key", with(`"source"`, "\"sour\xe3\x81ce\""), ReasonMalformedJSON, ""},
		{"invalid UTF-8 outside strings", with(`"count":3`, "\"count\":\xef3"), ReasonMalformedJSON, ""},
		{"invalid UTF-8 in data before schema", "{\"data\":{\"feature_id\":\"app\xff\",\"count\":1,\"records_registered\":0}," + strings.Replace(base[1:], `,"data":{"feature_id":"app.record.create","count":3,"records_registered":3}`, ``, 1), ReasonMalformedJSON, ""},
		{"data before schema", `{"data":{"feature_id":"x","count":1,"records_registered":0},` + strings.Replace(base[1:], `,"data":{"feature_id":"app.record.create","count":3,"records_registered":3}`, ``, 1), "", ""},
		{"valid UTF-8 in a value", with(`"web-sdk"`, `"wéb-sdk"`), "", ""},
		{"timestamp without offset", with(`"2025-05-31T09:15:00+09:00"`, `"2025-05-31T09:15:00"`), ReasonInvalidTimestamp, "occurred_at"},
		{"timestamp with comma fraction", with(`"2025-05-31T09:15:00+09:00"`, `"2025-05-31T09:15:00,5+09:00"`), ReasonInvalidTimestamp, "occurred_at"},
		{"timestamp lower-case t", with(`"2025-05-31T09:15:00+09:00"`, `"2025-05-31t09:15:00+09:00"`), ReasonInvalidTimestamp, "occurred_at"},
		{"timestamp February 30", with(`"2025-05-31T09:15:00+09:00"`, `"2025-02-30T09:15:00+09:00"`), ReasonInvalidTimestamp, "occurred_at"},
		{"timestamp ten fraction digits", with(`"2025-05-31T09:15:00+09:00"`, `"2025-05-31T09:15:00.1234567891Z"`), ReasonInvalidTimestamp, "occurred_at"},
		{"timestamp leap second", with(`"2025-05-31T09:15:00+09:00"`, `"2025-05-31T23:59:60Z"`), ReasonInvalidTimestamp, "occurred_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode([]byte(tt.in))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if ev.Data == nil {
					t.Fatal("accepted event without payload")
				}
				return
			}
			var rej *Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("error %v (%T), want a *Rejection", err, err)
			}
			if rej.Reason != tt.want || rej.Field != tt.field {
				t.Fatalf("got %s at %q (%v), want %s at %q", rej.Reason, rej.Field, err, tt.want, tt.field)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("errors.Is(err, %s) = false", tt.want)
			}
			if rej.Class() != ClassMalformed {
				t.Errorf("class %v, want malformed", rej.Class())
			}
			if !ev.OccurredAt.IsZero() || ev.Data != nil {
				t.Errorf("a rejected decode returned a partial event: %+v", ev)
			}
		})
	}
}

func TestDecodeValues(t *testing.T) {
	in := `{"event_id":"6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c40","tenant_id":"acme-jp","occurred_at":"2025-05-31T09:15:00.25+09:00","schema":"settings/v1","source":"web\u002dsdk","user":"u:7","client":{"os":"ios","device_kind":"mobile"},"data":{"setting_key":"tenant.timezone","value":"utc_plus_9","customization_present":true,"customization_count":2}}`
	ev, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Event{
		Envelope: Envelope{
			EventID:    "6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c40",
			TenantID:   "acme-jp",
			OccurredAt: time.Date(2025, 5, 31, 0, 15, 0, 250_000_000, time.UTC),
			Schema:     SchemaSettingsV1,
			Source:     "web-sdk",
			User:       "u:7",
			Client:     Client{OS: OSIOS, DeviceKind: DeviceMobile},
		},
		Data: &Settings{SettingKey: "tenant.timezone", Value: TokenValue("utc_plus_9"), CustomizationPresent: true, CustomizationCount: 2},
	}
	if !ev.OccurredAt.Equal(want.OccurredAt) {
		t.Errorf("occurred_at %v, want %v", ev.OccurredAt, want.OccurredAt)
	}
	if _, off := ev.OccurredAt.Zone(); off != 9*3600 {
		t.Errorf("offset %d, want +09:00 kept", off)
	}
	ev.OccurredAt = want.OccurredAt
	if !sameEvent(ev, want) {
		t.Errorf("got %+v %+v\nwant %+v %+v", ev, ev.Data, want, want.Data)
	}

	for _, tt := range []struct {
		raw  string
		want SettingValue
	}{
		{`"weekly"`, TokenValue("weekly")},
		{`true`, BoolValue(true)},
		{`false`, BoolValue(false)},
		{`-540`, IntValue(-540)},
		{`"caf\u00e9"`, TokenValue("café")},
		{`"\ud83d\ude00"`, TokenValue("😀")},
	} {
		t.Run(tt.raw, func(t *testing.T) {
			ev, err := Decode([]byte(strings.Replace(in, `"utc_plus_9"`, tt.raw, 1)))
			if err != nil {
				t.Fatal(err)
			}
			if got := ev.Data.(*Settings).Value; got != tt.want {
				t.Errorf("value %+v, want %+v", got, tt.want)
			}
		})
	}
}

// A rejection is logged and stored in the DLQ: it must never carry content.
func TestRejectionDoesNotQuoteInput(t *testing.T) {
	secrets := []string{"yamada.taro@example.co.jp", "山田太郎", "090-1234-5678"}
	for _, s := range secrets {
		for _, in := range []string{
			with(`"count":3`, `"count":3,"`+s+`":1`),
			with(`"app.record.create"`, `"`+s+`"`),
			with(`"acme-jp"`, `"`+s+`"`),
			with(`"feature_use/v1"`, `"`+s+`"`),
			with(`"2025-05-31T09:15:00+09:00"`, `"`+s+`"`),
			with(`"windows"`, `"`+s+`"`),
			with(`"10452"`, `"`+s+`"`),
		} {
			ev, err := Decode([]byte(in))
			if err == nil {
				err = Validate(&ev, testNow, Limits{})
			}
			if err == nil {
				continue // the phone number fits the id pattern: the guard's business
			}
			if strings.Contains(err.Error(), s) {
				t.Errorf("rejection quotes the input: %v", err)
			}
		}
	}
}

func TestReasons(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons() {
		if seen[r] {
			t.Errorf("%s listed twice", r)
		}
		seen[r] = true
		wantInput := strings.HasPrefix(string(r), InputDataPrefix)
		if got := r.Class() == ClassInputData; got != wantInput {
			t.Errorf("%s: input-data class %v, want %v", r, got, wantInput)
		}
		for _, c := range string(r) {
			if !(c >= 'a' && c <= 'z' || c == '_' || c == '.') {
				t.Errorf("%s is not a stable snake_case code", r)
				break
			}
		}
	}
	if Reason("something_new").Class() != ClassInputData {
		t.Error("an unknown reason must fail safe to ClassInputData")
	}
	rej := &Rejection{Reason: ReasonTooOld, Field: "occurred_at", Msg: "older than 7 days"}
	var err error = rej
	if !errors.Is(err, ReasonTooOld) || errors.Is(err, ReasonInFuture) {
		t.Error("errors.Is does not match on the reason")
	}
	if got, want := err.Error(), "event rejected: too_old at occurred_at: older than 7 days"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestUnmarshalJSONIsStrict(t *testing.T) {
	var ev Event
	err := ev.UnmarshalJSON([]byte(with(`"count":3`, `"count":3,"count":3`)))
	if !errors.Is(err, ReasonDuplicateKey) {
		t.Fatalf("UnmarshalJSON error %v, want duplicate_key", err)
	}
	if err := ev.UnmarshalJSON([]byte(base)); err != nil || ev.Data == nil {
		t.Fatalf("UnmarshalJSON(valid) = %v, %+v", err, ev)
	}
}
