package pseudonym

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func testKeyring(t testing.TB, tenants ...string) (*Keyring, *MasterKey) {
	m, err := ParseMasterKey(NewMasterKeyText())
	if err != nil {
		t.Fatal(err)
	}
	k := NewKeyring(m)
	for _, tn := range tenants {
		enc, err := m.NewRoot(tn)
		if err != nil {
			t.Fatal(err)
		}
		if err := k.Set(tn, enc); err != nil {
			t.Fatal(err)
		}
	}
	return k, m
}

func TestPseudonymProperties(t *testing.T) {
	k, _ := testKeyring(t, "acme", "globex")
	nov := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	dec := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	p := func(tenant string, at time.Time, user string) Pseudonym {
		t.Helper()
		v, err := k.Pseudonymize(tenant, at, user)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if p("acme", nov, "u-1") != p("acme", nov.Add(20*24*time.Hour), "u-1") {
		t.Error("same user, tenant and month must give the same pseudonym")
	}
	if p("acme", nov, "u-1") == p("acme", dec, "u-1") {
		t.Error("keys must rotate: a new month gives a new pseudonym")
	}
	if p("acme", nov, "u-1") == p("globex", nov, "u-1") {
		t.Error("the same user id in two tenants must not link")
	}
	if p("acme", nov, "u-1") == p("acme", nov, "u-2") {
		t.Error("two users collide")
	}
	// It is the HMAC construction the design names, with the derived period key.
	root := k.roots["acme"]
	mac := hmac.New(sha256.New, root)
	mac.Write([]byte("shukei/pseudonym/v1/2026-11"))
	pk := mac.Sum(nil)
	mac = hmac.New(sha256.New, pk)
	mac.Write([]byte("u-1"))
	var want Pseudonym
	copy(want[:], mac.Sum(nil))
	if p("acme", nov, "u-1") != want {
		t.Error("pseudonym is not HMAC-SHA256(key[tenant][period], user)[:16]")
	}
}

func TestDestroyedOrForeignRoots(t *testing.T) {
	k, m := testKeyring(t, "acme")
	k.Forget("acme")
	if _, err := k.Pseudonymize("acme", time.Now(), "u"); !errors.Is(err, ErrNoRoot) {
		t.Errorf("after Forget: %v, want ErrNoRoot", err)
	}
	enc, _ := m.NewRoot("acme")
	if err := k.Set("globex", enc); err == nil {
		t.Error("a root bound to acme decrypted as globex's")
	}
	other, _ := ParseMasterKey(NewMasterKeyText())
	if err := NewKeyring(other).Set("acme", enc); err == nil {
		t.Error("a root decrypted under the wrong master key")
	}
	for _, bad := range []string{"", "short", "zz" + NewMasterKeyText()[2:]} {
		if _, err := ParseMasterKey(bad); err == nil {
			t.Errorf("master key %q accepted", bad)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	k, _ := testKeyring(t, "acme")
	at := time.Now()
	want, _ := k.Pseudonymize("acme", at, "u-9")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if got, _ := k.Pseudonymize("acme", at, "u-9"); got != want {
					t.Error("pseudonym changed under concurrency")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkPseudonymize(b *testing.B) {
	k, _ := testKeyring(b, "acme")
	at := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = k.Pseudonymize("acme", at, "u-123456")
	}
}

// A key file others may read is refused; the same key at 0600 loads.
func TestLoadMasterKeyRefusesOpenFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(path, []byte(NewMasterKeyText()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadMasterKey(path, ""); err != nil {
		t.Fatalf("0600: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadMasterKey(path, ""); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
}
