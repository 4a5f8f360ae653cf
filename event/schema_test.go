package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/shukei/shukei/internal/vectors"
	"github.com/shukei/shukei/schemas/events"
)

// testNow is the clock of every vector: their occurred_at lie in the 7 days before it.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const testdata = "../schemas/testdata"

var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	names, err := fs.Glob(events.FS, "*.json")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		f, err := events.FS.Open(n)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			return nil, err
		}
		if err := c.AddResource(events.BaseURL+n, doc); err != nil {
			return nil, err
		}
	}
	return c.Compile(events.BaseURL + events.Envelope)
})

// schemaFor compiles the embedded schemas, the way a collector team would use them.
func schemaFor(tb testing.TB) *jsonschema.Schema {
	tb.Helper()
	s, err := compiled()
	if err != nil {
		tb.Fatalf("compile embedded schemas: %v", err)
	}
	return s
}

// schemaAccepts reports whether the JSON Schema accepts b as an event.
func schemaAccepts(tb testing.TB, b []byte) (bool, error) {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return false, err
	}
	if err := schemaFor(tb).Validate(inst); err != nil {
		return false, err
	}
	return true, nil
}

func readDir(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	return vectors.Read(tb, testdata, dir)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// expectation is one entry of testdata/invalid/expected.json.
type expectation struct {
	// Validate is the reason of Decode+Validate, "" when they accept (the
	// guard alone catches the vector).
	Validate Reason `json:"validate"`
	// Reason is what the whole pipeline (guard.Inspect) decides.
	Reason Reason `json:"reason"`
	// SchemaRejects is false for what JSON Schema cannot express: the time
	// window, duplicate keys, and content that fits a pattern.
	SchemaRejects bool   `json:"schema_rejects"`
	Note          string `json:"note"`
}

func readExpected(tb testing.TB) map[string]expectation {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, "invalid", "expected.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var exp map[string]expectation
	if err := json.Unmarshal(b, &exp); err != nil {
		tb.Fatal(err)
	}
	return exp
}

// sameEvent compares events, with occurred_at compared as instant and offset:
// two parses of one timestamp have equal but distinct *time.Location values.
func sameEvent(a, b Event) bool {
	if !a.OccurredAt.Equal(b.OccurredAt) {
		return false
	}
	_, oa := a.OccurredAt.Zone()
	_, ob := b.OccurredAt.Zone()
	if oa != ob {
		return false
	}
	a.OccurredAt, b.OccurredAt = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

func TestSchemaFilesMatchGo(t *testing.T) {
	known := map[string]bool{
		PatternID: true, PatternEventID: true, PatternUser: true, PatternOSVersion: true,
		PatternToken: true, PatternResultCode: true, PatternRequestID: true, PatternOccurredAt: true,
	}
	names, err := fs.Glob(events.FS, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{events.Envelope}
	for _, s := range Schemas() {
		cat, ver, _ := strings.Cut(string(s), "/")
		wantFiles = append(wantFiles, cat+"."+ver+".json")
	}
	sort.Strings(wantFiles)
	if !reflect.DeepEqual(names, wantFiles) {
		t.Fatalf("schema files %v, want one per known schema: %v", names, wantFiles)
	}
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			b, err := fs.ReadFile(events.FS, n)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			if doc["$id"] != events.BaseURL+n {
				t.Errorf("$id = %v, want %s", doc["$id"], events.BaseURL+n)
			}
			if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %v, want draft 2020-12", doc["$schema"])
			}
			// Every object schema must close itself; every pattern must be one the
			// Go matchers implement.
			var walk func(path string, v any)
			walk = func(path string, v any) {
				switch v := v.(type) {
				case map[string]any:
					if v["type"] == "object" && path != "/properties/data" {
						if v["additionalProperties"] != false {
							t.Errorf("%s: object without additionalProperties: false", path)
						}
					}
					if p, ok := v["pattern"].(string); ok && !known[p] {
						t.Errorf("%s: pattern %q is not one of the Go Pattern constants", path, p)
					}
					for k, c := range v {
						walk(path+"/"+k, c)
					}
				case []any:
					for i, c := range v {
						walk(path+"/"+string(rune('0'+i)), c)
					}
				}
			}
			walk("", doc)
		})
	}
	// The enum of schema must list exactly the known schemas.
	b, _ := fs.ReadFile(events.FS, events.Envelope)
	var env struct {
		Properties struct {
			Schema struct {
				Enum []Schema `json:"enum"`
			} `json:"schema"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(env.Properties.Schema.Enum, Schemas()) {
		t.Errorf("envelope schema enum %v, want %v", env.Properties.Schema.Enum, Schemas())
	}
}

func TestValidVectors(t *testing.T) {
	vectors := readDir(t, "valid")
	perCategory := map[Schema]int{}
	for _, name := range sortedKeys(vectors) {
		b := vectors[name]
		t.Run(name, func(t *testing.T) {
			if ok, err := schemaAccepts(t, b); !ok {
				t.Fatalf("JSON Schema rejects a valid vector: %v", err)
			}
			ev, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if err := Validate(&ev, testNow, Limits{}); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			perCategory[ev.Schema]++
			// The canonical encoding must decode to the same event and stay valid.
			out, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			again, err := Decode(out)
			if err != nil {
				t.Fatalf("Decode(Marshal(ev)): %v\n%s", err, out)
			}
			if !sameEvent(ev, again) {
				t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, again)
			}
			if ok, err := schemaAccepts(t, out); !ok {
				t.Fatalf("JSON Schema rejects the canonical encoding: %v\n%s", err, out)
			}
		})
	}
	for _, s := range Schemas() {
		if perCategory[s] < 2 {
			t.Errorf("%s has %d valid vectors, want at least 2", s, perCategory[s])
		}
	}
}

func TestInvalidVectors(t *testing.T) {
	vectors := readDir(t, "invalid")
	expected := readExpected(t)
	for name := range expected {
		if _, ok := vectors[name]; !ok {
			t.Errorf("expected.json names %s, which does not exist", name)
		}
	}
	if len(vectors) < 25 {
		t.Errorf("%d invalid vectors, want at least 25", len(vectors))
	}
	for _, name := range sortedKeys(vectors) {
		b := vectors[name]
		t.Run(name, func(t *testing.T) {
			exp, ok := expected[name]
			if !ok {
				t.Fatalf("no entry in expected.json")
			}
			if exp.Reason == "" || !exp.Reason.Known() || (exp.Validate != "" && !exp.Validate.Known()) {
				t.Fatalf("expected.json entry %+v names no known reason", exp)
			}
			var got Reason
			ev, err := Decode(b)
			if err == nil {
				err = Validate(&ev, testNow, Limits{})
			}
			if err != nil {
				var rej *Rejection
				if !errors.As(err, &rej) {
					t.Fatalf("error %v is not a *Rejection", err)
				}
				got = rej.Reason
			}
			if got != exp.Validate {
				t.Errorf("Decode+Validate reason = %q (%v), want %q", got, err, exp.Validate)
			}
			ok, serr := schemaAccepts(t, b)
			if !ok != exp.SchemaRejects {
				t.Errorf("JSON Schema rejects = %v (%v), want %v", !ok, serr, exp.SchemaRejects)
			}
		})
	}
}
