package chain

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SaveAnchor prints an anchor or appends it to a file; AnchorIn finds none without a file and
// the latest of a log and database in one.
func TestSaveAnchorAndAnchorIn(t *testing.T) {
	a := Anchor{Log: AuditLog, Database: "shukei", At: time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC), Seq: 3, MAC: "hmac:ab"}
	var b strings.Builder
	if err := SaveAnchor(&b, "", a); err != nil || !strings.HasSuffix(b.String(), "}\n") || strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("printed %q, %v", b.String(), err)
	}
	path := filepath.Join(t.TempDir(), "anchors")
	b.Reset()
	for _, seq := range []uint64{3, 5} {
		a.Seq = seq
		if err := SaveAnchor(&b, path, a); err != nil {
			t.Fatal(err)
		}
	}
	if b.Len() != 0 {
		t.Errorf("an anchor to a file was also printed: %q", b.String())
	}
	if got, err := AnchorIn("", AuditLog, "shukei"); got != nil || err != nil {
		t.Errorf("no file: %v, %v", got, err)
	}
	if got, err := AnchorIn(path, AuditLog, "shukei"); err != nil || got == nil || got.Seq != 5 {
		t.Errorf("latest: %+v, %v", got, err)
	}
	if _, err := AnchorIn(path, LedgerLog, "shukei"); err == nil {
		t.Error("an anchor of another log was found")
	}
}

// InitKey writes a key once, says where, and needs a path.
func TestInitKey(t *testing.T) {
	var b strings.Builder
	if err := InitKey(&b, "audit", ""); err == nil || err.Error() != "give --file or set audit.key_file" {
		t.Errorf("no path: %v", err)
	}
	path := filepath.Join(t.TempDir(), "audit.key")
	if err := InitKey(&b, "audit", path); err != nil {
		t.Fatal(err)
	}
	if want := "wrote a new audit chain key to " + path + " (mode 0600); point audit.key_file at it\n"; b.String() != want {
		t.Errorf("said %q, want %q", b.String(), want)
	}
	if _, err := LoadKey("audit.key_file", path); err != nil {
		t.Error(err)
	}
	if err := InitKey(&b, "audit", path); err == nil || !strings.HasPrefix(err.Error(), "audit key: ") || !errors.Is(err, fs.ErrExist) {
		t.Errorf("overwrite: %v", err)
	}
}
