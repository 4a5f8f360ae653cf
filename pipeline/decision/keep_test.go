package decision

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/vectors"
	"github.com/shukei/shukei/pipeline/guard"
	"github.com/shukei/shukei/registry"
)

const testdata = "../../schemas/testdata"

// leakValues reads every leak of the guard's corpora (schemas/testdata/guard/*.jsonl).
func leakValues(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(testdata, "guard", "*.jsonl"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no corpus files: %v", err)
	}
	var out []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			tb.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var c struct{ Value, Expect string }
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				tb.Fatalf("%s: %v", f, err)
			}
			if c.Expect != "pass" {
				out = append(out, c.Value)
			}
		}
		fh.Close()
	}
	return out
}

// stringPaths lists the paths of every string value in a decoded vector.
func stringPaths(m map[string]any, prefix string) []string {
	var out []string
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		switch x := v.(type) {
		case string:
			out = append(out, p)
		case map[string]any:
			out = append(out, stringPaths(x, p)...)
		}
	}
	return out
}

func setPath(m map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		m = m[p].(map[string]any)
	}
	m[parts[len(parts)-1]] = v
}

// contains reports whether kept holds v, as it is, JSON-escaped or in other case.
func contains(kept []byte, v string) bool {
	if v == "" {
		return false
	}
	esc, _ := json.Marshal(v)
	lower := bytes.ToLower(kept)
	return bytes.Contains(kept, []byte(v)) || bytes.Contains(kept, esc[1:len(esc)-1]) ||
		bytes.Contains(lower, []byte(strings.ToLower(v)))
}

// checkKept is the oracle for a kept payload, written from the rule rather than from keep.go:
// valid JSON; every key a schema key or a hash; every string value a hash or one that its
// field's grammar and the guard accept; the user, if any, a pseudonym.
func checkKept(t *testing.T, kept []byte) {
	t.Helper()
	var top map[string]any
	if err := json.Unmarshal(kept, &top); err != nil {
		t.Fatalf("kept payload is not a JSON object: %v", err)
	}
	isHash := func(s string) bool {
		h, ok := strings.CutPrefix(s, HashPrefix)
		_, err := hex.DecodeString(h)
		return ok && len(h) == 32 && err == nil
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, y := range x {
				if isHash(k) {
					if s, ok := y.(string); !ok || !isHash(s) {
						t.Errorf("unknown key kept with a value that is not a hash: %.3s…", k)
					}
					continue
				}
				if !schemaKey(k) {
					t.Errorf("key %.3s… (len %d) kept at %s", k, len(k), path)
				}
				p := k
				if path != "" {
					p = path + "." + k
				}
				walk(p, y)
			}
		case string:
			switch {
			case isHash(x):
			case path == "user":
				if b, err := hex.DecodeString(x); err != nil || len(b) != 16 {
					t.Errorf("user kept as something other than a pseudonym (len %d)", len(x))
				}
			case guard.CheckField(path, x) != nil:
				t.Errorf("%s kept a value the guard refuses", path)
			default:
				for _, r := range x {
					if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-:/+TZ", r)) {
						t.Errorf("%s kept a character outside every field grammar: %q", path, r)
						break
					}
				}
			}
		case []any:
			t.Errorf("%s kept an array", path)
		}
	}
	walk("", top)
}

// TestRefusalsKeepNoRefusedValue places every corpus leak in every string field of every valid
// vector, and checks what each refusal keeps: never the value, never the raw user, only what
// the rule allows. Leaks the guard misses are the corpus test's business; they are counted.
func TestRefusalsKeepNoRefusedValue(t *testing.T) {
	valid := vectors.Read(t, testdata, "valid")
	leaks := leakValues(t)
	var tenants []*registry.Tenant
	for _, b := range valid {
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		id, _ := m["tenant_id"].(string)
		tenants = append(tenants, &registry.Tenant{ID: id, Status: "contracted", Edition: "standard", SizeBand: "m"})
	}
	c := testContext(t, tenants...)
	c.Now = time.Now()
	var placed, refused, accepted, kept int
	for name, b := range valid {
		var base map[string]any
		if err := json.Unmarshal(b, &base); err != nil {
			t.Fatal(err)
		}
		for _, path := range stringPaths(base, "") {
			if path == "occurred_at" || path == "schema" {
				continue
			}
			for _, leak := range leaks {
				var m map[string]any
				_ = json.Unmarshal(b, &m)
				m["event_id"] = uuid.NewString()
				m["occurred_at"] = c.Now.Add(-time.Minute).UTC().Format(time.RFC3339)
				user := "raw-user-" + uuid.NewString()[:13]
				if _, ok := m["user"]; ok {
					m["user"] = user
				}
				setPath(m, path, leak)
				msg, _ := json.Marshal(m)
				placed++
				_, rej := Decide(msg, c)
				if rej == nil || path == "tenant_id" && event.IsID(leak) && guard.CheckUnknownTenant(leak) == nil {
					// Accepted, or refused only because no such tenant exists while the guard
					// sees nothing in the id: either way a guard miss, which TestCorpus counts.
					accepted++
					continue
				}
				refused++
				for what, s := range map[string]string{"field": rej.Field, "tenant": rej.Tenant, "schema": rej.Schema, "event id": rej.EventID} {
					if s != "" && strings.Contains(s, leak) && !harmless(leak, m, path) {
						t.Errorf("%s/%s: rejection %s holds the value (%.3s…, len %d)", name, path, what, leak, len(leak))
					}
				}
				if rej.Payload == nil {
					continue
				}
				kept++
				if contains(rej.Payload, leak) && !harmless(leak, m, path) {
					t.Errorf("%s/%s: kept payload holds the refused value (%.3s…, len %d): %s", name, path, leak, len(leak), rej.Reason)
				}
				if contains(rej.Payload, user) {
					t.Errorf("%s/%s: kept payload holds the raw user", name, path)
				}
				checkKept(t, rej.Payload)
				if t.Failed() {
					t.FailNow()
				}
			}
		}
	}
	t.Logf("%d placements: %d refused (%d kept a content-free payload), %d accepted (guard misses, see TestCorpus)", placed, refused, kept, accepted)
	if refused == 0 || kept == 0 {
		t.Fatal("nothing refused or nothing kept: the test saw nothing")
	}
}

// harmless reports whether a leak appears in the kept payload only because the vector itself
// holds the same text elsewhere (a leak "open" would match the action "open").
func harmless(leak string, m map[string]any, path string) bool {
	setPath(m, path, "")
	b, _ := json.Marshal(m)
	return contains(b, leak)
}

func TestKeepRules(t *testing.T) {
	acme := &registry.Tenant{ID: "acme", Status: "contracted", Edition: "standard", SizeBand: "m"}
	gone := &registry.Tenant{ID: "gone", Status: "terminated", Edition: "standard", SizeBand: "m"}
	c := testContext(t, acme, gone)
	at := now.Add(-time.Minute)
	pseudo, _ := c.Keyring.Pseudonymize("acme", at, "u-1")

	f := func(name string, msg []byte, want func(t *testing.T, kept map[string]any)) {
		t.Run(name, func(t *testing.T) {
			_, rej := Decide(msg, c)
			if rej == nil {
				t.Fatal("accepted")
			}
			if rej.Payload == nil {
				want(t, nil)
				return
			}
			checkKept(t, rej.Payload)
			var kept map[string]any
			if err := json.Unmarshal(rej.Payload, &kept); err != nil {
				t.Fatal(err)
			}
			want(t, kept)
		})
	}
	data := func(k map[string]any) map[string]any { d, _ := k["data"].(map[string]any); return d }
	hashed := func(v any) bool { s, _ := v.(string); return strings.HasPrefix(s, HashPrefix) }

	f("a malformed value is hashed, the rest kept, the user pseudonymised",
		raw(t, func(m map[string]any) { m["data"].(map[string]any)["feature_id"] = "4111 1111 1111 1111" }),
		func(t *testing.T, k map[string]any) {
			if !hashed(data(k)["feature_id"]) {
				t.Errorf("feature_id kept as %v", data(k)["feature_id"])
			}
			if data(k)["count"] != 2.0 || k["source"] != "web" || k["tenant_id"] != "acme" {
				t.Errorf("valid fields not kept: %v", k)
			}
			if k["user"] != hex.EncodeToString(pseudo[:]) {
				t.Errorf("user kept as %v, want the pseudonym", k["user"])
			}
		})
	f("unknown keys and their values are hashed, at every level",
		raw(t, func(m map[string]any) {
			m["note"] = "call me"
			m["data"].(map[string]any)["Yamada Taro"] = map[string]any{"x": 1}
			m["client"].(map[string]any)["ua"] = 7
		}),
		func(t *testing.T, k map[string]any) {
			n := 0
			for key, v := range k {
				if hashed(key) {
					n++
					if !hashed(v) {
						t.Errorf("value of an unknown key kept: %v", v)
					}
				}
			}
			for _, obj := range []map[string]any{data(k), k["client"].(map[string]any)} {
				for key := range obj {
					if hashed(key) {
						n++
					}
				}
			}
			if n != 3 {
				t.Errorf("%d unknown keys hashed, want 3: %v", n, k)
			}
		})
	f("numbers out of bounds and of the wrong type are hashed",
		raw(t, func(m map[string]any) {
			m["data"].(map[string]any)["count"] = json.Number("4111111111111111")
			m["data"].(map[string]any)["records_registered"] = "09012345678"
		}),
		func(t *testing.T, k map[string]any) {
			if !hashed(data(k)["count"]) || !hashed(data(k)["records_registered"]) {
				t.Errorf("kept %v", data(k))
			}
		})
	f("an unknown tenant keeps no user",
		raw(t, func(m map[string]any) { m["tenant_id"] = "nobody" }),
		func(t *testing.T, k map[string]any) {
			if _, ok := k["user"]; ok {
				t.Error("user kept for an unknown tenant")
			}
			if k["tenant_id"] != "nobody" || data(k)["feature_id"] != "app.record.create" {
				t.Errorf("the valid event is not kept for replay: %v", k)
			}
		})
	f("a terminated tenant keeps nothing but the refusal's metadata",
		raw(t, func(m map[string]any) { m["tenant_id"] = "gone" }),
		func(t *testing.T, k map[string]any) {
			if k != nil {
				t.Errorf("kept %v for a terminated tenant", k)
			}
		})
	f("a malformed event of a terminated tenant keeps no user",
		raw(t, func(m map[string]any) { m["tenant_id"] = "gone"; m["source"] = "Not An Id" }),
		func(t *testing.T, k map[string]any) {
			if _, ok := k["user"]; ok {
				t.Error("user kept for a terminated tenant")
			}
		})
	f("an unparseable timestamp drops the user (no period to pseudonymise in)",
		raw(t, func(m map[string]any) { m["occurred_at"] = "yesterday" }),
		func(t *testing.T, k map[string]any) {
			if _, ok := k["user"]; ok {
				t.Error("user kept")
			}
			if !hashed(k["occurred_at"]) {
				t.Errorf("occurred_at kept as %v", k["occurred_at"])
			}
		})
	f("a newer schema version of a known category is kept for replay",
		raw(t, func(m map[string]any) { m["schema"] = "feature_use/v2" }),
		func(t *testing.T, k map[string]any) {
			if k["schema"] != "feature_use/v2" || data(k)["feature_id"] != "app.record.create" {
				t.Errorf("kept %v", k)
			}
		})
	f("an unknown category keeps no data field",
		raw(t, func(m map[string]any) { m["schema"] = "diary/v1" }),
		func(t *testing.T, k map[string]any) {
			if !hashed(k["schema"]) {
				t.Errorf("schema kept as %v", k["schema"])
			}
			for key := range data(k) {
				if !hashed(key) {
					t.Errorf("data key %s kept", key)
				}
			}
		})
	f("duplicated keys keep neither copy's content",
		[]byte(`{"event_id":"`+uuid.NewString()+`","tenant_id":"acme","tenant_id":"yamada.taro","occurred_at":"`+at.Format(time.RFC3339)+`","schema":"feature_use/v1","source":"web","user":"u-1","client":{"os":"ios","device_kind":"mobile"},"data":{"feature_id":"a","feature_id":"taro@example.jp","count":1,"records_registered":0}}`),
		func(t *testing.T, k map[string]any) {
			if !bytes.Contains(mustJSON(k), []byte(`"feature_id"`)) || contains(mustJSON(k), "taro@example.jp") {
				t.Errorf("kept %v", k)
			}
		})
	f("broken JSON keeps nothing", []byte(`{"user":"hanako@example.jp", "data": {`),
		func(t *testing.T, k map[string]any) {
			if k != nil {
				t.Errorf("kept %v", k)
			}
		})
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// FuzzKeep: whatever the message, a refusal keeps only what the rule allows.
func FuzzKeep(f *testing.F) {
	for _, b := range vectors.Read(f, testdata, "valid") {
		f.Add(b)
	}
	for _, b := range vectors.Read(f, testdata, "invalid") {
		f.Add(b)
	}
	acme := &registry.Tenant{ID: "acme", Status: "contracted", Edition: "standard", SizeBand: "m"}
	c := testContext(&testing.T{}, acme)
	f.Fuzz(func(t *testing.T, msg []byte) {
		_, rej := Decide(msg, c)
		if rej == nil || rej.Payload == nil {
			return
		}
		checkKept(t, rej.Payload)
	})
}
