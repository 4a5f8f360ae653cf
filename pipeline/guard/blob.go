// The opaque blob detector: data: URIs, hex or base64 too long for the field's kind,
// dotted base64 (JWTs), standard base64 where no field takes '+' or '/', and hex or base64
// that decodes to text; with the decoders it shares with the fast path (hexIsText,
// base64IsText, textLike). An encoded value smuggles content past the other detectors, so
// the policy treats it as input data (reason input_data.blob); hashed ids of a hash's length
// that decode to noise pass.

package guard

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/shukei/shukei/event"
)

func isBlob(k kind, s string, p shape) bool {
	if strings.HasPrefix(s, "data:") && strings.Contains(s, ";base64,") {
		return true
	}
	n := len(s)
	if n < 12 || p.space || p.nonASCII {
		return false
	}
	if p.hexOnly {
		limit := 32
		if k == kindUser || k == kindAny {
			limit = 64 // hashed ids: SHA-256 in hex
		}
		if n > limit && !(k == kindUser && n == 128) {
			return true
		}
		return hexIsText(s, textMin(k))
	}
	if event.IsUUIDAnyCase(s) {
		return false
	}
	if p.dot {
		// Dotted base64: a JWT or a value split to look like an id.
		for rest := s; rest != ""; {
			seg := rest
			if i := strings.IndexByte(rest, '.'); i >= 0 {
				seg, rest = rest[:i], rest[i+1:]
			} else {
				rest = ""
			}
			if len(seg) >= 12 && isBase64ish(seg) && base64IsText(seg, textMin(k)) {
				return true
			}
		}
	}
	if isBase64ish(s) {
		if base64IsText(s, textMin(k)) || k == kindUser && base64IsShortText(s) {
			return true
		}
		mixed := p.upper && p.lower && p.digits > 0
		if (p.plus || p.slash) && mixed && n >= 16 {
			return true // standard base64: no field takes '+' or '/'
		}
		switch {
		case k == kindUser:
			return n > 88 // longer than a base64url SHA-512
		case k == kindAny:
			return n > 88 || (p.eq && mixed)
		default:
			return mixed || n > 64
		}
	}
	// A long run of letters and digits inside an id: an encoded value, unless it is a hash
	// in lower-case hex of a hash's length behind a prefix (h:<sha-1>) that reads as no text.
	run, digits := 0, 0
	for i := 0; i <= n; i++ {
		if i < n && isAlnum(s[i]) {
			run++
			if isDigit(s[i]) {
				digits++
			}
			continue
		}
		if run > 32 && digits > 0 && digits < run {
			h := s[i-run : i]
			if !(k == kindUser && lowerHex(h) && hashLength(run) && !hexIsText(h, textMin(k))) {
				return true
			}
		}
		run, digits = 0, 0
	}
	return false
}

var b64 = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" {
		t[c] = int8(i)
	}
	t['+'], t['-'] = 62, 62
	t['/'], t['_'] = 63, 63
	return t
}()

// base64IsText decodes s (standard or URL alphabet, padded or not) and tells
// whether the bytes read as text. A hash decodes to noise; encoded content
// decodes to words.
func base64IsText(s string, minBytes int) bool {
	s = strings.TrimRight(s, "=")
	if len(s) < 12 || len(s) > 512 || len(s)%4 == 1 {
		return false
	}
	var buf [384]byte
	n, ok := unbase64(s, buf[:])
	return ok && n >= minBytes && textLike(buf[:n])
}

// unbase64 decodes standard or URL-safe base64 without padding into buf (which must hold
// 3/4 of len(s)), returning the bytes written; ok is false at a character of neither alphabet.
func unbase64(s string, buf []byte) (n int, ok bool) {
	acc, bits := uint32(0), 0
	for i := 0; i < len(s); i++ {
		v := b64[s[i]]
		if v < 0 {
			return n, false
		}
		acc = acc<<6 | uint32(v)
		bits += 6
		if bits >= 8 {
			bits -= 8
			buf[n] = byte(acc >> bits)
			n++
		}
	}
	return n, true
}

// base64IsShortText catches short encoded phrases in an opaque id (aGVsbG8gd29ybGQ, "hello
// world"): ten or more decoded bytes, all printable ASCII, with a space and six letters.
// Random bytes do that about once in a million ids.
func base64IsShortText(s string) bool {
	s = strings.TrimRight(s, "=")
	if len(s) < 14 || len(s) > 24 {
		return false
	}
	var buf [18]byte
	n, ok := unbase64(s, buf[:])
	if !ok {
		return false
	}
	space, letters := false, 0
	for _, c := range buf[:n] {
		switch {
		case c == ' ':
			space = true
		case isLetter(c):
			letters++
		case c < 0x20 || c >= 0x7f:
			return false
		}
	}
	return n >= 10 && space && letters >= 6
}

// hexIsText decodes a hex string and tells whether the bytes read as text.
//
// minBytes is 8 where no hash is expected, 12 in opaque ids: eight random
// bytes read as text about once in 40,000 times, and a user's hash is fixed,
// so a false alarm would drop all of that user's events.
func hexIsText(s string, minBytes int) bool {
	if len(s)%2 != 0 || len(s) < 2*minBytes || len(s) > 512 {
		return false
	}
	var buf [256]byte
	for i := 0; i < len(s); i += 2 {
		hi, lo := unhex(s[i]), unhex(s[i+1])
		if hi < 0 || lo < 0 {
			return false
		}
		buf[i/2] = byte(hi<<4 | lo)
	}
	return textLike(buf[:len(s)/2])
}

func unhex(c byte) int {
	switch {
	case isDigit(c):
		return int(c - '0')
	case c-'a' < 6:
		return int(c-'a') + 10
	case c-'A' < 6:
		return int(c-'A') + 10
	}
	return -1
}

// textLike: printable ASCII of some length, or UTF-8 with several CJK
// letters, and no control bytes. Eight random bytes are all printable ASCII
// about once in three thousand times, so short decodes need a space as well.
func textLike(b []byte) bool {
	if len(b) < 8 || !utf8.Valid(b) {
		return false
	}
	space, letters, wide, cjk := false, 0, 0, 0
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		i += size
		switch {
		case r == ' ':
			space = true
		case r == '\n' || r == '\r' || r == '\t':
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return false
		case unicode.IsLetter(r):
			letters++
			if r >= utf8.RuneSelf {
				wide++
				if unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul) {
					cjk++
				}
			}
		case !unicode.IsPrint(r):
			return false
		}
	}
	// Random bytes often form a two-byte UTF-8 letter or two (Arabic, Greek);
	// three letters of the scripts our customers write in rarely happen by chance.
	if cjk >= 3 {
		return true
	}
	return letters-wide >= 4 && wide == 0 && (len(b) >= 10 || space)
}
