package guard

import (
	"strings"
	"testing"

	"github.com/shukei/shukei/event"
)

func addSeeds(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		vectors := readVectors(f, dir)
		for _, k := range sorted(vectors) {
			f.Add(vectors[k])
		}
	}
	for _, c := range readCorpus(f) {
		f.Add(eventWith(f, c.Field, c.Value))
	}
	f.Add([]byte("Hello, please call 090-1234-5678"))
	f.Add([]byte(`{"a":"\ud800"}`))
}

// safePath reports whether a rejection's field is made of schema keys and "*"
// only, so that it cannot carry what the message held.
func safePath(p string) bool {
	if p == "" || p == "*" {
		return true
	}
	for _, part := range strings.Split(p, ".") {
		if part != "*" && !vocabulary[part] {
			return false
		}
	}
	return true
}

func checkFinding(t *testing.T, r *event.Rejection) {
	t.Helper()
	if !r.Reason.Known() {
		t.Fatalf("unknown reason %q", r.Reason)
	}
	if !safePath(r.Field) {
		t.Fatalf("field path %q is not made of schema keys", r.Field)
	}
}

// FuzzScanRaw: any bytes at all; ScanRaw never panics, finds only input-data
// reasons, and names no field it was not given by the schema.
func FuzzScanRaw(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := ScanRaw(b)
		if r == nil {
			return
		}
		checkFinding(t, r)
		if r.Class() != event.ClassInputData {
			t.Fatalf("ScanRaw returned %s, not an input-data reason", r.Reason)
		}
		if again := ScanRaw(b); again == nil || again.Reason != r.Reason || again.Field != r.Field {
			t.Fatalf("ScanRaw is not deterministic: %v then %v", r, again)
		}
	})
}

// FuzzInspect holds the pipeline decision to its invariants: what it accepts
// decodes, validates and passes the guard on its own; what it rejects as
// malformed has no input data anywhere (else the DLQ would keep content); and
// a rejection never carries more than DLQ metadata.
func FuzzInspect(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, r := Inspect(b, testNow, event.Limits{})
		if r == nil {
			again, err := event.Decode(b)
			if err != nil {
				t.Fatalf("accepted what Decode rejects: %v", err)
			}
			if err := event.Validate(&again, testNow, event.Limits{}); err != nil {
				t.Fatalf("accepted what Validate rejects: %v", err)
			}
			if c := Check(&ev); c != nil {
				t.Fatalf("accepted what Check rejects: %v", c)
			}
			return
		}
		checkFinding(t, r)
		if ev.Data != nil || ev.User != "" || ev.Source != "" || ev.Client != (event.Client{}) {
			t.Fatalf("rejection returned more than metadata: %+v", ev)
		}
		if r.Class() == event.ClassMalformed {
			if s := ScanRaw(b); s != nil {
				t.Fatalf("rejected as %s although the message holds input data (%v): the payload would be kept", r.Reason, s)
			}
		}
		if _, again := Inspect(b, testNow, event.Limits{}); again == nil || again.Reason != r.Reason {
			t.Fatalf("Inspect is not deterministic: %v then %v", r, again)
		}
	})
}

// FuzzCheckField: every field kind, any value; never panics, deterministic.
func FuzzCheckField(f *testing.F) {
	paths := make([]string, 0, len(pathKinds)+1)
	for p := range pathKinds {
		paths = append(paths, p)
	}
	paths = append(paths, "unknown")
	for _, c := range readCorpus(f) {
		f.Add(uint8(0), c.Value)
	}
	f.Fuzz(func(t *testing.T, i uint8, v string) {
		// The fast path must never pass what the detectors catch (the identifier classes are
		// judged before it, in classify).
		if plainID(v) {
			for _, k := range []kind{kindAny, kindID, kindToken} {
				if r := scan(k, v); r != "" && identifier(k, v) == "" {
					t.Fatalf("plainID passes %q, which scan(%d) flags as %s", v, k, r)
				}
			}
		}
		for _, p := range []string{paths[int(i)%len(paths)], "data.feature_id", "user"} {
			r := CheckField(p, v)
			if r == nil {
				continue
			}
			checkFinding(t, r)
			if r.Class() != event.ClassInputData {
				t.Fatalf("CheckField returned %s", r.Reason)
			}
			if again := CheckField(p, v); again == nil || again.Reason != r.Reason {
				t.Fatalf("not deterministic: %v then %v", r, again)
			}
		}
	})
}
