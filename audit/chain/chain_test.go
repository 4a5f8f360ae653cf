package chain

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMACIsKeyedAndCoversEveryField(t *testing.T) {
	k1, k2 := []byte(strings.Repeat("a", KeySize)), []byte(strings.Repeat("b", KeySize))
	m := MAC(k1, "prev", "x", "y")
	if !Keyed(m) || len(m) != len(MACPrefix)+64 {
		t.Fatalf("MAC = %q", m)
	}
	for name, other := range map[string]string{
		"another key":   MAC(k2, "prev", "x", "y"),
		"another prev":  MAC(k1, "prev2", "x", "y"),
		"another field": MAC(k1, "prev", "x", "z"),
		"fields moved":  MAC(k1, "prev", "xy"),
		"one more":      MAC(k1, "prev", "x", "y", ""),
	} {
		if other == m {
			t.Errorf("%s: same MAC", name)
		}
	}
	if Keyed(Digest("prev", "x")) || Link(nil, "p", "x") != Digest("p", "x") || Link(k1, "p", "x") != MAC(k1, "p", "x") {
		t.Error("Link or Keyed mixes up keyed and legacy links")
	}
}

func TestCheckAcceptsLegacyOnlyAsPrefix(t *testing.T) {
	key := []byte(strings.Repeat("k", KeySize))
	legacy := Digest("p", "x")
	if ok, _ := Check(key, false, legacy, "p", "x"); !ok {
		t.Error("a legacy link before any keyed one was refused")
	}
	if ok, why := Check(key, true, legacy, "p", "x"); ok || !strings.Contains(why, "unkeyed after a keyed") {
		t.Errorf("a legacy link after a keyed one: %v %q", ok, why)
	}
	keyed := MAC(key, "p", "x")
	if ok, _ := Check(key, true, keyed, "p", "x"); !ok {
		t.Error("a right MAC was refused")
	}
	if ok, _ := Check(key, true, keyed, "p", "y"); ok {
		t.Error("a MAC over other fields was accepted")
	}
	if ok, why := Check(nil, false, keyed, "p", "x"); ok || !strings.Contains(why, "no key") {
		t.Errorf("a keyed link checked without the key: %v %q", ok, why)
	}
	if ok, _ := Check([]byte(strings.Repeat("z", KeySize)), false, keyed, "p", "x"); ok {
		t.Error("a MAC verified under another key")
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "audit.key")
	if err := WriteKeyFile(p); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyFile(p); err == nil {
		t.Fatal("a key file was overwritten")
	}
	k, err := LoadKey("audit.key_file", p)
	if err != nil || len(k) != KeySize {
		t.Fatalf("LoadKey = %x, %v", k, err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey("audit.key_file", p); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Fatalf("a key file others may read: %v", err)
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey("ledger.key_file", bad); err == nil {
		t.Fatal("a key that is not 64 hex digits was accepted")
	}
	if _, err := LoadKey("ledger.key_file", ""); err == nil {
		t.Fatal("no key file was accepted")
	}
}

func TestAnchorFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "anchors.jsonl")
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for i, a := range []Anchor{
		{Log: AuditLog, Database: "shukei", At: at, Seq: 5, MAC: "hmac:05"},
		{Log: LedgerLog, Database: "shukei", At: at, Heads: map[string]Head{"external_aggregate": {Seq: 2, MAC: "hmac:02"}}},
		{Log: AuditLog, Database: "other", At: at, Seq: 9, MAC: "hmac:09"},
		{Log: AuditLog, Database: "shukei", At: at.Add(time.Hour), Seq: 7, MAC: "hmac:07"},
	} {
		if err := AppendAnchor(p, a); err != nil {
			t.Fatalf("anchor %d: %v", i, err)
		}
	}
	a, err := LatestAnchor(p, AuditLog, "shukei")
	if err != nil || a.Seq != 7 || a.MAC != "hmac:07" {
		t.Fatalf("latest audit anchor = %+v, %v", a, err)
	}
	l, err := LatestAnchor(p, LedgerLog, "shukei")
	if err != nil || l.Heads["external_aggregate"].Seq != 2 {
		t.Fatalf("latest ledger anchor = %+v, %v", l, err)
	}
	if _, err := LatestAnchor(p, LedgerLog, "other"); !errors.Is(err, ErrNoAnchor) {
		t.Fatalf("no anchor of a database: %v", err)
	}
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString("{not json\n")
	f.Close()
	if _, err := LatestAnchor(p, AuditLog, "shukei"); err == nil || !strings.Contains(err.Error(), "line 5") {
		t.Fatalf("a damaged anchor file: %v", err)
	}
}
