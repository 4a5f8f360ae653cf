// Package pseudonym turns a collector's user id into a pseudonym that cannot be linked back
// without the tenant's key: HMAC-SHA256(key[tenant][period], user), truncated to 16 bytes.
//
// Each tenant has a random root secret, stored only encrypted under the master key
// (AES-256-GCM). The key of a period (a month by default) is derived from the root, so
// pseudonyms change every period and cannot be joined across periods without the root.
// Destroying a tenant's root makes all its pseudonyms, past and future, unlinkable
// (crypto-shredding at the end of a contract).
package pseudonym

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
	"sync"
	"time"
)

// Size is the length of a pseudonym in bytes.
const Size = 16

// Pseudonym is a truncated HMAC of a user id.
type Pseudonym [Size]byte

// ErrNoRoot means the tenant has no pseudonymisation root: it was never registered, or its
// keys were destroyed.
var ErrNoRoot = errors.New("tenant has no pseudonymisation key")

// MasterKey encrypts the per-tenant roots at rest.
type MasterKey struct {
	aead cipher.AEAD
	raw  []byte
}

// Derive returns a 32-byte key for another use (e.g. the keyed hash kept in place of a dropped
// payload), independent of the root encryption key.
func (m *MasterKey) Derive(label string) []byte {
	mac := hmac.New(sha256.New, m.raw)
	mac.Write([]byte("shukei/derive/" + label))
	return mac.Sum(nil)
}

// ParseMasterKey reads a 32-byte key written as 64 hex digits or standard base64.
func ParseMasterKey(s string) (*MasterKey, error) {
	s = strings.TrimSpace(s)
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		b, err = base64.StdEncoding.DecodeString(s)
	}
	if err != nil || len(b) != 32 {
		return nil, errors.New("master key must be 32 bytes, written as 64 hex digits or base64")
	}
	block, err := aes.NewCipher(b)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &MasterKey{aead: aead, raw: b}, nil
}

// LoadMasterKey reads the key from a file (mode 0600 expected) or, when path is empty, from
// the value given (an environment variable's). Never from the repository.
func LoadMasterKey(path, value string) (*MasterKey, error) {
	if path != "" {
		st, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("master key file: %w", err)
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			return nil, fmt.Errorf("master key file %s is readable or writable by group or others (mode %04o): chmod 600 it ('shukei keys init' writes 0600)", path, perm)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("master key file: %w", err)
		}
		return ParseMasterKey(string(b))
	}
	if value == "" {
		return nil, errors.New("no master key: set anonymizer.master_key_file or SHUKEI_ANONYMIZER_MASTER_KEY")
	}
	return ParseMasterKey(value)
}

// NewMasterKeyText returns a fresh random master key as hex, for `shukei keys init`.
func NewMasterKeyText() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewRoot makes a random root for a tenant and returns it encrypted. The tenant id is bound
// as additional data, so a root copied to another tenant's row does not decrypt.
func (m *MasterKey) NewRoot(tenant string) ([]byte, error) {
	var root [32]byte
	if _, err := rand.Read(root[:]); err != nil {
		return nil, err
	}
	nonce := make([]byte, m.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return m.aead.Seal(nonce, nonce, root[:], []byte(tenant)), nil
}

func (m *MasterKey) open(tenant string, enc []byte) ([]byte, error) {
	ns := m.aead.NonceSize()
	if len(enc) < ns {
		return nil, errors.New("encrypted root too short")
	}
	return m.aead.Open(nil, enc[:ns], enc[ns:], []byte(tenant))
}

// Period is the key period an instant falls in: its UTC month.
func Period(t time.Time) string { return t.UTC().Format("2006-01") }

// Keyring holds the decrypted roots and the derived period keys in memory. Safe for
// concurrent use.
type Keyring struct {
	master *MasterKey
	mu     sync.RWMutex
	roots  map[string][]byte
	keys   map[periodKey]*keyed
}

type periodKey struct{ tenant, period string }

// keyed pools HMAC states of one period key: hmac.New costs more than the hash itself.
type keyed struct{ pool sync.Pool }

// NewKeyring makes an empty keyring.
func NewKeyring(m *MasterKey) *Keyring {
	return &Keyring{master: m, roots: map[string][]byte{}, keys: map[periodKey]*keyed{}}
}

// Set installs a tenant's encrypted root (as stored), replacing any previous one.
func (k *Keyring) Set(tenant string, enc []byte) error {
	root, err := k.master.open(tenant, enc)
	if err != nil {
		return fmt.Errorf("decrypt root of tenant %s (wrong master key?): %w", tenant, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.roots[tenant] = root
	for pk := range k.keys {
		if pk.tenant == tenant {
			delete(k.keys, pk)
		}
	}
	return nil
}

// Forget drops a tenant's root and keys from memory.
func (k *Keyring) Forget(tenant string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.roots, tenant)
	for pk := range k.keys {
		if pk.tenant == tenant {
			delete(k.keys, pk)
		}
	}
}

// Has reports whether the tenant has a root.
func (k *Keyring) Has(tenant string) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	_, ok := k.roots[tenant]
	return ok
}

// Pseudonymize returns the pseudonym of user under the tenant's key for the period of at.
func (k *Keyring) Pseudonymize(tenant string, at time.Time, user string) (Pseudonym, error) {
	var p Pseudonym
	kd, err := k.key(tenant, Period(at))
	if err != nil {
		return p, err
	}
	h := kd.pool.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(user))
	var sum [sha256.Size]byte
	copy(p[:], h.Sum(sum[:0]))
	kd.pool.Put(h)
	return p, nil
}

func (k *Keyring) key(tenant, period string) (*keyed, error) {
	pk := periodKey{tenant, period}
	k.mu.RLock()
	kd, ok := k.keys[pk]
	root := k.roots[tenant]
	k.mu.RUnlock()
	if ok {
		return kd, nil
	}
	if root == nil {
		return nil, ErrNoRoot
	}
	// key[tenant][period] = HMAC-SHA256(root, label || period)
	mac := hmac.New(sha256.New, root)
	mac.Write([]byte("shukei/pseudonym/v1/"))
	mac.Write([]byte(period))
	periodKeyBytes := mac.Sum(nil)
	kd = &keyed{}
	kd.pool.New = func() any { return hmac.New(sha256.New, periodKeyBytes) }
	k.mu.Lock()
	if existing, ok := k.keys[pk]; ok {
		kd = existing
	} else {
		k.keys[pk] = kd
	}
	k.mu.Unlock()
	return kd, nil
}
