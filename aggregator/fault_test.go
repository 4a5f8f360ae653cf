//go:build faults

package aggregator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shukei/shukei/internal/freeport"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/loadgen/population"
)

// TestAggregatorSurvivesKills runs the real `shukei aggregator` over four closed days and
// SIGKILLs it five times at random moments — while reading, closing windows or releasing —
// restarting it each time. Afterwards every day is released exactly once (one release id), the
// ledger holds one charge per day, and each day's stored partials equal a fault-free in-process
// computation over the same messages.
func TestAggregatorSurvivesKills(t *testing.T) {
	r := newAggRig(t, 300)
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var windows []Window
	total := 0
	for d := 4; d >= 2; d-- {
		w := WindowOf(today.AddDate(0, 0, -d), 24*time.Hour)
		windows = append(windows, w)
		evs := r.pop.Day(w.Start)
		total += len(evs)
		r.produce(t, evs, 20)
	}
	// Yesterday has no events but closes too, and is released like any day: whether a window is
	// released never depends on its data.
	windows = append(windows, WindowOf(today.AddDate(0, 0, -1), 24*time.Hour))
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "shukei")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(root, "cmd", "shukei")).CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	keyFile := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(keyFile, []byte(r.keyText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(append(os.Environ(), servicetest.AggregatorEnv()...),
		"SHUKEI_CLICKHOUSE_DATABASE="+r.db, "SHUKEI_KAFKA_RAW_TOPIC="+r.cfg.Kafka.RawTopic, "SHUKEI_KAFKA_RELEASE_TOPIC="+r.cfg.Kafka.ReleaseTopic,
		"SHUKEI_AGGREGATOR_GROUP_ID="+r.cfg.Aggregator.GroupID, "SHUKEI_AGGREGATOR_RELEASE_INTERVAL=200ms",
		"SHUKEI_AGGREGATOR_FEATURES="+strings.Join(population.Features, ","), "SHUKEI_AGGREGATOR_SETTINGS="+strings.Join(population.Settings, ","),
		"SHUKEI_ANONYMIZER_MASTER_KEY_FILE="+keyFile, "SHUKEI_ANONYMIZER_MASTER_KEY=", "SHUKEI_LOG_LEVEL=warn",
	)
	logs := &servicetest.Output{}
	startOne := func() *exec.Cmd {
		addr, err := freeport.Addr()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "aggregator")
		cmd.Env = append(env, "SHUKEI_AGGREGATOR_LISTEN="+addr)
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
				resp.Body.Close()
				break
			}
		}
		return cmd
	}
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for k := 1; k <= 5; k++ {
		cmd := startOne()
		wait := time.Duration(20+rnd.IntN(100*k*k)) * time.Millisecond // early kills land mid-read, later ones mid-close or after
		time.Sleep(wait)
		released := 0
		for _, w := range windows {
			if len(r.releasesOf(t, w)) > 0 {
				released++
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		t.Logf("kill %d: SIGKILL after %s, %d of %d days released by then, %d ledger entries", k, wait, released, len(windows), r.ledgerEntries(t))
	}
	last := startOne()
	defer func() {
		_ = last.Process.Signal(syscall.SIGTERM)
		_ = last.Wait()
		if t.Failed() {
			t.Logf("aggregator output:\n%s", logs.String())
		}
	}()
	eventually(t, "every day released", 3*time.Minute, func() bool {
		for _, w := range windows {
			if len(r.releasesOf(t, w)) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second) // anything released twice would show now
	for _, w := range windows {
		ids := map[string]int{}
		for _, x := range r.releasesOf(t, w) {
			ids[x.ReleaseID]++
		}
		if len(ids) != 1 {
			t.Errorf("day %s released %d times: %v", w.Start.Format("2006-01-02"), len(ids), ids)
		}
		if !w.Start.Equal(today.AddDate(0, 0, -1)) { // the empty day has no partials to compare
			r.checkPartialsAt(t, w, time.Now())
		}
	}
	if n := r.ledgerEntries(t); n != len(windows) {
		rows, _ := r.conn.Query(context.Background(), "SELECT release_id, window_start, epsilon FROM "+r.db+"_external_aggregate.budget_ledger ORDER BY seq")
		for rows.Next() {
			var id string
			var ws time.Time
			var eps float64
			_ = rows.Scan(&id, &ws, &eps)
			t.Logf("ledger: %s %s ε=%g", id, ws.Format(time.RFC3339), eps)
		}
		rows.Close()
		t.Errorf("ledger holds %d charges for %d days", n, len(windows))
	}
	fmt.Printf("aggregator faults: %d messages, 5 SIGKILLs; days released once=%d of %d, ledger charges=%d\n", total, len(windows), len(windows), r.ledgerEntries(t))
}
