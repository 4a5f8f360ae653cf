package guard

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/shukei/shukei/event"
)

// kind is what a field is meant to hold. It decides which shapes are expected
// there: a 32-digit hex string is a request id in data.request_id and a
// smuggled blob in data.feature_id.
type kind uint8

const (
	kindAny       kind = iota // unknown field: no shape is expected
	kindID                    // feature, app, setting, operation and collector ids
	kindTenant                // tenant id: the customer's own account name, often a company name
	kindToken                 // enumerated token: a setting value, a result code
	kindUser                  // opaque user id: UUID, number, hex or base64url hash
	kindVersion               // client.os_version
	kindRequestID             // hex or UUID
	kindUUID                  // event_id
	kindEnum                  // closed enumerations
	kindTimestamp             // occurred_at, seen raw by ScanRaw
	kindKey                   // an object key
)

// pathKinds maps the schema's field paths to their kinds; any other path is kindAny.
var pathKinds = map[string]kind{
	"event_id":           kindUUID,
	"tenant_id":          kindTenant,
	"occurred_at":        kindTimestamp,
	"schema":             kindEnum,
	"source":             kindID,
	"user":               kindUser,
	"client.os":          kindEnum,
	"client.os_version":  kindVersion,
	"client.device_kind": kindEnum,
	"data.client_kind":   kindEnum,
	"data.browser":       kindEnum,
	"data.app_id":        kindID,
	"data.action":        kindEnum,
	"data.feature_id":    kindID,
	"data.setting_key":   kindID,
	"data.value":         kindToken,
	"data.operation_id":  kindID,
	"data.result_code":   kindToken,
	"data.request_id":    kindRequestID,
}

// vocabulary holds every enumerated value and every key of the schemas: the
// words a valid event is made of, accepted without further look.
var vocabulary = map[string]bool{}

func init() {
	for _, s := range event.Schemas() {
		vocabulary[string(s)] = true
	}
	for _, w := range []string{
		string(event.OSWindows), string(event.OSMacOS), string(event.OSLinux), string(event.OSIOS),
		string(event.OSAndroid), string(event.OSChromeOS), string(event.OSOther),
		string(event.DeviceDesktop), string(event.DeviceMobile), string(event.DeviceTablet), string(event.DeviceOther),
		string(event.ClientBrowser), string(event.ClientDesktopApp), string(event.ClientMobileApp), string(event.ClientAPI),
		string(event.BrowserChrome), string(event.BrowserEdge), string(event.BrowserFirefox), string(event.BrowserSafari),
		string(event.BrowserOther), string(event.BrowserNone),
		string(event.ActionOpen), string(event.ActionView), string(event.ActionCreate), string(event.ActionUpdate),
		string(event.ActionDelete), string(event.ActionExport), string(event.ActionImport), string(event.ActionSearch),
		string(event.ActionShare),
		"event_id", "tenant_id", "occurred_at", "schema", "source", "user", "client", "data",
		"os", "os_version", "device_kind", "user_count", "organization_count", "client_kind", "browser",
		"app_id", "action", "feature_id", "count", "records_registered", "setting_key", "value",
		"customization_present", "customization_count", "operation_id", "result_code", "request_id",
	} {
		vocabulary[w] = true
	}
}

// classify returns the input-data reason for the value s of a field of kind k,
// or "" when s looks like usage data.
func classify(k kind, s string) event.Reason {
	if (k == kindUUID || k == kindUser || k == kindRequestID) && len(s) == 36 && event.IsUUID(s) {
		return uuidLeak(s) // the common case, judged once
	}
	if i := embeddedUUID(s); i >= 0 {
		// A UUID inside a longer value (u:<uuid>, req-<uuid>) is judged as a UUID, and the
		// rest without it: its groups are random hex, and a group of digits would otherwise
		// read as a phone number or pass a My Number's check by chance, refusing that user's
		// every event for good.
		if r := uuidLeak(s[i : i+36]); r != "" {
			return r
		}
		return classify(k, s[:i]+"uuid"+s[i+36:])
	}
	switch k {
	case kindID, kindTenant, kindToken, kindUser, kindVersion, kindRequestID, kindUUID, kindAny, kindKey, kindTimestamp:
		if r := identifier(k, s); r != "" {
			return r
		}
	}
	switch k {
	case kindUUID:
		if event.IsUUID(s) {
			return ""
		}
	case kindEnum, kindKey:
		if vocabulary[s] {
			return ""
		}
	case kindTimestamp:
		if event.IsTimestamp(s) || timestampish(s) {
			return "" // a malformed timestamp is a collector bug, not content
		}
	case kindRequestID:
		if event.IsRequestID(s) {
			if !event.IsUUID(s) && hexIsText(s, textMin(k)) {
				return event.ReasonBlob
			}
			return ""
		}
	case kindUser:
		if event.IsUUID(s) {
			return ""
		}
		if allDigits(s) {
			// A numeric id: a phone number only with a trunk prefix
			// (09012345678). 81 and eight more digits is as often an id as
			// a number without its +.
			if s[0] == '0' && isPhone(s, shape{digits: len(s)}) {
				return event.ReasonPhone
			}
			if len(s) == 12 && (strings.HasPrefix(s, "8190") || strings.HasPrefix(s, "8180") || strings.HasPrefix(s, "8170") || strings.HasPrefix(s, "8150")) {
				return event.ReasonPhone // +81 and a mobile (or IP-phone) number, without its +
			}
			if len(s) > 20 {
				return event.ReasonBlob
			}
			return ""
		}
		if lowerHex(s) && (len(s) >= 16 && len(s) <= 64 || len(s) == 128) {
			if hexIsText(s, textMin(k)) {
				return event.ReasonBlob // hex-encoded text, not a hash
			}
			return "" // a hashed id
		}
	case kindID, kindTenant, kindToken:
		if plainID(s) {
			return ""
		}
	case kindVersion:
		if event.IsOSVersion(s) {
			if versionIsPhone(s) {
				return event.ReasonPhone
			}
			return ""
		}
	}
	return scan(k, s)
}

// plainID is the fast path for the bulk of the traffic, ids like
// app.record.create: lower-case words that start no risky word of the lexicon
// (so no name, stop word or file extension), few digits (no phone number),
// short segments (no hash), no spelled-out "at" (no obfuscated address), no
// part that decodes to text. Every detector would pass such a value; the
// tests and FuzzCheckField hold the two to agreement.
func plainID(s string) bool {
	if len(s) == 0 || len(s) > 64 || strings.Contains(s, "atmark") || sshKeyFile(s) {
		return false
	}
	digits, seg, word, chunk := 0, 0, -1, 0
	for i := 0; i <= len(s); i++ {
		var c byte
		if i < len(s) {
			c = s[i]
		}
		if isLower(c) {
			if word < 0 {
				word = i
			}
			seg++
			continue
		}
		if word >= 0 {
			if riskyWord(s[word:i]) {
				return false
			}
			word = -1
		}
		switch {
		case isDigit(c):
			if digits++; digits >= 8 {
				return false
			}
			seg++
			continue
		case i == len(s), c == '.', c == '_', c == '-':
		default:
			return false
		}
		if seg > 32 || seg >= 16 && hexIsText(s[i-seg:i], 8) {
			return false
		}
		seg = 0
		// isBlob decodes dot-separated parts (and the whole value) as base64.
		if c == '.' || i == len(s) {
			if i-chunk >= 12 && base64IsText(s[chunk:i], 8) {
				return false
			}
			chunk = i + 1
		}
	}
	// An extension with a digit (mp4, bz2, 7z) is no risky word of its own.
	if dot := strings.LastIndexByte(s, '.'); dot >= 0 && strings.ContainsAny(s[dot+1:], "0123456789") && latin[s[dot+1:]]&wFileExt != 0 {
		return false
	}
	return true
}

// riskyWord reports whether a lower-case word could make a detector fire: a
// name, a stop word or an extension, a name glued to another or to an
// initial, or the "at" of a spelled-out address.
func riskyWord(w string) bool {
	const risky = wFirst | wLast | wStop | wFileExt
	if w == "at" || riskPrefixes.mayStart(w) && latin[w]&risky != 0 {
		return true
	}
	if len(w) < 6 {
		return false
	}
	if namePrefixes.mayStart(w) {
		for i := 3; i <= len(w)-3; i++ {
			if latin[w[:i]]&(wFirst|wLast) != 0 && latin[w[i:]]&(wFirst|wLast) != 0 {
				return true
			}
		}
	}
	return namePrefixes.mayStart(w[1:]) && latin[w[1:]]&wLast != 0
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isDigit(c) && c-'a' >= 6 {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

func timestampish(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isDigit(c) && strings.IndexByte("-:.,+/ TtZz", c) < 0 {
			return false
		}
	}
	return true
}

// shape is what one pass over a string tells about it; most detectors are
// skipped on its strength.
type shape struct {
	upper, lower, nonASCII, ctrl, space    bool
	at, slash, colon, question, dot, punct bool
	plus, eq, backslash, amp, sep, hexOnly bool
	digits                                 int
}

func profile(s string) shape {
	p := shape{hexOnly: true}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c-'a' < 26:
			p.lower = true
			if c > 'f' {
				p.hexOnly = false
			}
			continue
		case c-'0' < 10:
			p.digits++
			continue
		case c-'A' < 26:
			p.upper = true
			if c > 'F' {
				p.hexOnly = false
			}
			continue
		}
		p.hexOnly = false
		switch c {
		case ' ':
			p.space = true
		case '\t', '\n', '\r':
			p.space, p.ctrl = true, true
		case '@':
			p.at = true
		case '/':
			p.slash = true
		case ':':
			p.colon = true
		case '?':
			p.question = true
		case '.':
			p.dot = true
		case '+':
			p.plus = true
		case '=':
			p.eq = true
		case '\\':
			p.backslash = true
		case '&':
			p.amp = true
		case '_', '-':
			p.sep = true
		case ',', '!', ';', '"', '\'', '(', ')', '[', ']', '{', '}', '<', '>', '*', '#', '%', '|', '~', '^', '`', '$':
			p.punct = true
		default:
			if c < 0x20 || c == 0x7f {
				p.ctrl = true
			} else if c >= 0x80 {
				p.nonASCII = true
			}
		}
	}
	return p
}

// scan runs the detectors in order of precedence: when a value is both (an
// email address in a URL), the more specific reason wins.
func scan(k kind, s string) event.Reason {
	if s == "" {
		return ""
	}
	p := profile(s)
	if p.ctrl || (p.nonASCII && hasInvisible(s)) {
		return event.ReasonControlChar
	}
	norm, orig := s, p
	if p.nonASCII || p.upper {
		norm = normalize(s)
		p = profile(norm)
	}
	// Latin words come from the original: case changes split YamadaTaro.
	w := words{s: s}
	if orig.nonASCII {
		w.s = norm // full-width letters are ASCII only once normalised
	}
	switch {
	case isEmail(norm, p):
		return event.ReasonEmail
	case isURL(norm, p):
		return event.ReasonURL
	case norm != s && identifier(k, norm) != "":
		// classify judged s itself; here only what normalising revealed (full-width digits).
		return identifier(k, norm)
	case isPhone(norm, p):
		return event.ReasonPhone
	case isFileName(norm, p):
		return event.ReasonFileName
	case k != kindTenant && isName(k, &w, norm, p):
		return event.ReasonPersonalName
	case isBlob(k, s, orig): // case matters to base64
		return event.ReasonBlob
	case isFreeText(k, &w, norm, p):
		return event.ReasonFreeText
	}
	return ""
}

// words are the Latin tokens of a value with their lexicon flags, computed
// once for the name and the free-text detectors.
type words struct {
	s     string
	toks  [maxTokens]token
	flags [maxTokens]uint16
	n     int
	done  bool
}

func (w *words) get() ([]token, []uint16, bool) {
	if !w.done {
		w.done = true
		w.n = tokenize(w.s, w.toks[:])
		if w.n <= maxTokens {
			for i, t := range w.toks[:w.n] {
				w.flags[i] = lookup(w.s, t)
			}
		}
	}
	if w.n > maxTokens {
		return nil, nil, false
	}
	return w.toks[:w.n], w.flags[:w.n], true
}

// hasInvisible finds characters that do not show: controls, format characters
// (zero-width space and joiners, bidi overrides, soft hyphen, BOM), line and
// paragraph separators, and fillers that render as blanks. They hide content
// from a reader and split words to dodge detectors.
func hasInvisible(s string) bool {
	for _, r := range s {
		if r < utf8.RuneSelf {
			continue
		}
		switch {
		case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp):
			return true
		case r == 0x115f, r == 0x1160, r == 0x3164, r == 0xffa0, r == 0x2800, r == 0x034f, r == 0x180e:
			return true
		}
	}
	return false
}

// normalize folds what looks alike into one form so that one detector covers
// both: NFKC turns full-width letters, digits and symbols (＠, ０９０) into
// ASCII, half-width katakana (ﾔﾏﾀﾞ) into full-width, the ideographic space
// into a space; then Unicode dashes become '-' and letters lower case.
func normalize(s string) string {
	s = norm.NFKC.String(s)
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r >= 'A' && r <= 'Z':
			r += 'a' - 'A'
		case r == 0x00a0:
			r = ' '
		case r >= 0x2010 && r <= 0x2015, r == 0x2212:
			r = '-'
		case r == 0xff61: // half-width ｡ stays a dot
			r = '。'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isDigit(c byte) bool  { return c-'0' < 10 }
func isLower(c byte) bool  { return c-'a' < 26 }
func isAlnum(c byte) bool  { return isLower(c) || isDigit(c) }
func isLetter(c byte) bool { return isLower(c) || c-'A' < 26 }

// hashLength: the hex lengths of common digests (MD5 … SHA-512).
func hashLength(n int) bool {
	switch n {
	case 32, 40, 56, 64, 96, 128:
		return true
	}
	return false
}

// embeddedUUID returns where a UUID stands as a part of a longer value, set off from the rest
// by anything but a letter or a digit, or -1.
func embeddedUUID(s string) int {
	for p := 0; p+36 <= len(s); p++ {
		if s[p+8] != '-' || s[p+13] != '-' || s[p+18] != '-' || s[p+23] != '-' {
			continue
		}
		if len(s) > 36 && (p == 0 || !isAlnum(s[p-1])) && (p+36 == len(s) || !isAlnum(s[p+36])) && event.IsUUIDAnyCase(s[p:p+36]) {
			return p
		}
	}
	return -1
}

func isBase64ish(s string) bool {
	end := len(s)
	for end > 0 && s[end-1] == '=' {
		end--
	}
	if len(s)-end > 2 {
		return false
	}
	for i := 0; i < end; i++ {
		if c := s[i]; !(isAlnum(c) || c-'A' < 26 || c == '+' || c == '/' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

const maxTokens = 24

// textMin is the shortest decoded blob judged as text in a field of kind k.
func textMin(k kind) int {
	if k == kindUser || k == kindRequestID {
		return 12
	}
	return 8
}

// token is a run of ASCII letters in the value; words split at anything else
// and at a lower-to-upper case change (YamadaTaro).
type token struct {
	start, end int
	sep        byte // what came before the token: 0 at the start, 'c' for a case change, or the byte
}

func tokenize(s string, out []token) int {
	n := 0
	start := -1
	var sep byte
	for i := 0; i <= len(s); i++ {
		letter := i < len(s) && isLetter(s[i])
		camel := letter && start >= 0 && i > start && s[i]-'A' < 26 && isLower(s[i-1])
		if start >= 0 && (!letter || camel) {
			if n == len(out) {
				return n + 1 // too many: the caller treats the value as not a name
			}
			out[n] = token{start, i, sep}
			n++
			start = -1
			if camel {
				sep = 'c'
			}
		}
		if letter && start < 0 {
			start = i
			if i > 0 && !camel {
				sep = s[i-1]
			} else if i == 0 {
				sep = 0
			}
		}
	}
	return n
}

// lookup returns the lexicon flags of a token, lower-cased on the stack: the
// map index with string(bytes) does not allocate.
func lookup(s string, t token) uint16 {
	return lookupRange(s, t.start, t.end)
}

func lookupRange(s string, start, end int) uint16 {
	var buf [24]byte
	if end-start > len(buf) || end <= start || !prefixes.mayStart(s[start:end]) {
		return 0
	}
	for i := start; i < end; i++ {
		c := s[i]
		if c-'A' < 26 {
			c += 'a' - 'A'
		}
		buf[i-start] = c
	}
	return latin[string(buf[:end-start])]
}

// randomLooking values are opaque tokens (hex, base64url hashes): their
// letter runs are chance, and a chance "abe" or "lee" is not a name.
func randomLooking(s string, toks []token) bool {
	if len(s) < 12 {
		return false
	}
	hex, digitRuns := true, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isDigit(c) || c-'a' < 6 || c-'A' < 6 || c == '-') {
			hex = false
		}
		if isDigit(c) && (i == 0 || !isDigit(s[i-1])) {
			digitRuns++
		}
	}
	if hex && len(s) >= 16 || digitRuns >= 3 {
		return true
	}
	short := 0
	for _, t := range toks {
		if t.end-t.start <= 2 {
			short++
		}
	}
	if short >= 3 && 2*short >= len(toks) {
		return true
	}
	// Case that changes all the time: YamadaTaro changes three times in ten
	// letters, a base64 hash every other letter or so.
	switches, letters, upper := 0, 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) {
			continue
		}
		u := c-'A' < 26
		if letters > 0 && u != upper {
			switches++
		}
		upper = u
		letters++
	}
	return switches >= 6 && 3*switches >= letters
}
