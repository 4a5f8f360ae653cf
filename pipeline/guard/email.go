// The e-mail address detector: written plainly (taro@example.co.jp, mailto:), with the
// at sign or the dots spelled out or in another script ("taro [at] example [dot] jp",
// taro＠example.jp, "taro アットマーク example.jp"). An address names a person or a mailbox:
// identity, never usage, and so input data under the policy (reason input_data.email).

package guard

import (
	"strings"
	"unicode/utf8"
)

type marker struct {
	text string
	// strict markers are also ordinary id parts (backup_at_night): they count
	// only when a known top-level domain ends what follows.
	strict bool
}

var atMarkers = []marker{
	{"[at]", false}, {"(at)", false}, {"{at}", false}, {"<at>", false}, {"[@]", false}, {"(@)", false},
	{"アットマーク", false}, {"あっとまーく", false}, {"(あっと)", false}, {"atmark", false},
	{" at ", true}, {"_at_", true}, {"-at-", true}, {".at.", true},
}

var dotMarkers = []string{" [dot] ", " (dot) ", "[dot]", "(dot)", "{dot}", " dot ", "_dot_", "-dot-", " . ", ".", "ドット", "。"}

func isEmail(s string, p shape) bool {
	if p.at {
		for i := 1; i+1 < len(s); i++ {
			if s[i] == '@' && (isAlnum(s[i-1]) || strings.IndexByte("._%+-", s[i-1]) >= 0) && (isAlnum(s[i+1]) || s[i+1] >= utf8.RuneSelf) {
				return true
			}
		}
		if i := strings.Index(s, " @ "); i > 0 && domainAfter(s[i+3:], false) {
			return true
		}
	}
	if strings.HasPrefix(s, "mailto:") {
		return true
	}
	if !p.nonASCII && !p.at && !spelledAt(s) {
		return false
	}
	for _, m := range atMarkers {
		for off := 0; off < len(s); {
			i := strings.Index(s[off:], m.text)
			if i < 0 {
				break
			}
			i += off
			off = i + 1
			j := i
			for j > 0 && s[j-1] == ' ' {
				j--
			}
			if j == 0 || !(isAlnum(s[j-1]) || s[j-1] == '.' || s[j-1] == '_' || s[j-1] == '-') {
				continue
			}
			if domainAfter(s[i+len(m.text):], m.strict) {
				return true
			}
		}
	}
	return false
}

// spelledAt reports whether "at" appears as a word of its own somewhere, the
// only way an ASCII marker can: [at], (at), _at_, .at., " at ", atmark.
func spelledAt(s string) bool {
	for i := 0; i+1 < len(s); i++ {
		if s[i] != 'a' || s[i+1] != 't' {
			continue
		}
		if i > 0 && strings.IndexByte("[({< _-.", s[i-1]) >= 0 || strings.HasPrefix(s[i:], "atmark") {
			return true
		}
	}
	return false
}

// domainAfter reports whether s starts with a domain name, possibly with its
// dots spelled out ("example [dot] co [dot] jp").
func domainAfter(s string, strict bool) bool {
	s = strings.TrimLeft(s, " ")
	labels, last := 0, ""
	for {
		n := labelLen(s)
		if n == 0 {
			break
		}
		last, labels, s = s[:n], labels+1, s[n:]
		m := 0
		for _, d := range dotMarkers {
			if strings.HasPrefix(s, d) {
				m = len(d)
				break
			}
		}
		if m == 0 {
			break
		}
		s = s[m:]
	}
	if labels < 2 || len(last) < 2 {
		return false
	}
	for i := 0; i < len(last); i++ {
		if !isLower(last[i]) {
			return false
		}
	}
	return !strict || latin[last]&wTLD != 0
}

func labelLen(s string) int {
	n := 0
	for n < len(s) {
		switch c := s[n]; {
		case isAlnum(c):
			n++
		case c == '-' && n > 0 && n+1 < len(s) && isAlnum(s[n+1]) && !strings.HasPrefix(s[n:], "-dot-"):
			n++
		default:
			return n
		}
	}
	return n
}
