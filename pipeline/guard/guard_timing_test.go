package guard

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/shukei/shukei/event"
)

func compact(tb testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkInspect is the hot path: decode, validate and guard an accepted
// event, compact as collectors send it. Run with -cpu 1 for the per-core rate.
func BenchmarkInspect(b *testing.B) {
	vectors := readVectors(b, "valid")
	typical := compact(b, vectors["feature_use_record_create.json"])
	var mix [][]byte
	for _, k := range sorted(vectors) {
		mix = append(mix, compact(b, vectors[k]))
	}
	run := func(b *testing.B, msgs [][]byte) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, r := Inspect(msgs[i%len(msgs)], testNow, event.Limits{}); r != nil {
				b.Fatal(r)
			}
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	}
	b.Run("feature_use", func(b *testing.B) { run(b, [][]byte{typical}) })
	b.Run("mix", func(b *testing.B) { run(b, mix) })
}

// BenchmarkInspectRejected measures the slow path: content in a message that
// also fails to decode, found by ScanRaw.
func BenchmarkInspectRejected(b *testing.B) {
	msg := readVectors(b, "invalid")["unknown_field_data_subject.json"]
	b.ReportAllocs()
	for b.Loop() {
		if _, r := Inspect(msg, testNow, event.Limits{}); r == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	ev, err := event.Decode(readVectors(b, "valid")["feature_use_record_create.json"])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if r := Check(&ev); r != nil {
			b.Fatal(r)
		}
	}
}
