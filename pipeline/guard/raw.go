package guard

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/shukei/shukei/event"
)

// ScanRaw looks for input data in a message that is not (or not yet known to
// be) a valid event: every key and every string value of any JSON, however it
// is shaped, with duplicates, unknown fields and wrong types; past a syntax
// error, or in what is not JSON at all, the byte-level fallback finds strings,
// email addresses, URLs and phone numbers. A message that is not UTF-8 (a
// Shift_JIS subject, say) cannot be inspected and is reported as a blob: what
// cannot be shown to be free of content is not kept.
//
// It returns nil when it finds nothing.
func ScanRaw(b []byte) *event.Rejection {
	if !utf8.Valid(b) {
		// Legacy-encoded text (Shift_JIS) can form chance UTF-8 sequences, so
		// only its ASCII words are judged, one by one.
		ascii := bytes.Map(func(r rune) rune {
			if r >= utf8.RuneSelf {
				return ' '
			}
			return r
		}, b)
		if r := scanOutside(string(ascii)); r != nil {
			return r
		}
		return &event.Rejection{Reason: event.ReasonBlob, Msg: "not valid UTF-8: text in another encoding cannot be inspected"}
	}
	r, complete := scanJSON(b)
	if r != nil || complete {
		return r
	}
	return scanBytes(b)
}

// scanJSON walks the tokens of b, which may hold several values. complete is
// false when it stopped at a syntax error.
func scanJSON(b []byte) (r *event.Rejection, complete bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type frame struct {
		object, wantKey bool
		path            string
	}
	var stack []frame
	key := ""
	// child is the path of the value that comes next. Keys the schemas do not
	// define become "*": a path must not carry what it names.
	child := func() string {
		if len(stack) == 0 {
			return ""
		}
		top := stack[len(stack)-1]
		if !top.object {
			return top.path
		}
		if !vocabulary[key] {
			return join(top.path, "*")
		}
		return join(top.path, key)
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil, true
		}
		if err != nil {
			return nil, false
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
			if s, ok := tok.(string); ok {
				if r := check(join(stack[n-1].path, "*"), kindKey, s); r != nil {
					return r, false
				}
				key = s
				stack[n-1].wantKey = false
				continue
			}
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				stack = append(stack, frame{object: t == '{', wantKey: t == '{', path: child()})
				continue
			case '}', ']':
				if len(stack) > 0 {
					stack = stack[:len(stack)-1]
				}
			}
		case string:
			path := child()
			k, ok := pathKinds[path]
			if !ok {
				k = kindAny
			}
			if r := check(path, k, t); r != nil {
				return r, false
			}
		}
		// After a value inside an object, a key comes next.
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// scanBytes is the fallback for what does not parse. Inside quotes it checks
// each string as a value of unknown kind; outside them, where a broken message
// may hold text that never made it into a string, it runs the detectors of
// things that are never structure: addresses, URLs, numbers, words.
func scanBytes(b []byte) *event.Rejection {
	s := string(b)
	trimmed := strings.TrimSpace(s)
	if trimmed == "" {
		return nil
	}
	if c := trimmed[0]; c != '{' && c != '[' && c != '"' {
		// Not JSON at all: a text body or a form post sent by mistake.
		return check("", kindAny, trimmed)
	}
	inString := false
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] == '\\' && inString {
			i++
			continue
		}
		if i < len(s) && s[i] != '"' {
			continue
		}
		seg := s[start:min(i, len(s))]
		if inString {
			if r := check("*", kindAny, unescape(seg)); r != nil {
				return r
			}
		} else if r := scanOutside(seg); r != nil {
			return r
		}
		inString = !inString
		start = i + 1
	}
	return nil
}

// scanOutside checks text between strings once JSON's own tokens are gone.
// Words are checked one by one, because the spaces between them may be JSON's;
// the whole is checked for what spans spaces: a phone number, an obfuscated
// address.
func scanOutside(seg string) *event.Rejection {
	rest := strings.Map(func(r rune) rune {
		if strings.ContainsRune("{}[],:\"", r) {
			return ' '
		}
		return r
	}, seg)
	var words []string
	for _, w := range strings.Fields(rest) {
		if w == "true" || w == "false" || w == "null" {
			continue
		}
		words = append(words, w)
		if _, err := strconv.ParseFloat(w, 64); err == nil {
			continue
		}
		if r := check("*", kindAny, w); r != nil {
			return r
		}
	}
	joined := normalize(strings.Join(words, " "))
	p := profile(joined)
	switch {
	case isPhone(joined, p):
		return rejection(event.ReasonPhone, "*")
	case isEmail(joined, p):
		return rejection(event.ReasonEmail, "*")
	}
	return nil
}

// unescape decodes JSON escapes leniently: a broken escape stays as written.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	if u, err := strconv.Unquote(`"` + s + `"`); err == nil {
		return u
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch c := s[i+1]; c {
		case 'n', 'r', 't', 'b', 'f':
			b.WriteByte(map[byte]byte{'n': '\n', 'r': '\r', 't': '\t', 'b': '\b', 'f': '\f'}[c])
			i++
		case 'u':
			if i+6 <= len(s) {
				if v, err := strconv.ParseUint(s[i+2:i+6], 16, 32); err == nil {
					b.WriteRune(rune(v))
					i += 5
					continue
				}
			}
			b.WriteByte('\\')
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}
