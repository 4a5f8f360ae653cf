package ops

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/audit/chain"
)

// The scheduled anchors (audit.anchor_every, ledger.anchor_every): one line each interval, a
// failure logged and tried again, nothing when off.
func TestAnchorLoop(t *testing.T) {
	file := filepath.Join(t.TempDir(), "anchors.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		AnchorLoop(ctx, "audit log", file, 20*time.Millisecond, func(context.Context) (chain.Anchor, error) {
			n++
			if n == 2 {
				return chain.Anchor{}, fmt.Errorf("ClickHouse away")
			}
			return chain.Anchor{Log: chain.AuditLog, Database: "shukei", Seq: uint64(n), MAC: "hmac:x"}, nil
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if a, err := chain.LatestAnchor(file, chain.AuditLog, "shukei"); err == nil && a.Seq >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no fourth anchor in 5s")
		}
	}
	cancel()
	<-done
	b, _ := os.ReadFile(file)
	if strings.Contains(string(b), `"seq":2,`) || strings.Count(string(b), "\n") < 3 {
		t.Fatalf("anchor file:\n%s", b)
	}
	off := filepath.Join(t.TempDir(), "off.jsonl")
	AnchorLoop(context.Background(), "ledger", off, 0, nil, nil) // off: returns at once
	if _, err := os.Stat(off); !os.IsNotExist(err) {
		t.Fatalf("an anchor file was written with anchor_every 0: %v", err)
	}
}
