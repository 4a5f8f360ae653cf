// Package chain is the hash chain of Shukei's append-only logs (the privacy-budget ledger and
// the audit log): each record's hash covers its fields and the previous record's hash, so an
// edited, inserted or deleted record breaks every later link.
package chain

import (
	"crypto/sha256"
	"encoding/hex"
)

// Digest is SHA-256 over prev and the fields, each terminated by a zero byte (fields never
// contain one), in hex.
func Digest(prev string, fields ...string) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write([]byte{0})
	for _, f := range fields {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}
