// Package chain is the chain of Shukei's append-only logs (the privacy-budget ledger and the
// audit log): each record's link covers its fields and the previous record's link, so an
// edited, inserted or deleted record breaks every later link.
//
// A link is a keyed MAC (HMAC-SHA256 under the log's own key: audit.key_file,
// ledger.key_file), written as "hmac:" and 64 hex digits, so that nobody without the key —
// not even someone with full write access to ClickHouse — can recompute the links after an
// edit. Records written before logs were keyed carry a plain SHA-256 digest (64 hex digits,
// no prefix): they are accepted only as the prefix of a chain, before its first keyed record
// (whose MAC covers the last of them, and so the whole prefix), never after it.
package chain

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
)

// MACPrefix marks a keyed link.
const MACPrefix = "hmac:"

// Digest is SHA-256 over prev and the fields, each terminated by a zero byte (fields never
// contain one), in hex: the unkeyed link of records written before the logs were keyed.
func Digest(prev string, fields ...string) string {
	return hex.EncodeToString(sum(sha256.New(), prev, fields))
}

// MAC is HMAC-SHA256 under key over the same encoding as Digest, as "hmac:" and hex.
func MAC(key []byte, prev string, fields ...string) string {
	return MACPrefix + hex.EncodeToString(sum(hmac.New(sha256.New, key), prev, fields))
}

func sum(h hash.Hash, prev string, fields []string) []byte {
	h.Write([]byte(prev))
	h.Write([]byte{0})
	for _, f := range fields {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}

// Keyed reports whether a stored link is a keyed MAC (not a legacy digest).
func Keyed(link string) bool { return strings.HasPrefix(link, MACPrefix) }

// Link computes the link of a record: its MAC when key is set, else the legacy digest.
func Link(key []byte, prev string, fields ...string) string {
	if key != nil {
		return MAC(key, prev, fields...)
	}
	return Digest(prev, fields...)
}

// Check reports whether stored is the right link of a record at its place in a chain whose
// records before it included a keyed one (keyedBefore). A keyed link is checked with key
// (constant time); a legacy digest is accepted only before the first keyed record. It returns
// a reason on failure.
func Check(key []byte, keyedBefore bool, stored, prev string, fields ...string) (ok bool, reason string) {
	if Keyed(stored) {
		if key == nil {
			return false, "is keyed, and no key was given to check it"
		}
		return hmac.Equal([]byte(stored), []byte(MAC(key, prev, fields...))), "was edited (its MAC does not match its fields)"
	}
	if keyedBefore {
		return false, "is unkeyed after a keyed record (unkeyed records are accepted only before the first keyed one)"
	}
	return stored == Digest(prev, fields...), "was edited (its hash does not match its fields)"
}

// KeySize is the length of a chain key: 32 bytes, 64 hex digits in its file.
const KeySize = 32

// NewKeyText returns a fresh random chain key as hex, for 'shukei audit init-key' and
// 'shukei ledger init-key'.
func NewKeyText() string {
	var b [KeySize]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ParseKey reads a key's text: 64 hex digits, surrounding white space ignored. The chains'
// keys and the ClickHouse users and role keys (promise 16) are such keys.
func ParseKey(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != KeySize {
		return nil, fmt.Errorf("a key is %d hex digits", 2*KeySize)
	}
	return b, nil
}

// LoadKey reads a key file (what names it, e.g. "audit.key_file", is for the messages). A file
// that group or others may read or write is refused, like the master key file. It reads the
// chains' keys and the ClickHouse users and role keys alike.
func LoadKey(what, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("%s is not set", what)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s is readable or writable by group or others (mode %04o): chmod 600 it", what, path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return k, nil
}

// WriteKeyFile writes a fresh key to path (mode 0600), refusing to overwrite a file: losing
// a key makes the chain it keyed unverifiable.
func WriteKeyFile(path string) error {
	if path == "" {
		return errors.New("no key file given")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, NewKeyText()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// InitKey writes a fresh key for the what chain ("audit", "ledger") to path (WriteKeyFile),
// and says so on w ('shukei audit init-key', 'shukei ledger init-key').
func InitKey(w io.Writer, what, path string) error {
	if path == "" {
		return fmt.Errorf("give --file or set %s.key_file", what)
	}
	if err := WriteKeyFile(path); err != nil {
		return fmt.Errorf("%s key: %w", what, err)
	}
	fmt.Fprintf(w, "wrote a new %s chain key to %s (mode 0600); point %s.key_file at it\n", what, path, what)
	return nil
}
