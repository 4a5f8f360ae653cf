package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/pipeline/topic"
)

// Promise 17 through the commands, on the real services: keys made by init-key (and refused when
// others may read them), separate shukei processes appending to the audit log at once — one of
// them stopped with SIGSTOP in the middle and resumed — leaving one chain in which each
// process's record number is its own; anchors written by 'audit anchor' and 'ledger anchor'; and
// 'verify --anchor' failing, non-zero, on an edited, deleted or truncated trail.
func TestChainCommandsOnRealServices(t *testing.T) {
	ownServices(t)
	dir := t.TempDir()
	auditTopic := servicetest.Name(t, "audit.")
	t.Setenv("SHUKEI_AUDIT_TOPIC", auditTopic)
	t.Cleanup(func() { _ = topic.Delete(context.Background(), config.Default().Kafka.Brokers, auditTopic) })
	akey, lkey := filepath.Join(dir, "audit.key"), filepath.Join(dir, "ledger.key")
	if out, err := runCLI(t, "audit", "init-key", "--file", akey); err != nil {
		t.Fatalf("audit init-key: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "ledger", "init-key", "--file", lkey); err != nil {
		t.Fatalf("ledger init-key: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "audit", "init-key", "--file", akey); err == nil {
		t.Fatalf("init-key overwrote a key:\n%s", out)
	}
	if st, err := os.Stat(akey); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st, err)
	}
	t.Setenv("SHUKEI_AUDIT_KEY_FILE", akey)
	t.Setenv("SHUKEI_LEDGER_KEY_FILE", lkey)
	for _, args := range [][]string{{"migrate"}, {"topics"}} {
		if out, err := runCLI(t, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	// A key file others may read is refused.
	if err := os.Chmod(akey, 0o640); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, "audit", "verify"); err == nil || !strings.Contains(err.Error(), "readable or writable by group or others") {
		t.Fatalf("audit verify with a key file of mode 0640: %v\n%s", err, out)
	}
	if err := os.Chmod(akey, 0o600); err != nil {
		t.Fatal(err)
	}

	// Separate processes append at once ('dlq replay --dry-run' writes one audit record a run).
	bin := filepath.Join(t.TempDir(), "shukei")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	const procs, runs = 4, 3
	seqRe := regexp.MustCompile(`audit record #(\d+)`)
	var mu sync.Mutex
	var seqs []uint64
	var wg sync.WaitGroup
	errs := make(chan error, procs*runs)
	for p := range procs {
		wg.Go(func() {
			for range runs {
				var out bytes.Buffer
				cmd := exec.Command(bin, "dlq", "replay", "--dry-run", "--reason", "unknown_tenant")
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					errs <- err
					return
				}
				if p == 0 {
					// Stop it somewhere in its run, let the others append, resume it.
					time.Sleep(150 * time.Millisecond)
					_ = cmd.Process.Signal(syscall.SIGSTOP)
					time.Sleep(1500 * time.Millisecond)
					_ = cmd.Process.Signal(syscall.SIGCONT)
				}
				if err := cmd.Wait(); err != nil {
					errs <- fmt.Errorf("process %d: %v\n%s", p, err, out.String())
					return
				}
				m := seqRe.FindStringSubmatch(out.String())
				if m == nil {
					errs <- fmt.Errorf("process %d printed no audit record:\n%s", p, out.String())
					return
				}
				n, _ := strconv.ParseUint(m[1], 10, 64)
				mu.Lock()
				seqs = append(seqs, n)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for _, n := range seqs {
		if n == 0 || n > procs*runs || seen[n] {
			t.Fatalf("audit record numbers %v: each process's must be its own, 1..%d", seqs, procs*runs)
		}
		seen[n] = true
	}

	anchors := filepath.Join(dir, "anchors.jsonl")
	if out, err := runCLI(t, "audit", "anchor", "--out", anchors); err != nil {
		t.Fatalf("audit anchor: %v\n%s", err, out)
	}
	out, err := runCLI(t, "audit", "anchor") // printed, for a ticket
	var printed chain.Anchor
	if err != nil || json.Unmarshal([]byte(strings.TrimSpace(out)), &printed) != nil || printed.Seq != procs*runs || !chain.Keyed(printed.MAC) {
		t.Fatalf("audit anchor (stdout): %v\n%s", err, out)
	}
	if out, err := runCLI(t, "audit", "verify", "--anchor", anchors); err != nil || !strings.Contains(out, fmt.Sprintf("%d records, chain intact", procs*runs)) {
		t.Fatalf("audit verify --anchor: %v\n%s", err, out)
	}

	// The ledger: two aggregators' worth of appends of the same decisions, keyed.
	cfg := config.Default()
	if err := cfg.ApplyEnv(os.Environ()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := clickhouse.Open(cfg.ClickHouse.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, err := chain.LoadKey("ledger.key_file", lkey)
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var es []ledger.Entry
	for i := range 6 {
		es = append(es, ledger.Entry{ReleaseID: fmt.Sprintf("r%d", i), Purpose: "external_aggregate", Period: "2026-11", Epsilon: 0.1, Delta: 1e-9,
			L0: 1, LInf: 1, WindowStart: day.AddDate(0, 0, i), WindowEnd: day.AddDate(0, 0, i+1), QueryHash: "q", PolicyVersion: 1, At: day})
	}
	var lwg sync.WaitGroup
	for range 2 {
		c, err := clickhouse.Open(cfg.ClickHouse.Options())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		lwg.Go(func() {
			if _, err := ledger.New(c, cfg.ClickHouse.Database).WithKey(key).Append(ctx, "external_aggregate", es); err != nil {
				t.Error(err)
			}
		})
	}
	lwg.Wait()
	if out, err := runCLI(t, "ledger", "anchor", "--out", anchors); err != nil {
		t.Fatalf("ledger anchor: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "ledger", "verify", "--anchor", anchors); err != nil || !strings.Contains(out, "external_aggregate: 6 entries, chain intact") {
		t.Fatalf("ledger verify --anchor: %v\n%s", err, out)
	}

	mutate := func(sql, table string) {
		t.Helper()
		if err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
		db, tbl, _ := strings.Cut(table, ".")
		for deadline := time.Now().Add(30 * time.Second); ; {
			var pending uint64
			if err := conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0", db, tbl).Scan(&pending); err != nil {
				t.Fatal(err)
			}
			if pending == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("mutation not applied in 30s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// A refund: one charge deleted.
	lt := cfg.ClickHouse.Database + "_external_aggregate.budget_ledger"
	mutate("ALTER TABLE "+lt+" DELETE WHERE seq = 2", lt)
	if out, err := runCLI(t, "ledger", "verify", "--anchor", anchors); err == nil || !strings.Contains(err.Error(), "chain is broken") {
		t.Fatalf("ledger verify --anchor after a deleted charge: %v\n%s", err, out)
	}
	// The audit log's tail truncated: every record left verifies, the anchor does not.
	at := cfg.ClickHouse.Database + "_audit.audit_log"
	mutate(fmt.Sprintf("ALTER TABLE %s DELETE WHERE seq > %d", at, procs*runs-2), at)
	if out, err := runCLI(t, "audit", "verify"); err != nil {
		t.Fatalf("audit verify of the truncated chain, without the anchor: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "audit", "verify", "--anchor", anchors); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("audit verify --anchor after truncation: %v\n%s", err, out)
	}
	// An edit.
	mutate("ALTER TABLE "+at+" UPDATE reason = 'nothing to see' WHERE seq = 3", at)
	if out, err := runCLI(t, "audit", "verify", "--anchor", anchors); err == nil || !strings.Contains(err.Error(), "record 3 was edited") {
		t.Fatalf("audit verify --anchor after an edit: %v\n%s", err, out)
	}
}
