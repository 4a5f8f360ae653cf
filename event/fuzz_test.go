package event

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func addVectors(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		vectors := readDir(f, dir)
		for _, k := range sortedKeys(vectors) {
			f.Add(vectors[k])
		}
	}
	f.Add([]byte(base))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"data":{}}`))
	f.Add([]byte(`{"schema":"settings/v1","data":{"value":-0}}`))
}

// checkRejection holds every rejection to the contract: a known, malformed-
// class reason (Decode and Validate never judge content), and a field path made
// only of schema keys, so that it cannot carry what was sent.
func checkRejection(t *testing.T, err error) *Rejection {
	t.Helper()
	var rej *Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("error %v (%T) is not a *Rejection", err, err)
	}
	if !rej.Reason.Known() || rej.Class() != ClassMalformed {
		t.Fatalf("reason %q: want a known malformed-class reason", rej.Reason)
	}
	for _, part := range strings.Split(rej.Field, ".") {
		if rej.Field != "" && part != "*" && part != "data" && part != "client" &&
			!contains(envelopeKeys, part) && !contains(clientKeys, part) && !isPayloadKey(part) {
			t.Fatalf("field path %q holds something that is not a schema key", rej.Field)
		}
	}
	return rej
}

func contains(keys []string, k string) bool {
	for _, x := range keys {
		if x == k {
			return true
		}
	}
	return false
}

func isPayloadKey(k string) bool {
	for _, ks := range [][]string{tenantProfileKeys, clientEnvKeys, appAccessKeys, featureUseKeys, settingsKeys, operationKeys} {
		if contains(ks, k) {
			return true
		}
	}
	return false
}

// FuzzDecode: Decode never panics, agrees with the independent encoding/json
// decoder on what a valid event is, and a valid event survives a round trip
// through its canonical encoding.
func FuzzDecode(f *testing.F) {
	addVectors(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Decode(b)
		std, stdErr := decodeStd(b)
		if err != nil {
			checkRejection(t, err)
			if stdErr == nil {
				// Both decoders must agree on validity once values are checked.
				// encoding/json hides a lone surrogate as U+FFFD, which then fails a pattern.
				if Validate(&std, testNow, Limits{}) == nil {
					t.Fatalf("Decode rejects (%v) what encoding/json accepts and validates: %q", err, b)
				}
			}
			return
		}
		if stdErr != nil {
			if Validate(&ev, testNow, Limits{}) == nil {
				t.Fatalf("encoding/json rejects (%v) what Decode accepts and validates: %q", stdErr, b)
			}
			return
		}
		if !sameEvent(ev, std) {
			t.Fatalf("decoders disagree on %q:\n%+v %+v\n%+v %+v", b, ev, ev.Data, std, std.Data)
		}
		if Validate(&ev, testNow, Limits{}) != nil {
			// The canonical encoding omits empty optional fields, so only a
			// valid event is expected to survive the round trip unchanged.
			return
		}
		out, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", ev, err)
		}
		again, err := Decode(out)
		if err != nil {
			t.Fatalf("canonical encoding %s does not decode: %v", out, err)
		}
		if !sameEvent(ev, again) {
			t.Fatalf("round trip changed %+v into %+v", ev, again)
		}
	})
}

// FuzzValidate is the differential check against the contract collectors
// build on: an event the Go side accepts must be accepted by the JSON Schema,
// and what the JSON Schema accepts may be refused by Go only for what JSON
// Schema cannot express (the time window, duplicate keys) or where Go is
// stricter on purpose (integers written as 1.0 or 1e0, invalid UTF-8, lone
// surrogates, impossible dates like February 30).
func FuzzValidate(f *testing.F) {
	addVectors(f)
	goOnly := map[Reason]bool{
		ReasonTooOld: true, ReasonInFuture: true, ReasonDuplicateKey: true,
		ReasonWrongType: true, ReasonMalformedJSON: true, ReasonInvalidTimestamp: true,
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Decode(b)
		if err == nil {
			err = Validate(&ev, testNow, Limits{})
		}
		schemaOK, schemaErr := schemaAccepts(t, b)
		if err == nil {
			if !schemaOK {
				t.Fatalf("Go accepts what the JSON Schema rejects (%v): %q", schemaErr, b)
			}
			// Anything accepted re-validates, also from its canonical form.
			if err := Validate(&ev, testNow, Limits{}); err != nil {
				t.Fatalf("second Validate: %v", err)
			}
			out, _ := json.Marshal(ev)
			again, err := Decode(out)
			if err != nil || Validate(&again, testNow, Limits{}) != nil {
				t.Fatalf("canonical form %s of an accepted event is rejected: %v", out, err)
			}
			return
		}
		rej := checkRejection(t, err)
		if schemaOK && !goOnly[rej.Reason] {
			t.Fatalf("JSON Schema accepts what Go rejects with %v: %q", err, b)
		}
		if schemaOK && rej.Reason == ReasonMalformedJSON && utf8.Valid(b) && !strings.Contains(string(b), `\u`) {
			t.Fatalf("JSON Schema accepts what Go calls malformed: %q", b)
		}
	})
}
