package guard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/vectors"
)

var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func readVectors(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	return vectors.Read(tb, testdata, dir)
}

func sorted(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestInspectValidVectors(t *testing.T) {
	vectors := readVectors(t, "valid")
	for _, name := range sorted(vectors) {
		t.Run(name, func(t *testing.T) {
			ev, r := Inspect(vectors[name], testNow, event.Limits{})
			if r != nil {
				t.Fatalf("Inspect: %v", r)
			}
			if ev.Data == nil || ev.EventID == "" {
				t.Fatalf("accepted event is incomplete: %+v", ev)
			}
		})
	}
}

func TestInspectInvalidVectors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testdata, "invalid", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var expected map[string]struct {
		Reason event.Reason `json:"reason"`
	}
	if err := json.Unmarshal(b, &expected); err != nil {
		t.Fatal(err)
	}
	vectors := readVectors(t, "invalid")
	for _, name := range sorted(vectors) {
		t.Run(name, func(t *testing.T) {
			want, ok := expected[name]
			if !ok {
				t.Fatal("no entry in expected.json")
			}
			ev, r := Inspect(vectors[name], testNow, event.Limits{})
			if r == nil {
				t.Fatalf("accepted, want %s", want.Reason)
			}
			if r.Reason != want.Reason {
				t.Fatalf("reason %s (%v), want %s", r.Reason, r, want.Reason)
			}
			if ev.Data != nil || ev.User != "" || ev.Source != "" || ev.Client != (event.Client{}) {
				t.Errorf("a rejected event carries more than DLQ metadata: %+v", ev)
			}
		})
	}
}

func TestInspectPrecedence(t *testing.T) {
	good := readVectors(t, "valid")["feature_use_record_create.json"]
	s := string(good)
	tests := []struct {
		name string
		msg  string
		want event.Reason
	}{
		{"valid", s, ""},
		{"email behind a syntax error", strings.Replace(s, `"count": 3`, `"count": 3,, "note": "taro@example.com"`, 1), event.ReasonEmail},
		{"phone after the event", s + `{"x": "090-1234-5678"}`, event.ReasonPhone},
		{"name in a duplicate", strings.Replace(s, `"source": "web-sdk"`, `"source": "yamada_taro", "source": "web-sdk"`, 1), event.ReasonPersonalName},
		{"URL in an unknown nested field", strings.Replace(s, `"count": 3`, `"count": 3, "meta": {"links": ["https://example.com/a/b"]}`, 1), event.ReasonURL},
		{"name as an unknown key", strings.Replace(s, `"count": 3`, `"count": 3, "やまだ たろう": true`, 1), event.ReasonPersonalName},
		{"content in a wrong-typed value", strings.Replace(s, `"count": 3`, `"count": "見積もりの件について"`, 1), event.ReasonFreeText},
		{"too old and a name", strings.Replace(strings.Replace(s, `"2025-05-31T09:15:00+09:00"`, `"2024-01-01T00:00:00Z"`, 1), `"app.record.create"`, `"taro.yamada"`, 1), event.ReasonPersonalName},
		{"unknown schema and content", strings.Replace(strings.Replace(s, `"feature_use/v1"`, `"feature_use/v9"`, 1), `"app.record.create"`, `"report_2024.xlsx"`, 1), event.ReasonFileName},
		{"unknown schema alone keeps its reason", strings.Replace(s, `"feature_use/v1"`, `"feature_use/v9"`, 1), event.ReasonUnknownSchema},
		{"plain text body", "Hello, please call 090-1234-5678", event.ReasonPhone},
		{"truncated with a name", s[:strings.Index(s, `"app.record.create"`)] + `"山田太郎`, event.ReasonPersonalName},
		{"escaped zero-width space", strings.Replace(s, `"app.record.create"`, `"app.record\u200b.create"`, 1), event.ReasonControlChar},
		{"raw control byte", strings.Replace(s, `"app.record.create"`, "\"app.record\x07.create\"", 1), event.ReasonControlChar},
		{"broken JSON, no content", "{not json, at all}", event.ReasonMalformedJSON},
		{"not JSON, a word", "ping", event.ReasonMalformedJSON},
		{"timestamp with a space", strings.Replace(s, `"2025-05-31T09:15:00+09:00"`, `"2025-05-31 09:15:00Z"`, 1), event.ReasonInvalidTimestamp},
		{"phone outside strings", strings.Replace(s, `"count": 3`, `"count": 090 1234 5678`, 1), event.ReasonPhone},
		{"empty", "", event.ReasonMalformedJSON},
		{"Shift_JIS bytes", "{\"data\": \"\x8c\xa9\x90\xcf\"}", event.ReasonBlob},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, r := Inspect([]byte(tt.msg), testNow, event.Limits{})
			switch {
			case tt.want == "" && r != nil:
				t.Fatalf("rejected: %v", r)
			case tt.want != "" && r == nil:
				t.Fatalf("accepted, want %s", tt.want)
			case r != nil && r.Reason != tt.want:
				t.Fatalf("reason %s (%v), want %s", r.Reason, r, tt.want)
			}
		})
	}
}

func TestInspectOversize(t *testing.T) {
	good := readVectors(t, "valid")["feature_use_record_create.json"]
	var pad strings.Builder
	for i := 0; pad.Len() < 10000; i++ {
		fmt.Fprintf(&pad, `, "pad%d": %d`, i, i)
	}
	big := bytes.Replace(good, []byte(`"count": 3`), []byte(`"count": 3`+pad.String()), 1)
	_, r := Inspect(big, testNow, event.Limits{})
	if r == nil || r.Reason != event.ReasonOversize || r.Class() != event.ClassInputData {
		t.Fatalf("oversize message: %v, want %s", r, event.ReasonOversize)
	}
	bigEmail := bytes.Replace(big, []byte(`"pad0"`), []byte(`"to": "taro@example.com", "pad0"`), 1)
	if _, r := Inspect(bigEmail, testNow, event.Limits{}); r == nil || r.Reason != event.ReasonEmail {
		t.Fatalf("oversize message with an address: %v, want %s", r, event.ReasonEmail)
	}
	if _, r := Inspect(big, testNow, event.Limits{MaxBytes: 64 << 10}); r == nil || r.Reason != event.ReasonUnknownField {
		t.Fatalf("with a larger limit the message is judged as an event: %v", r)
	}
}

func TestCheckField(t *testing.T) {
	tests := []struct {
		path, value string
		want        event.Reason
		field       string
	}{
		{"data.request_id", "4bf92f3577b34da6a3ce929d0e0e4736", "", ""},
		{"data.feature_id", "4bf92f3577b34da6a3ce929d0e0e4736", "", ""},
		{"data.feature_id", "4bf92f3577b34da6a3ce929d0e0e47364bf92f3577b34da6", event.ReasonBlob, "data.feature_id"},
		{"user", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "", ""},
		{"user", "09012345678", event.ReasonPhone, "user"},
		{"data.app_id", "09012345678", event.ReasonPhone, "data.app_id"},
		{"user", "10452", "", ""},
		{"tenant_id", "yamada-taro", "", ""},
		{"source", "yamada-taro", event.ReasonPersonalName, "source"},
		{"client.os_version", "10.0.22631", "", ""},
		{"client.os", "windows", "", ""},
		{"client.os", "Windows", "", ""},
		{"event_id", "6d2f0c1e-8b4a-4f7e-9c3d-1a5b7e9f2c40", "", ""},
		{"occurred_at", "2025-05-31T09:15:00+09:00", "", ""},
		{"unknown.path", "taro@example.com", event.ReasonEmail, "*"},
		{"data.value", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path+"="+tt.value, func(t *testing.T) {
			r := CheckField(tt.path, tt.value)
			if tt.want == "" {
				if r != nil {
					t.Fatalf("rejected: %v", r)
				}
				return
			}
			if r == nil || r.Reason != tt.want || r.Field != tt.field {
				t.Fatalf("got %v, want %s at %q", r, tt.want, tt.field)
			}
			if !errors.Is(r, tt.want) {
				t.Errorf("errors.Is(r, %s) is false", tt.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	ev, err := event.Decode(readVectors(t, "valid")["operation_ok_hex_request.json"])
	if err != nil {
		t.Fatal(err)
	}
	if r := Check(&ev); r != nil {
		t.Fatalf("valid event: %v", r)
	}
	op := ev.Data.(*event.Operation)
	op.ResultCode = "山田太郎"
	r := Check(&ev)
	if r == nil || r.Reason != event.ReasonPersonalName || r.Field != "data.result_code" {
		t.Fatalf("got %v, want personal_name at data.result_code", r)
	}
	// A typed nil payload must not panic.
	ev.Data = (*event.Operation)(nil)
	if r := Check(&ev); r != nil {
		t.Fatalf("nil payload: %v", r)
	}
}

func TestScanRawKeysAndPaths(t *testing.T) {
	tests := []struct {
		msg   string
		want  event.Reason
		field string
	}{
		{`{"data":{"山田太郎":1}}`, event.ReasonPersonalName, "data.*"},
		{`{"data":{"note":{"deep":["x","taro@example.com"]}}}`, event.ReasonEmail, "data.*.*"},
		{`{"user":"yamada_taro"}`, event.ReasonPersonalName, "user"},
		{`{"tenant_id":"yamada_taro"}`, "", ""},
		{`{"data":{"request_id":"4bf92f3577b34da6a3ce929d0e0e4736"}}`, "", ""},
		{`["taro@example.com"]`, event.ReasonEmail, ""},
		{`"山田太郎"`, event.ReasonPersonalName, ""},
		{`{"a":1}{"b":"https://example.com/x"}`, event.ReasonURL, "*"},
		{`{"a": "ok", "b": 1,`, "", ""},
		{`{"subject": "Re: 見積もりの件"`, event.ReasonFreeText, "*"},
		{"", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			r := ScanRaw([]byte(tt.msg))
			if tt.want == "" {
				if r != nil {
					t.Fatalf("found %v", r)
				}
				return
			}
			if r == nil || r.Reason != tt.want || r.Field != tt.field {
				t.Fatalf("got %v, want %s at %q", r, tt.want, tt.field)
			}
		})
	}
}

// The guard is used from many goroutines at once; its word lists must be
// read-only after init. Run with -race.
func TestConcurrentUse(t *testing.T) {
	cases := readCorpus(t)
	want := make([]*event.Rejection, len(cases))
	for i, c := range cases {
		want[i] = CheckField(c.Field, c.Value)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, c := range cases {
				got := CheckField(c.Field, c.Value)
				if (got == nil) != (want[i] == nil) || got != nil && got.Reason != want[i].Reason {
					t.Errorf("%s=%q: concurrent result %v differs from %v", c.Field, c.Value, got, want[i])
				}
			}
		}()
	}
	wg.Wait()
}
