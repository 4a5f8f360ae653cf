package event

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

func validEvent() Event {
	return Event{
		Envelope: Envelope{
			EventID:    "6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c40",
			TenantID:   "acme-jp",
			OccurredAt: testNow.Add(-time.Hour),
			Schema:     SchemaFeatureUseV1,
			Source:     "web-sdk",
			User:       "10452",
			Client:     Client{OS: OSWindows, OSVersion: "10.0.22631", DeviceKind: DeviceDesktop},
		},
		Data: &FeatureUse{FeatureID: "app.record.create", Count: 3, RecordsRegistered: 3},
	}
}

func TestValidate(t *testing.T) {
	lim := Limits{}
	tests := []struct {
		name   string
		mut    func(*Event)
		lim    Limits
		want   Reason
		field  string
		reject bool
	}{
		{name: "valid", mut: func(*Event) {}},
		{name: "exactly max age", mut: func(e *Event) { e.OccurredAt = testNow.Add(-DefaultMaxAge) }},
		{name: "just over max age", mut: func(e *Event) { e.OccurredAt = testNow.Add(-DefaultMaxAge - time.Nanosecond) }, want: ReasonTooOld, field: "occurred_at"},
		{name: "exactly max skew", mut: func(e *Event) { e.OccurredAt = testNow.Add(DefaultMaxSkew) }},
		{name: "just over max skew", mut: func(e *Event) { e.OccurredAt = testNow.Add(DefaultMaxSkew + time.Nanosecond) }, want: ReasonInFuture, field: "occurred_at"},
		{name: "custom max age", mut: func(e *Event) { e.OccurredAt = testNow.Add(-2 * time.Hour) }, lim: Limits{MaxAge: time.Hour}, want: ReasonTooOld, field: "occurred_at"},
		{name: "custom skew", mut: func(e *Event) { e.OccurredAt = testNow.Add(time.Minute) }, lim: Limits{MaxSkew: time.Second}, want: ReasonInFuture, field: "occurred_at"},
		{name: "zero time", mut: func(e *Event) { e.OccurredAt = time.Time{} }, want: ReasonInvalidTimestamp, field: "occurred_at"},
		{name: "uppercase event id", mut: func(e *Event) { e.EventID = strings.ToUpper(e.EventID) }, want: ReasonInvalidEventID, field: "event_id"},
		{name: "nil event id", mut: func(e *Event) { e.EventID = nilUUID }, want: ReasonInvalidEventID, field: "event_id"},
		{name: "braced event id", mut: func(e *Event) { e.EventID = "{" + e.EventID + "}" }, want: ReasonInvalidEventID, field: "event_id"},
		{name: "tenant with space", mut: func(e *Event) { e.TenantID = "acme jp" }, want: ReasonInvalidTenantID, field: "tenant_id"},
		{name: "tenant too long", mut: func(e *Event) { e.TenantID = strings.Repeat("a", 65) }, want: ReasonInvalidTenantID, field: "tenant_id"},
		{name: "tenant 64 chars", mut: func(e *Event) { e.TenantID = strings.Repeat("a", 64) }},
		{name: "tenant leading dash", mut: func(e *Event) { e.TenantID = "-acme" }, want: ReasonInvalidTenantID, field: "tenant_id"},
		{name: "unknown schema", mut: func(e *Event) { e.Schema = "feature_use/v9" }, want: ReasonUnknownSchema, field: "schema"},
		{name: "nil payload", mut: func(e *Event) { e.Data = nil }, want: ReasonInconsistent, field: "data"},
		{name: "typed nil payload", mut: func(e *Event) { e.Data = (*FeatureUse)(nil) }, want: ReasonMissingField, field: "data"},
		{name: "payload of another category", mut: func(e *Event) { e.Data = &AppAccess{AppID: "1", Action: ActionOpen} }, want: ReasonInconsistent, field: "data"},
		{name: "source uppercase", mut: func(e *Event) { e.Source = "Web" }, want: ReasonInvalidField, field: "source"},
		{name: "user empty", mut: func(e *Event) { e.User = "" }, want: ReasonInvalidField, field: "user"},
		{name: "user with dot", mut: func(e *Event) { e.User = "taro.yamada" }, want: ReasonInvalidField, field: "user"},
		{name: "user with at", mut: func(e *Event) { e.User = "taro@example.com" }, want: ReasonInvalidField, field: "user"},
		{name: "user 128 chars", mut: func(e *Event) { e.User = strings.Repeat("A", 128) }},
		{name: "user 129 chars", mut: func(e *Event) { e.User = strings.Repeat("A", 129) }, want: ReasonInvalidField, field: "user"},
		{name: "client missing", mut: func(e *Event) { e.Client = Client{} }, want: ReasonMissingField, field: "client"},
		{name: "os unknown", mut: func(e *Event) { e.Client.OS = "win11" }, want: ReasonInvalidField, field: "client.os"},
		{name: "os version absent", mut: func(e *Event) { e.Client.OSVersion = "" }},
		{name: "os version five parts", mut: func(e *Event) { e.Client.OSVersion = "1.2.3.4.5" }, want: ReasonInvalidField, field: "client.os_version"},
		{name: "os version long major", mut: func(e *Event) { e.Client.OSVersion = "12345" }, want: ReasonInvalidField, field: "client.os_version"},
		{name: "device unknown", mut: func(e *Event) { e.Client.DeviceKind = "phone" }, want: ReasonInvalidField, field: "client.device_kind"},
		{name: "tenant profile without user or client", mut: func(e *Event) {
			e.Schema, e.User, e.Client, e.Data = SchemaTenantProfileV1, "", Client{}, &TenantProfile{UserCount: 3}
		}},
		{name: "tenant profile with user", mut: func(e *Event) { e.Schema, e.Data = SchemaTenantProfileV1, &TenantProfile{} }, want: ReasonForbiddenField, field: "user"},
		{name: "tenant profile with bad client", mut: func(e *Event) {
			e.Schema, e.User, e.Client.OS, e.Data = SchemaTenantProfileV1, "", "beos", &TenantProfile{}
		}, want: ReasonInvalidField, field: "client.os"},
		{name: "user_count max", mut: func(e *Event) {
			e.Schema, e.User, e.Data = SchemaTenantProfileV1, "", &TenantProfile{UserCount: MaxUserCount}
		}},
		{name: "user_count over", mut: func(e *Event) {
			e.Schema, e.User, e.Data = SchemaTenantProfileV1, "", &TenantProfile{UserCount: MaxUserCount + 1}
		}, want: ReasonOutOfRange, field: "data.user_count"},
		{name: "organization_count negative", mut: func(e *Event) {
			e.Schema, e.User, e.Data = SchemaTenantProfileV1, "", &TenantProfile{OrganizationCount: -1}
		}, want: ReasonOutOfRange, field: "data.organization_count"},
		{name: "client env", mut: func(e *Event) {
			e.Schema, e.Data = SchemaClientEnvV1, &ClientEnv{ClientKind: ClientAPI, Browser: BrowserNone}
		}},
		{name: "client env bad kind", mut: func(e *Event) {
			e.Schema, e.Data = SchemaClientEnvV1, &ClientEnv{ClientKind: "cli", Browser: BrowserNone}
		}, want: ReasonInvalidField, field: "data.client_kind"},
		{name: "client env bad browser", mut: func(e *Event) {
			e.Schema, e.Data = SchemaClientEnvV1, &ClientEnv{ClientKind: ClientBrowser, Browser: "Chrome/124"}
		}, want: ReasonInvalidField, field: "data.browser"},
		{name: "app access bad app", mut: func(e *Event) { e.Schema, e.Data = SchemaAppAccessV1, &AppAccess{AppID: "", Action: ActionOpen} }, want: ReasonInvalidField, field: "data.app_id"},
		{name: "app access bad action", mut: func(e *Event) { e.Schema, e.Data = SchemaAppAccessV1, &AppAccess{AppID: "1", Action: "Open"} }, want: ReasonInvalidField, field: "data.action"},
		{name: "feature count zero", mut: func(e *Event) { e.Data.(*FeatureUse).Count = 0 }, want: ReasonOutOfRange, field: "data.count"},
		{name: "feature count max", mut: func(e *Event) { e.Data.(*FeatureUse).Count = MaxFeatureCount }},
		{name: "records over", mut: func(e *Event) { e.Data.(*FeatureUse).RecordsRegistered = MaxRecordsRegistered + 1 }, want: ReasonOutOfRange, field: "data.records_registered"},
		{name: "feature id 65 chars", mut: func(e *Event) { e.Data.(*FeatureUse).FeatureID = strings.Repeat("a", 65) }, want: ReasonInvalidField, field: "data.feature_id"},
		{name: "settings token", mut: settings(TokenValue("weekly"), false, 0)},
		{name: "settings token 32 chars", mut: settings(TokenValue(strings.Repeat("a", 32)), false, 0)},
		{name: "settings token 33 chars", mut: settings(TokenValue(strings.Repeat("a", 33)), false, 0), want: ReasonInvalidField, field: "data.value"},
		{name: "settings int bounds", mut: settings(IntValue(MinSettingInt), true, MaxCustomizationCount)},
		{name: "settings int under", mut: settings(IntValue(MinSettingInt-1), false, 0), want: ReasonOutOfRange, field: "data.value"},
		{name: "settings no value", mut: settings(SettingValue{}, false, 0), want: ReasonMissingField, field: "data.value"},
		{name: "settings count over", mut: settings(BoolValue(true), true, MaxCustomizationCount+1), want: ReasonOutOfRange, field: "data.customization_count"},
		{name: "settings present without count", mut: settings(BoolValue(true), true, 0), want: ReasonInconsistent, field: "data.customization_count"},
		{name: "settings count without present", mut: settings(BoolValue(true), false, 2), want: ReasonInconsistent, field: "data.customization_count"},
		{name: "operation", mut: operation("record.bulk_update", "ok", "4bf92f3577b34da6")},
		{name: "operation uuid request", mut: operation("record.bulk_update", "ok", "c0a80101-0000-4000-8000-00000000abcd")},
		{name: "operation request 15 hex", mut: operation("x", "ok", "4bf92f3577b34da"), want: ReasonInvalidField, field: "data.request_id"},
		{name: "operation request 33 hex", mut: operation("x", "ok", strings.Repeat("a", 33)), want: ReasonInvalidField, field: "data.request_id"},
		{name: "operation result with dot", mut: operation("x", "not.found", "4bf92f3577b34da6"), want: ReasonInvalidField, field: "data.result_code"},
		{name: "operation bad id", mut: operation("X", "ok", "4bf92f3577b34da6"), want: ReasonInvalidField, field: "data.operation_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := validEvent()
			tt.mut(&ev)
			l := lim
			if tt.lim != (Limits{}) {
				l = tt.lim
			}
			err := Validate(&ev, testNow, l)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var rej *Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("error %v, want a *Rejection", err)
			}
			if rej.Reason != tt.want || rej.Field != tt.field {
				t.Fatalf("got %s at %q (%v), want %s at %q", rej.Reason, rej.Field, err, tt.want, tt.field)
			}
		})
	}
}

func settings(v SettingValue, present bool, count int64) func(*Event) {
	return func(e *Event) {
		e.Schema = SchemaSettingsV1
		e.Data = &Settings{SettingKey: "user.locale", Value: v, CustomizationPresent: present, CustomizationCount: count}
	}
}

func operation(op, result, request string) func(*Event) {
	return func(e *Event) {
		e.Schema = SchemaOperationV1
		e.Data = &Operation{OperationID: op, AppID: "1047", ResultCode: result, RequestID: request}
	}
}

func TestLimits(t *testing.T) {
	if got := (Limits{}).WithDefaults(); got != DefaultLimits() {
		t.Errorf("zero limits with defaults = %+v, want %+v", got, DefaultLimits())
	}
	if got := (Limits{MaxAge: time.Hour}).WithDefaults(); got.MaxAge != time.Hour || got.MaxSkew != DefaultMaxSkew {
		t.Errorf("WithDefaults overrode a set field: %+v", got)
	}
	for _, tt := range []struct {
		lim Limits
		ok  bool
	}{
		{Limits{}, true},
		{DefaultLimits(), true},
		{Limits{MaxAge: -1}, false},
		{Limits{MaxSkew: -time.Second}, false},
		{Limits{MaxBytes: 100}, false},
		{Limits{MaxBytes: -1}, false},
	} {
		err := tt.lim.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tt.lim, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidLimits) {
			t.Errorf("%+v.Validate() = %v, does not wrap ErrInvalidLimits", tt.lim, err)
		}
	}
}

// patternCases are strings near the edges of every pattern.
var patternCases = []string{
	"", "a", "A", "0", "-", "_", ".", ":", "=", "a-", "-a", "a.b", "a_b", "a:b", "a=b", "aB", "Ab", "a b", "a/b", "a@b",
	"app.record.create", "space.post.reaction", "utc_plus_9", "weekly", "ja", "17.4.1", "10.0.22631", "10.0.22631.3447",
	"1.2.3.4.5", "12345", "1234.12345", "1234.123456", "1.", ".1", "1..2", "090.1234.5678",
	"6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c40", "6D2F0C1E-8B4A-4F7E-9C3D-1A5B7E9F2C40", "6d2f0c1e8b4a4f7e9c3d1a5b7e9f2c40",
	"6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c4", "6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c4g", nilUUID,
	"4bf92f3577b34da6", "4bf92f3577b34da", "4bf92f3577b34da6a3ce929d0e0e4736", "4bf92f3577b34da6a3ce929d0e0e47360",
	"2025-05-31T09:15:00Z", "2025-05-31T09:15:00+09:00", "2025-05-31T09:15:00.123456789-03:30", "2025-05-31T09:15:00.Z",
	"2025-13-01T00:00:00Z", "2025-00-01T00:00:00Z", "2025-01-32T00:00:00Z", "2025-01-00T00:00:00Z", "2025-01-01T24:00:00Z",
	"2025-01-01T23:60:00Z", "2025-01-01T23:59:60Z", "2025-01-01T00:00:00+24:00", "2025-01-01T00:00:00+23:60", "2025-01-01T00:00:00z",
	"2025-01-01T00:00:00", "2025-01-01T00:00:00.1234567890Z", "2025-01-01T00:00:00+0900",
	strings.Repeat("a", 32), strings.Repeat("a", 33), strings.Repeat("a", 64), strings.Repeat("a", 65),
	strings.Repeat("A", 128), strings.Repeat("A", 129), "a\n", "\na", "é", "aé",
}

// The hand-written matchers must agree with the schema patterns exactly.
func TestMatchersAgreeWithPatterns(t *testing.T) {
	for _, m := range matchers {
		re := regexp.MustCompile(m.pattern)
		for _, s := range patternCases {
			if got, want := m.match(s), re.MatchString(s); got != want {
				t.Errorf("%s(%q) = %v, pattern %s says %v", m.name, s, got, m.pattern, want)
			}
		}
	}
}

var matchers = []struct {
	name    string
	pattern string
	match   func(string) bool
}{
	{"IsID", PatternID, IsID},
	{"IsUUID", PatternEventID, IsUUID},
	{"IsUserID", PatternUser, IsUserID},
	{"IsOSVersion", PatternOSVersion, IsOSVersion},
	{"IsSettingToken", PatternToken, IsSettingToken},
	{"IsResultCode", PatternResultCode, IsResultCode},
	{"IsRequestID", PatternRequestID, IsRequestID},
	{"IsTimestamp", PatternOccurredAt, IsTimestamp},
}

func FuzzPatterns(f *testing.F) {
	for _, s := range patternCases {
		f.Add(s)
	}
	res := make([]*regexp.Regexp, len(matchers))
	for i, m := range matchers {
		res[i] = regexp.MustCompile(m.pattern)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i, m := range matchers {
			if got, want := m.match(s), res[i].MatchString(s); got != want {
				t.Errorf("%s(%q) = %v, pattern %s says %v", m.name, s, got, m.pattern, want)
			}
		}
	})
}

func BenchmarkIsUUID(b *testing.B) {
	ids := []string{"3f2b8c1e-9a4d-4e7f-8b6a-1c2d3e4f5a6b", "3f2b8c1e-9a4d-4e7f-8b6a-1c2d3e4f5a6B", "not a uuid at all, but 36 bytes long"}
	for b.Loop() {
		for _, s := range ids {
			IsUUID(s)
		}
	}
}
