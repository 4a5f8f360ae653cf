package guard

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// An opaque id is fixed per user: a false positive on one would drop every
// event of that user, always. So random ids of every documented shape must
// pass, all of them.
func TestOpaqueIDsPass(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 20000
	shapes := []struct {
		field string
		gen   func(seed []byte) string
		// maxRate: the share refused by right, for a shape that is sometimes, by chance,
		// exactly an identifier with a check digit; 0 for every other.
		maxRate float64
	}{
		{"user", func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }, 0},
		{"user", func(b []byte) string { s := sha256.Sum256(b); return base64.RawURLEncoding.EncodeToString(s[:]) }, 0},
		{"user", func(b []byte) string { s := sha256.Sum256(b); return base64.URLEncoding.EncodeToString(s[:]) }, 0},
		{"user", func(b []byte) string { s := sha1.Sum(b); return hex.EncodeToString(s[:]) }, 0},
		{"user", func(b []byte) string { s := sha256.Sum256(b); return base64.RawURLEncoding.EncodeToString(s[:16]) }, 0},
		{"user", func(b []byte) string { s := sha256.Sum256(b); return base64.RawURLEncoding.EncodeToString(s[:9]) }, 0},
		{"user", func(b []byte) string { return uuid(b) }, 0},
		// A UUID behind a prefix (the browser SDK's u:<uuid>): its last group is twelve digits
		// one time in 280 and then passes My Number's check one time in eleven.
		{"user", func(b []byte) string { return "u:" + uuid(b) }, 0},
		{"user", func(b []byte) string { return "user-" + uuid(b) }, 0},
		{"user", func(b []byte) string { return "usr_" + strings.ToUpper(uuid(b)) }, 0},
		{"data.request_id", func(b []byte) string { return "req-" + uuid(b) }, 0},
		// Numeric ids up to eleven digits; from twelve on, national ids and card numbers live
		// there too (TestLongNumericUserIDs).
		{"user", func(b []byte) string { return strconv.FormatUint(binary.LittleEndian.Uint64(b)%1e11+1, 10) }, 0},
		{"user", func(b []byte) string { return "u:" + strconv.FormatUint(binary.LittleEndian.Uint64(b)%1e9, 10) }, 0},
		{"data.request_id", func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:16]) }, 0},
		// Sixteen hex digits are all decimal one time in 1,850 (0.625^16) and then a card
		// number when an issuer's prefix and Luhn pass: about 3 in 100,000.
		{"data.request_id", func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:8]) }, 2e-4},
		{"data.request_id", func(b []byte) string { return uuid(b) }, 0},
		{"event_id", func(b []byte) string { return uuid(b) }, 0},
	}
	for i, sh := range shapes {
		t.Run(fmt.Sprintf("%s/%d", sh.field, i), func(t *testing.T) {
			fp := 0
			for j := 0; j < n; j++ {
				var seed [16]byte
				binary.LittleEndian.PutUint64(seed[:], rng.Uint64())
				binary.LittleEndian.PutUint64(seed[8:], rng.Uint64())
				v := sh.gen(seed[:])
				if r := CheckField(sh.field, v); r != nil {
					if fp < 10 && sh.maxRate == 0 {
						t.Errorf("%s=%q rejected: %s", sh.field, v, r.Reason)
					}
					fp++
				}
			}
			if float64(fp) > sh.maxRate*n {
				t.Errorf("%d of %d random ids rejected", fp, n)
			}
		})
	}
}

func uuid(b []byte) string {
	var u [16]byte
	copy(u[:], b)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Numeric user ids of 12 to 19 digits share their shape with My Numbers (12, check digit),
// corporate numbers (13, one in nine pass its check digit), IMEIs (15, Luhn) and payment cards
// (13-19, issuer prefix and Luhn). A check digit passes by chance, so a share of such ids is
// refused: this measures it, and holds it under 15%; the README tells collectors to send
// longer numeric ids hashed.
func TestLongNumericUserIDs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 20000
	for digits := 12; digits <= 19; digits++ {
		refused := 0
		for range n {
			b := make([]byte, digits)
			b[0] = byte('1' + rng.IntN(9))
			for i := 1; i < digits; i++ {
				b[i] = byte('0' + rng.IntN(10))
			}
			if CheckField("user", string(b)) != nil {
				refused++
			}
		}
		rate := float64(refused) / n
		t.Logf("%d-digit numeric user ids refused: %.2f%%", digits, 100*rate)
		if rate > 0.15 {
			t.Errorf("%d-digit numeric user ids refused %.2f%% of the time, want at most 15%%", digits, 100*rate)
		}
	}
}
