package attack

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/shukei/shukei/internal/vectors"
)

// leak is one value of the guard's corpus that must be refused (expect != "pass"), with every
// corpus entry that names the same value.
type leak struct {
	ref    string // file:line of its first entry
	field  string // the field the corpus entry is about
	value  string
	expect string
	note   string
	others int             // further corpus entries with the same value
	fields map[string]bool // every field a corpus entry with this value is about
}

// crossField says whether f is a field no corpus entry of the value is about.
func (l *leak) crossField(f string) bool { return !l.fields[f] }

func (l *leak) describe() string {
	more := ""
	if l.others > 0 {
		more = fmt.Sprintf(" +%d more corpus entries", l.others)
	}
	return fmt.Sprintf("(corpus %s: %s in %s, %q%s)", l.ref, l.expect, l.field, l.note, more)
}

// loadCorpus reads every schemas/testdata/guard/*.jsonl file (whatever files there are when
// the test runs): the leak cases, distinct by value, and the (field, value) pairs the corpus
// says must pass.
func loadCorpus(t *testing.T, root string) ([]*leak, map[[2]string]bool, []string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "schemas", "testdata", "guard", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("harness: no corpus files in schemas/testdata/guard (%v)", err)
	}
	sort.Strings(files)
	byValue := map[string]*leak{}
	var leaks []*leak
	pass := map[[2]string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for line := 1; sc.Scan(); line++ {
			text := strings.TrimSpace(sc.Text())
			if text == "" {
				continue
			}
			var c struct {
				Field  string  `json:"field"`
				Value  *string `json:"value"`
				Expect string  `json:"expect"`
				Note   string  `json:"note"`
			}
			if err := json.Unmarshal([]byte(text), &c); err != nil || c.Value == nil || c.Expect == "" {
				t.Fatalf("harness: %s:%d is not a corpus case {field, value, expect, note}: %v", filepath.Base(f), line, err)
			}
			if c.Expect == "pass" {
				pass[[2]string{c.Field, *c.Value}] = true
				continue
			}
			if l := byValue[*c.Value]; l != nil {
				l.others++
				l.fields[c.Field] = true
				continue
			}
			l := &leak{ref: fmt.Sprintf("%s:%d", filepath.Base(f), line), field: c.Field, value: *c.Value, expect: c.Expect, note: c.Note, fields: map[string]bool{c.Field: true}}
			byValue[l.value] = l
			leaks = append(leaks, l)
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if len(leaks) == 0 {
		t.Fatalf("harness: the corpus has no leak case")
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	return leaks, pass, names
}

// vector is one valid event of schemas/testdata/valid with the free-string fields it has.
type vector struct {
	name   string
	ev     map[string]any
	schema string
	fields []string // "event_id", "client.os_version", "data.feature_id", …
	user   bool     // the category has a user
}

// envelopeFields are the envelope's free-string fields (the brief's list: the others are
// enumerations, the timestamp and the schema name).
var envelopeFields = []string{"event_id", "tenant_id", "source", "user", "client.os_version"}

// loadVectors reads the valid vectors and, from the JSON Schemas, the string fields of each
// category's payload.
func loadVectors(t *testing.T, root string) []*vector {
	t.Helper()
	raw := vectors.Read(t, filepath.Join(root, "schemas", "testdata"), "valid")
	var names []string
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	fieldsOf := map[string][]string{}
	var out []*vector
	for _, n := range names {
		ev, err := decode(raw[n])
		if err != nil {
			t.Fatalf("harness: valid vector %s: %v", n, err)
		}
		schema, _ := ev["schema"].(string)
		if _, ok := fieldsOf[schema]; !ok {
			fieldsOf[schema] = payloadStringFields(t, root, schema)
		}
		v := &vector{name: n, ev: ev, schema: schema}
		_, v.user = ev["user"]
		for _, f := range envelopeFields {
			if _, ok := get(ev, f); ok {
				v.fields = append(v.fields, f)
			}
		}
		for _, f := range fieldsOf[schema] {
			if _, ok := get(ev, "data."+f); ok {
				v.fields = append(v.fields, "data."+f)
			}
		}
		out = append(out, v)
	}
	return out
}

// payloadStringFields reads schemas/events/<category>.<version>.json and returns the payload
// properties that can hold a string (type string, a string enumeration, or a oneOf/anyOf
// branch of either).
func payloadStringFields(t *testing.T, root, schema string) []string {
	t.Helper()
	file := filepath.Join(root, "schemas", "events", strings.ReplaceAll(schema, "/", ".")+".json")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("harness: the JSON Schema of %q: %v", schema, err)
	}
	var s struct {
		Properties map[string]map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("harness: %s: %v", file, err)
	}
	var out []string
	for name, p := range s.Properties {
		if stringish(p) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func stringish(p map[string]any) bool {
	switch ty := p["type"].(type) {
	case string:
		if ty == "string" {
			return true
		}
	case []any:
		for _, x := range ty {
			if x == "string" {
				return true
			}
		}
	}
	if e, ok := p["enum"].([]any); ok && len(e) > 0 {
		all := true
		for _, x := range e {
			if _, ok := x.(string); !ok {
				all = false
			}
		}
		if all {
			return true
		}
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		if bs, ok := p[k].([]any); ok {
			for _, b := range bs {
				if m, ok := b.(map[string]any); ok && stringish(m) {
					return true
				}
			}
		}
	}
	return false
}

func decode(b []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var ev map[string]any
	if err := d.Decode(&ev); err != nil {
		return nil, err
	}
	return ev, nil
}

func get(ev map[string]any, path string) (any, bool) {
	parts := strings.Split(path, ".")
	var cur any = ev
	for _, p := range parts {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func set(ev map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	m := ev
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	default:
		return v
	}
}

// sent is one event the test sent, on one path.
type sent struct {
	path    string // "collector" or "kafka"
	vector  string
	field   string // the field holding the attack value ("" for none)
	leak    *leak  // the corpus value in it, if any
	label   string // what else it is (test 2 and 3)
	tenant  string
	eventID string
	user    string // the raw user id recorded ("" when the user field is the attack or there is none)
	content []string
	body    []byte
	key     []byte
	answer  posted // the collector's answer
}

func (e *sent) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s copy of %s", e.path, e.vector)
	if e.label != "" {
		fmt.Fprintf(&b, " [%s]", e.label)
	}
	if e.field != "" {
		fmt.Fprintf(&b, " with %s =", e.field)
		if e.leak != nil {
			fmt.Fprintf(&b, " %s %s", safe(e.leak.value), e.leak.describe())
		} else {
			b.WriteString(" a unique value")
		}
	}
	return b.String()
}

// build makes an event from a vector: a fresh event_id, occurred_at a moment ago, the tenant,
// a fresh random user where the category has one, then field set to value (which wins over
// all of these). It returns the event's JSON (no HTML escaping, as a client would write it).
func build(v *vector, tenant, field string, value any) (body []byte, eventID, user string) {
	ev := deepCopy(v.ev).(map[string]any)
	eventID = uuid.NewString()
	ev["event_id"] = eventID
	ev["occurred_at"] = time.Now().UTC().Add(-30 * time.Second).Format(time.RFC3339Nano)
	ev["tenant_id"] = tenant
	if v.user {
		user = uuid.NewString()
		ev["user"] = user
	}
	if field != "" {
		set(ev, field, value)
		switch field {
		case "event_id":
			eventID = fmt.Sprint(value)
		case "user":
			user = ""
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), eventID, user
}

// identify maps a raw-topic message back to the event the test sent: by its exact bytes (the
// Kafka path) or by its event_id (what the collector wrote).
type identify struct {
	byBody map[string]*sent
	byID   map[string][]*sent
}

func newIdentify(evs []*sent) *identify {
	id := &identify{byBody: map[string]*sent{}, byID: map[string][]*sent{}}
	for _, e := range evs {
		if e.path == "kafka" {
			id.byBody[string(e.body)] = e
		}
		id.byID[e.eventID] = append(id.byID[e.eventID], e)
	}
	return id
}

func (id *identify) of(value []byte) *sent {
	if e := id.byBody[string(value)]; e != nil {
		return e
	}
	var m struct {
		EventID string `json:"event_id"`
	}
	if json.Unmarshal(value, &m) == nil {
		for _, e := range id.byID[m.EventID] {
			if e.path == "collector" {
				return e
			}
		}
		if es := id.byID[m.EventID]; len(es) > 0 {
			return es[0]
		}
	}
	return nil
}
