package event

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// typicalFeatureUse is the most frequent event, compact as collectors send it.
func typicalFeatureUse(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, "valid", "feature_use_record_create.json"))
	if err != nil {
		tb.Fatal(err)
	}
	return compact(tb, b)
}

func compact(tb testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func BenchmarkDecode(b *testing.B) {
	msg := typicalFeatureUse(b)
	mix := readDir(b, "valid")
	msgs := make([][]byte, 0, len(mix))
	for _, k := range sortedKeys(mix) {
		msgs = append(msgs, compact(b, mix[k]))
	}
	decoders := []struct {
		name   string
		decode func([]byte) (Event, error)
	}{
		{"encoding_json", decodeStd},
		{"single_pass", Decode},
	}
	for _, d := range decoders {
		b.Run(d.name+"/feature_use", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := d.decode(msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
		b.Run(d.name+"/mix", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := d.decode(msgs[i%len(msgs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

func BenchmarkValidate(b *testing.B) {
	ev, err := Decode(typicalFeatureUse(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := Validate(&ev, testNow, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// The benchmark baseline must decode the vectors exactly as Decode does, or
// the comparison would be meaningless.
func TestStdDecoderAgrees(t *testing.T) {
	for _, dir := range []string{"valid", "invalid"} {
		vectors := readDir(t, dir)
		for _, name := range sortedKeys(vectors) {
			t.Run(dir+"/"+name, func(t *testing.T) {
				b := vectors[name]
				ev, err := Decode(b)
				std, stdErr := decodeStd(b)
				if (err == nil) != (stdErr == nil) {
					t.Fatalf("Decode: %v, encoding/json: %v", err, stdErr)
				}
				if err == nil && !sameEvent(ev, std) {
					t.Fatalf("Decode %+v\nencoding/json %+v", ev, std)
				}
			})
		}
	}
}
