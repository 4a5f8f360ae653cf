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

// --- email ---

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

// --- URL ---

// hostTLDs are endings that make a dotted word a host name. Any two-letter
// ending (a country) counts too.
var hostTLDs = map[string]bool{}

func init() {
	for _, t := range strings.Fields("com net org info biz edu gov int mil io app dev page cloud ai xyz me tv cc online site tech shop store blog local internal corp lan test example localhost") {
		hostTLDs[t] = true
	}
}

func isURL(s string, p shape) bool {
	if !(p.slash || p.question || p.colon || p.amp || p.backslash) {
		return false
	}
	if strings.Contains(s, "://") || strings.HasPrefix(s, "www.") && p.slash {
		return true
	}
	if p.slash || p.question {
		for i := 1; i < len(s); i++ {
			if c := s[i]; c != '/' && c != '?' && c != '#' {
				continue
			}
			j := i
			for j > 0 && (isAlnum(s[j-1]) || s[j-1] == '.' || s[j-1] == '-' || s[j-1] == ':') {
				j--
			}
			if i+1 < len(s) && s[i+1] != ' ' && looksHost(s[j:i]) {
				return true
			}
		}
	}
	// A query string on its own: ?id=1, or key=value&key=value.
	if i := strings.IndexByte(s, '?'); i >= 0 && queryAt(s[i+1:]) {
		return true
	}
	if p.amp && p.eq && queryAt(s) {
		if i := strings.IndexByte(s, '&'); i > 0 && queryAt(s[i+1:]) {
			return true
		}
	}
	return false
}

func queryAt(s string) bool {
	n := 0
	for n < len(s) && (isAlnum(s[n]) || s[n] == '_' || s[n] == '-' || s[n] == '.') {
		n++
	}
	return n > 0 && n < len(s) && s[n] == '='
}

func looksHost(h string) bool {
	if i := strings.IndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	if h == "localhost" {
		return true
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return false
	}
	numeric := 0
	for _, l := range labels {
		if l == "" {
			return false
		}
		if strings.Trim(l, "0123456789") == "" {
			numeric++
		}
	}
	if numeric == 4 && len(labels) == 4 {
		return true
	}
	last := labels[len(labels)-1]
	if len(last) == 2 && isLower(last[0]) && isLower(last[1]) {
		return true
	}
	return hostTLDs[last] || latin[last]&wTLD != 0
}

// --- phone ---

// isPhone finds runs of digits and separators shaped like a phone number:
// Japanese numbers (0X0-XXXX-XXXX, 03-XXXX-XXXX, 0120-XXX-XXX), international
// ones (+81 90 ..., 0081 ..., 81-90-...), and North American ones (XXX-XXX-XXXX).
func isPhone(s string, p shape) bool {
	if strings.HasPrefix(s, "tel:") {
		return true
	}
	if p.digits < 8 {
		return false
	}
	hexish := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(isDigit(c) || c-'a' < 6 || c == '-') {
			hexish = false
			break
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if !isDigit(c) && c != '+' && c != '(' {
			i++
			continue
		}
		r, end := readRun(s, i)
		if end <= i {
			end = i + 1
		}
		// A phone number ends a word: digits followed by letters continue one
		// (0123456789abcdef). In hex (hashes, UUIDs) digits come in runs cut by
		// letters, and a run of ten there is chance, not a number.
		glued := end < len(s) && isLetter(s[end])
		boundedByHex := hexish && r.seps == 0 && i > 0 && !isDigit(s[i-1])
		if !glued && !boundedByHex && r.isPhone() {
			return true
		}
		i = end
	}
	return false
}

type digitRun struct {
	digits  int
	groups  [8]int
	ngroups int
	plus    bool
	seps    int
	lead    [4]byte // first digits
	nlead   int
}

func (r *digitRun) hasLead(p string) bool {
	return r.nlead >= len(p) && string(r.lead[:len(p)]) == p
}

func (r *digitRun) isPhone() bool {
	d := r.digits
	switch {
	case r.plus:
		return d >= 8 && d <= 15
	case r.hasLead("000"):
		return false // zero padding (0000012345), not a trunk or international prefix
	case r.hasLead("00"):
		return d >= 11 && d <= 15
	case r.hasLead("0"):
		return d == 10 || d == 11
	case r.hasLead("81"):
		if r.seps > 0 && r.ngroups >= 3 && r.groups[0] == 2 {
			return d == 11 || d == 12
		}
		return d == 12 && r.nlead == 4 && strings.IndexByte("789", r.lead[2]) >= 0 && r.lead[3] == '0'
	}
	g := r.groups[:r.ngroups]
	if r.seps > 0 && len(g) == 3 && g[0] == 3 && g[1] == 3 && g[2] == 4 {
		return true
	}
	return r.seps > 0 && len(g) == 4 && g[0] == 1 && r.lead[0] == '1' && g[1] == 3 && g[2] == 3 && g[3] == 4
}

func (r *digitRun) endGroup(n int) {
	if n > 0 && r.ngroups < len(r.groups) {
		r.groups[r.ngroups] = n
		r.ngroups++
	}
}

func readRun(s string, i int) (digitRun, int) {
	var r digitRun
	if s[i] == '+' {
		r.plus = true
		i++
	}
	cur := 0
	for i < len(s) {
		c := s[i]
		if isDigit(c) {
			if r.nlead < len(r.lead) {
				r.lead[r.nlead] = c
				r.nlead++
			}
			cur++
			r.digits++
			i++
			continue
		}
		// Separators belong to the run only when a digit follows soon.
		j := i
		for j < len(s) && j-i < 6 {
			if strings.IndexByte(" -.()", s[j]) >= 0 {
				j++
			} else if strings.HasPrefix(s[j:], "ー") {
				j += len("ー")
			} else {
				break
			}
		}
		if j == i || j >= len(s) || !isDigit(s[j]) {
			break
		}
		r.endGroup(cur)
		cur = 0
		r.seps++
		i = j
	}
	r.endGroup(cur)
	return r, i
}

// versionIsPhone: a phone number fits the version pattern (090.1234.5678),
// but no OS numbers its versions with a leading zero.
func versionIsPhone(s string) bool {
	digits, leadingZero := 0, false
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			continue
		}
		digits++
		if s[i] == '0' && (i == 0 || s[i-1] == '.') && i+1 < len(s) && s[i+1] != '.' {
			leadingZero = true
		}
	}
	return leadingZero && digits >= 10 && digits <= 11
}

// --- file name ---

func isFileName(s string, p shape) bool {
	if len(s) >= 3 && isLower(s[0]) && s[1] == ':' && (s[2] == '\\' || s[2] == '/') {
		return true // C:\Users\...
	}
	if strings.HasPrefix(s, `\\`) {
		return true // \\server\share
	}
	if p.slash && (strings.HasPrefix(s, "/") || strings.HasPrefix(s, "~/") || strings.HasPrefix(s, "./") || strings.HasPrefix(s, "../")) {
		if strings.Count(s, "/") >= 2 && !strings.ContainsAny(s, " ") {
			return true // /home/taro/...
		}
	}
	if sshKeyFile(s) {
		return true
	}
	if !p.dot {
		return false
	}
	i := strings.LastIndexByte(s, '.')
	stem, ext := s[:i], s[i+1:]
	if stem == "" || latin[ext]&wFileExt == 0 {
		return false
	}
	for j := 0; j < len(stem); j++ {
		if c := stem[j]; c >= utf8.RuneSelf || c == ' ' || c == '/' || c == '\\' || c == '(' {
			return true // 見積書.pdf, "Q3 report.xlsx", dir/file.pdf, copy (2).docx
		}
	}
	k := strings.LastIndexByte(stem, '.')
	if k < 0 {
		return true // a single dot before a document extension: report.pdf
	}
	// A dotted id may end in a format (app.export.csv); a file's last stem part
	// usually has a date, a version or a word like "final".
	last := stem[k+1:]
	if last == "" || latin[last]&wFileExt != 0 {
		return true // report.tar.gz, customers.csv.zip
	}
	for j := 0; j < len(last); j++ {
		if c := last[j]; !isLower(c) {
			return true
		}
	}
	return latin[last]&wFileStem != 0
}

// sshKeyFile: the default names of SSH key files (id_rsa, id_ed25519.pub), which carry no
// extension of their own.
func sshKeyFile(s string) bool {
	s = strings.TrimSuffix(s, ".pub")
	switch s {
	case "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "authorized_keys", "known_hosts":
		return true
	}
	return false
}

// --- blob ---

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
	if isUUIDAnyCase(s) {
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
		if len(s) > 36 && (p == 0 || !isAlnum(s[p-1])) && (p+36 == len(s) || !isAlnum(s[p+36])) && isUUIDAnyCase(s[p:p+36]) {
			return p
		}
	}
	return -1
}

func isUUIDAnyCase(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(isDigit(c) || c-'a' < 6 || c-'A' < 6) {
				return false
			}
		}
	}
	return true
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

// --- free text ---

func isFreeText(k kind, w *words, s string, p shape) bool {
	if p.space && (p.lower || p.nonASCII) && strings.ContainsAny(strings.TrimSpace(s), " \t\n") {
		return true // several words; digits with spaces are a date or a number
	}
	if p.nonASCII {
		for _, r := range s {
			if r >= utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsSymbol(r) || unicode.IsPunct(r) || unicode.IsMark(r)) {
				return true // Japanese text, emoji, accented words: ids are ASCII
			}
		}
	}
	if p.punct {
		for i := 0; i < len(s); i++ {
			if isLetter(s[i]) {
				return true // prose punctuation next to words
			}
		}
	}
	for _, pre := range [...]string{"re:", "fw:", "fwd:"} {
		if strings.HasPrefix(s, pre) && len(s) > len(pre)+2 {
			return true // an email subject
		}
	}
	if len(s) > 256 || (len(s) > 64 && k != kindUser && k != kindAny) {
		return true
	}
	// Words that mark a sentence, joined by separators: please_call_me_back,
	// re_mitsumori_no_ken.
	// Only whole words count: in a hash, "I" or "Me" between digits and case
	// changes is chance (and a user's hash is fixed, so a false alarm there
	// would drop every event of that user).
	if p.sep || p.dot || p.upper {
		toks, flags, ok := w.get()
		if !ok || len(toks) < 3 || randomLooking(w.s, toks) {
			return false
		}
		stops := 0
		for i, f := range flags {
			t := toks[i]
			if f&wStop != 0 && wordSep(t.sep) && (t.end == len(w.s) || wordSep(w.s[t.end])) {
				stops++
			}
		}
		return stops >= 2
	}
	return false
}

func wordSep(c byte) bool { return c == 0 || c == '.' || c == '_' || c == '-' || c == ' ' }

// --- names ---

func isName(k kind, w *words, norm string, p shape) bool {
	if p.nonASCII && japaneseName(norm) {
		return true
	}
	if !p.lower && !p.upper {
		return false
	}
	found, nameLetters := latinName(w)
	if !found || k != kindUser || wordsLike(w.s) {
		// A user id spelled in lower-case words (send_mail_to_tanaka, john_doe) is read as
		// words, like any id; the rule below is for opaque ids.
		return found
	}
	// An opaque id may hold a chance "lee" or "aoi" among random letters; a
	// name used as an id is most of the id (yamada_taro, tanaka1985).
	letters := 0
	for i := 0; i < len(w.s); i++ {
		if isLetter(w.s[i]) {
			letters++
		}
	}
	return 2*nameLetters > letters
}

// wordsLike: lower-case letters, digits and separators, at least one separator, more letters
// than digits: words, not the random characters of an opaque id (which mix cases).
func wordsLike(s string) bool {
	letters, digits, seps := 0, 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case isLower(c):
			letters++
		case isDigit(c):
			digits++
		case c == '_' || c == '.' || c == '-':
			seps++
		default:
			return false
		}
	}
	return seps > 0 && letters > digits
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

// latinName reports whether the value's Latin words hold a name, and how
// many letters the name's words have.
func latinName(w *words) (bool, int) {
	toks, flags, ok := w.get()
	s, n := w.s, len(toks)
	if !ok || n == 0 || randomLooking(s, toks) {
		return false, 0
	}
	for i := 0; i < n; i++ {
		f, t := flags[i], toks[i]
		l := t.end - t.start
		// Pairs first: they cover more of the value than a name alone.
		if i+1 < n {
			g, u := flags[i+1], toks[i+1]
			m := u.end - u.start
			switch {
			case f&wFirst != 0 && g&wLast != 0, f&wLast != 0 && g&wFirst != 0:
				return true, l + m // taro.yamada, yamada_taro, john.smith, YamadaTaro
			case f&wLast != 0 && g&wHonorific != 0, f&wFirst != 0 && g&wHonorific != 0:
				return true, l + m // yamada-san, taro_kun
			case f&wTitle != 0 && g&(wLast|wFirst) != 0:
				return true, l + m // mr_smith
			case u.sep == '.' || u.sep == '_' || u.sep == '-' || u.sep == ' ':
				if (l == 1 && g&wLast != 0 && m >= 3) || (f&wLast != 0 && l >= 3 && m == 1) {
					return true, l + m // t.yamada, smith_j
				}
			}
		}
		if f&wJPFamily != 0 && f&wPairOnly == 0 && l >= 5 {
			return true, l // a distinctive family name on its own: tanaka, takahashi
		}
		if f&wJPGiven != 0 && f&wPairOnly == 0 && l >= 6 {
			return true, l // a distinctive given name on its own: hanako, takashi
		}
		if l >= 6 && concatName(s, t) {
			return true, l
		}
		if n == 1 && f&wENLast != 0 && l >= 5 && l == len(s) {
			// An English last name that is the whole value (smith): the list leaves out
			// those that are everyday words, and an id is rarely a surname alone.
			return true, l
		}
	}
	return false, 0
}

// concatName finds a name written as one word: yamadataro, johnsmith, tyamada.
func concatName(s string, t token) bool {
	if !namePrefixes.mayStart(s[t.start:t.end]) {
		return namePrefixes.mayStart(s[t.start+1:t.end]) && lookupRange(s, t.start+1, t.end)&wLast != 0
	}
	for i := t.start + 3; i <= t.end-3; i++ {
		a := lookupRange(s, t.start, i)
		if a&(wFirst|wLast) == 0 {
			continue
		}
		b := lookupRange(s, i, t.end)
		if (a&wLast != 0 && b&wFirst != 0) || (a&wFirst != 0 && b&wLast != 0) {
			return true
		}
	}
	return t.end-t.start >= 6 && lookupRange(s, t.start+1, t.end)&wLast != 0
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

var jaHonorifics = []string{"さん", "様", "さま", "くん", "君", "ちゃん", "殿", "氏", "先生", "部長", "課長", "社長", "先輩"}

// japaneseName recognises names in kanji and kana: 山田太郎, 山田 太郎,
// やまだ たろう, ヤマダタロウ, 田中さん, ジョン・スミス.
func japaneseName(s string) bool {
	t := strings.TrimSpace(s)
	honor := false
	for _, h := range jaHonorifics {
		if strings.HasSuffix(t, h) && len(t) > len(h) {
			t, honor = strings.TrimSpace(strings.TrimSuffix(t, h)), true
			break
		}
	}
	parts := strings.FieldsFunc(t, func(r rune) bool { return r == ' ' || r == '・' || r == '･' || r == '=' })
	if len(parts) == 0 || len(parts) > 3 {
		return false
	}
	total := 0
	for _, p := range parts {
		for _, r := range p {
			if !nameScript(r) {
				return false
			}
			total++
		}
	}
	if total > 10 {
		return false
	}
	known := 0
	for _, p := range parts {
		if enKatakana[p] {
			known++
		}
	}
	if known == len(parts) || (known > 0 && len(parts) == 2) {
		return true
	}
	if honor && total <= 6 {
		return true
	}
	if len(parts) == 2 && (jaFamily[parts[0]] || jaGiven[parts[1]] || shortHan(parts[0]) && shortHan(parts[1])) {
		return true // 山田 太郎, 李 明: two short runs of kanji are a family and a given name
	}
	joined := strings.Join(parts, "")
	runes := []rune(joined)
	for n := min(maxJAFamily, total); n >= 1; n-- {
		if !jaFamily[string(runes[:n])] {
			continue
		}
		rest := total - n
		if n > 1 && rest <= 4 {
			return true // 山田, 山田太郎, 佐々木さくら
		}
		// 林, 森, 原 also start ordinary words (森林, 原因): only with a given name.
		if n == 1 && rest > 0 && rest <= 3 && jaGiven[string(runes[n:])] {
			return true
		}
	}
	for n := min(maxJAGiven, total-1); n >= 1; n-- {
		if jaGiven[string(runes[total-n:])] && total-n <= 3 {
			return true
		}
	}
	return false
}

func shortHan(s string) bool {
	n := 0
	for _, r := range s {
		if !unicode.Is(unicode.Han, r) {
			return false
		}
		n++
	}
	return n >= 1 && n <= 3
}

func nameScript(r rune) bool {
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana) || r == 'ー' || r == '々' || r == 'ヶ'
}
