package guard

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shukei/shukei/event"
)

const testdata = "../../schemas/testdata"

type corpusCase struct {
	Field  string `json:"field"`
	Value  string `json:"value"`
	Expect string `json:"expect"` // "pass" or an input-data reason
	Note   string `json:"note"`
	File   string `json:"-"` // the corpus file it comes from
}

// corpusFiles are the guard's corpora: corpus.jsonl (the first, hand-written cases) and
// identifiers.jsonl (identifier classes from public PII-scanner lists, written by someone who
// had not read the detectors; see IDENTIFIERS-BRIEF.md).
var corpusFiles = []string{"corpus.jsonl", "identifiers.jsonl"}

func readCorpus(tb testing.TB) []corpusCase {
	tb.Helper()
	var cases []corpusCase
	for _, name := range corpusFiles {
		cases = append(cases, readCorpusFile(tb, name)...)
	}
	return cases
}

func readCorpusFile(tb testing.TB, name string) []corpusCase {
	tb.Helper()
	f, err := os.Open(filepath.Join(testdata, "guard", name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var cases []corpusCase
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var c corpusCase
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			tb.Fatalf("%s:%d: %v", name, line, err)
		}
		c.File = name
		if c.Expect != "pass" && event.Reason(c.Expect).Class() != event.ClassInputData || !event.Reason(c.Expect).Known() && c.Expect != "pass" {
			tb.Fatalf("%s:%d: expect %q is neither pass nor an input-data reason", name, line, c.Expect)
		}
		if _, ok := pathKinds[c.Field]; !ok {
			tb.Fatalf("%s:%d: field %q is not a schema field", name, line, c.Field)
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return cases
}

// TestCorpus measures the guard against hand-written leaks and look-alikes, each corpus file
// on its own (the identifier classes came later, from a writer who had not read the
// detectors). A leak counts as caught with any input-data reason (the payload is dropped
// either way); the exact reason is reported as a second, softer measure.
func TestCorpus(t *testing.T) {
	for _, name := range corpusFiles {
		t.Run(strings.TrimSuffix(name, ".jsonl"), func(t *testing.T) { measureCorpus(t, readCorpusFile(t, name)) })
	}
}

func measureCorpus(t *testing.T, cases []corpusCase) {
	var leaks, caught, exact, passes, falsePositives int
	var misses, mislabels []string
	for _, c := range cases {
		got := "pass"
		if r := CheckField(c.Field, c.Value); r != nil {
			got = string(r.Reason)
			if r.Class() != event.ClassInputData {
				t.Errorf("%s=%q: guard returned non-input-data reason %s", c.Field, c.Value, r.Reason)
			}
			if r.Field != c.Field {
				t.Errorf("%s=%q: rejection names field %q", c.Field, c.Value, r.Field)
			}
			if strings.Contains(r.Error(), c.Value) {
				t.Errorf("%s=%q: rejection quotes the value: %v", c.Field, c.Value, r)
			}
		}
		if c.Expect == "pass" {
			passes++
			if got != "pass" {
				falsePositives++
				misses = append(misses, "false positive: "+c.Field+"="+quote(c.Value)+" got "+got+" ("+c.Note+")")
			}
			continue
		}
		leaks++
		switch {
		case got == "pass":
			misses = append(misses, "missed leak: "+c.Field+"="+quote(c.Value)+" want "+c.Expect+" ("+c.Note+")")
		case got == c.Expect:
			caught++
			exact++
		default:
			caught++
			mislabels = append(mislabels, c.Field+"="+quote(c.Value)+" got "+got+" want "+c.Expect)
		}
	}
	catch := float64(caught) / float64(leaks)
	fp := float64(falsePositives) / float64(passes)
	t.Logf("corpus: %d leaks, %d look-alikes", leaks, passes)
	t.Logf("catch rate %.4f (%d/%d), exact reason %.4f (%d/%d), false-positive rate %.4f (%d/%d)",
		catch, caught, leaks, float64(exact)/float64(leaks), exact, leaks, fp, falsePositives, passes)
	for _, m := range misses {
		t.Log(m)
	}
	for _, m := range mislabels {
		t.Log("other reason: " + m)
	}
	if leaks < 120 || passes < 80 {
		t.Errorf("corpus too small: %d leaks, %d look-alikes; want at least 120 and 80", leaks, passes)
	}
	if catch < 0.97 {
		t.Errorf("catch rate %.4f below 0.97", catch)
	}
	if fp > 0.03 {
		t.Errorf("false-positive rate %.4f above 0.03", fp)
	}
	if exact < leaks*9/10 {
		t.Errorf("exact reason for %d of %d leaks, want at least 90%%", exact, leaks)
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestCorpusThroughInspect puts every corpus value into a real event and runs
// the whole pipeline decision: leaks must be rejected as input data even when
// the value also breaks the schema, look-alikes must be accepted.
func TestCorpusThroughInspect(t *testing.T) {
	for _, c := range readCorpus(t) {
		msg := eventWith(t, c.Field, c.Value)
		_, r := Inspect(msg, testNow, event.Limits{})
		if c.Expect == "pass" {
			if r != nil {
				t.Errorf("look-alike %s=%s rejected: %v", c.Field, quote(c.Value), r)
			}
			continue
		}
		if r == nil {
			// Counted and listed by TestCorpus; Inspect must not do worse.
			if CheckField(c.Field, c.Value) != nil {
				t.Errorf("leak %s=%s accepted by Inspect although CheckField catches it", c.Field, quote(c.Value))
			}
			continue
		}
		if r.Class() != event.ClassInputData && CheckField(c.Field, c.Value) != nil {
			t.Errorf("leak %s=%s: Inspect gives %s, not the guard's input-data reason", c.Field, quote(c.Value), r.Reason)
		}
	}
}

// eventWith returns a valid event of the category that has field, with value in it.
func eventWith(tb testing.TB, field, value string) []byte {
	tb.Helper()
	name := "feature_use_record_create.json"
	switch field {
	case "data.app_id", "data.action":
		name = "app_access_open.json"
	case "data.setting_key", "data.value":
		name = "settings_token_weekly.json"
	case "data.operation_id", "data.result_code", "data.request_id":
		name = "operation_ok_hex_request.json"
	case "data.client_kind", "data.browser":
		name = "client_env_browser.json"
	}
	b, err := os.ReadFile(filepath.Join(testdata, "valid", name))
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatal(err)
	}
	obj := m
	parts := strings.Split(field, ".")
	for _, p := range parts[:len(parts)-1] {
		obj = obj[p].(map[string]any)
	}
	obj[parts[len(parts)-1]] = value
	out, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// The fast path of plain ids must agree with the detectors on the whole corpus. The identifier
// classes (123-4567, ce482917b) are judged before it, in classify, so it need not know them.
func TestPlainIDAgrees(t *testing.T) {
	fast := 0
	for _, c := range readCorpus(t) {
		if !plainID(c.Value) {
			continue
		}
		fast++
		for _, k := range []kind{kindAny, kindID, kindToken} {
			if r := scan(k, c.Value); r != "" && identifier(k, c.Value) == "" {
				t.Errorf("plainID passes %q, which scan flags as %s", c.Value, r)
			}
		}
	}
	if fast == 0 {
		t.Error("the fast path took no corpus value")
	}
}

// grammars are the schema patterns of the free-string fields: a value that breaks its field's
// grammar is refused by validation whatever the guard says, so only values that fit need the
// guard.
var grammars = map[string]func(string) bool{
	"event_id": event.IsUUID, "tenant_id": event.IsID, "source": event.IsID, "user": event.IsUserID,
	"client.os_version": event.IsOSVersion, "data.app_id": event.IsID, "data.feature_id": event.IsID,
	"data.setting_key": event.IsID, "data.value": event.IsSettingToken, "data.operation_id": event.IsID,
	"data.result_code": event.IsResultCode, "data.request_id": event.IsRequestID,
}

// TestEveryLeakInEveryField places every leak of every corpus in every free-string field, as
// the attack suite does end to end: wherever a leak fits the field's grammar, the guard must
// refuse it there too, not only in the field its corpus line names.
func TestEveryLeakInEveryField(t *testing.T) {
	fits, refused := 0, 0
	for _, c := range readCorpus(t) {
		if c.Expect == "pass" {
			continue
		}
		for path, fit := range grammars {
			if !fit(c.Value) {
				continue
			}
			if path == "user" && lowerHex(c.Value) && hashLength(len(c.Value)) {
				continue // a hashed user id is what the user field is for
			}
			fits++
			check := CheckField(path, c.Value)
			if path == "tenant_id" {
				// A registered tenant's id is the vendor's own name for it; any other reaches
				// only a refusal (no such tenant), which keeps it as its guard allows.
				check = CheckUnknownTenant(c.Value)
			}
			if check == nil {
				t.Errorf("%s=%s passes (%s:%s, %s)", path, quote(c.Value), c.File, c.Field, c.Note)
				continue
			}
			refused++
		}
	}
	t.Logf("%d placements fit their field's grammar; %d refused by the guard", fits, refused)
}
