package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestBenchPipelineFillsEveryKey runs `shukei bench pipeline` (the built binary: it starts its
// roles as child processes of itself) over a small load on the real services and checks that
// every key the benchmark table promises is there with a positive value — the ClickHouse Kafka
// engine's baseline included.
func TestBenchPipelineFillsEveryKey(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every role as a process: not in -short")
	}
	ownServices(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "shukei")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	reports := map[string]any{"report_p95_ms": 42.0}
	b, _ := json.Marshal(reports)
	if err := os.WriteFile(filepath.Join(dir, "reports.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	outPath := filepath.Join(dir, "latest.json")
	cmd := exec.Command(bin, "bench", "pipeline", "--events", "100000", "--out", outPath)
	cmd.Dir = root
	// The processor's rate runs from its first write to its last, so this small load must
	// take several batches (the default, 200,000, would store it in one).
	cmd.Env = append(os.Environ(), "SHUKEI_PROCESSOR_BATCH_SIZE=20000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bench pipeline: %v\n%s", err, out)
	} else {
		t.Logf("%s", out)
	}
	var res map[string]any
	b, err = os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"collector_events_per_sec", "processor_events_per_sec", "raw_copy_events_per_sec", "processor_vs_raw_ratio",
		"decoding_copy_events_per_sec", "processor_vs_decoding_copy_ratio",
		"aggregator_events_per_sec", "clickhouse_kafka_engine_events_per_sec", "processor_vs_kafka_engine_ratio",
		"end_to_end_p95_ms", "report_p95_ms", "cores"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, res[k])
		}
	}
	for _, k := range []string{"processor_cpu_profile", "processor_allocs_profile"} {
		name, _ := res[k].(string)
		if st, err := os.Stat(filepath.Join(dir, name)); name == "" || err != nil || st.Size() == 0 {
			t.Errorf("%s = %q: %v", k, name, err)
		}
	}
	for _, k := range []string{"rss_peak_mb", "cpu_us_per_event"} {
		m, _ := res[k].(map[string]any)
		for _, role := range []string{"collector", "processor", "aggregator", "query"} {
			if v, ok := m[role].(float64); !ok || v <= 0 {
				t.Errorf("%s.%s = %v, want a positive number", k, role, m[role])
			}
		}
	}
}
