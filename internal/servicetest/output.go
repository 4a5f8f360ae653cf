package servicetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Output collects what a subprocess (or a logger) writes, safe to read while it writes.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// Bytes is a copy of everything written so far.
func (o *Output) Bytes() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Clone(o.b.Bytes())
}

func (o *Output) String() string { return string(o.Bytes()) }

// Count counts the occurrences of sub.
func (o *Output) Count(sub string) int { return bytes.Count(o.Bytes(), []byte(sub)) }

// Lines are the lines that contain sub.
func (o *Output) Lines(sub string) []string {
	var out []string
	for _, l := range strings.Split(o.String(), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

// Tail is the last lines lines, with a note of how many came before.
func (o *Output) Tail(lines int) string {
	all := strings.Split(strings.TrimRight(o.String(), "\n"), "\n")
	if len(all) > lines {
		all = append([]string{fmt.Sprintf("[… %d earlier lines]", len(all)-lines)}, all[len(all)-lines:]...)
	}
	return strings.Join(all, "\n")
}

// ModuleRoot is the directory of the module's go.mod (where scripts/ and cmd/ are).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		t.Fatalf("module root: go env GOMOD: %v (%q)", err, gomod)
	}
	return filepath.Dir(gomod)
}

// FaultSeed is the seed of a fault test's random schedule: SHUKEI_TEST_FAULT_SEED if set (to
// replay a run), else the clock. It logs how to replay it.
func FaultSeed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SHUKEI_TEST_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SHUKEI_TEST_FAULT_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("fault schedule seed %d (replay with SHUKEI_TEST_FAULT_SEED=%d)", seed, seed)
	return seed
}
