package chain

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Anchor is one line of an anchor file: the head of a log's chain (the audit log's, or each
// purpose's chain of the budget ledger) at a moment, kept outside ClickHouse. A chain that
// still holds the anchored (sequence, MAC) exactly, and verifies, was not rewritten up to it:
// without the key nobody can make another chain end in the same MAC.
type Anchor struct {
	Log      string    `json:"log"` // "audit" or "ledger"
	Database string    `json:"database"`
	At       time.Time `json:"at"`
	// The audit log's head.
	Seq uint64 `json:"seq"`
	MAC string `json:"mac"`
	// The ledger's heads, by purpose.
	Heads map[string]Head `json:"heads,omitempty"`
}

// Head is the last record of a chain: its sequence and its link (MAC, or the legacy digest of
// a chain written before it was keyed); {0, ""} is an empty chain.
type Head struct {
	Seq uint64 `json:"seq"`
	MAC string `json:"mac"`
}

// Anchor log names.
const (
	AuditLog  = "audit"
	LedgerLog = "ledger"
)

// WriteAnchor writes a as one JSON line to w.
func WriteAnchor(w io.Writer, a Anchor) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// AppendAnchor appends a as one JSON line to the file at path (created if missing), in one
// write, so lines appended by several processes never interleave.
func AppendAnchor(path string, a Anchor) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("anchor file: %w", err)
	}
	if err := WriteAnchor(f, a); err != nil {
		f.Close()
		return fmt.Errorf("anchor file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("anchor file %s: %w", path, err)
	}
	return f.Close()
}

// ErrNoAnchor means an anchor file holds no anchor of the log and database asked for.
var ErrNoAnchor = errors.New("no anchor")

// LatestAnchor returns the last anchor of log for database in the file at path. A line that
// does not decode is an error: an anchor file is written only by Shukei (or copied from a
// ticket verbatim), and a damaged one must not pass for an older, shorter chain.
func LatestAnchor(path, log, database string) (Anchor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Anchor{}, fmt.Errorf("anchor file: %w", err)
	}
	var last Anchor
	found := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var a Anchor
		if err := json.Unmarshal(line, &a); err != nil {
			return Anchor{}, fmt.Errorf("anchor file %s line %d does not decode: %w", path, n, err)
		}
		if a.Log == log && a.Database == database {
			last, found = a, true
		}
	}
	if err := sc.Err(); err != nil {
		return Anchor{}, fmt.Errorf("anchor file %s: %w", path, err)
	}
	if !found {
		return Anchor{}, fmt.Errorf("%w of the %s chain of database %s in %s", ErrNoAnchor, log, database, path)
	}
	return last, nil
}

// AnchorIn is the latest anchor of log for database in the file at path (LatestAnchor), or nil
// when path is "" (no anchor to check against).
func AnchorIn(path, log, database string) (*Anchor, error) {
	if path == "" {
		return nil, nil
	}
	a, err := LatestAnchor(path, log, database)
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// SaveAnchor appends a to the file at path (AppendAnchor), or writes it to w when path is "".
func SaveAnchor(w io.Writer, path string, a Anchor) error {
	if path == "" {
		return WriteAnchor(w, a)
	}
	return AppendAnchor(path, a)
}
