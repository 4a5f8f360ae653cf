package event

import (
	"encoding/json"
	"math"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Decode parses one event from b. It is strict where encoding/json is lenient,
// because every leniency is a way to smuggle something past the schema:
//
//   - unknown keys are rejected at every level (unknown_field);
//   - a key given twice is rejected (duplicate_key): consumers that keep the
//     first value would see something else than those that keep the last;
//   - null, a string for a number, a fraction or exponent for an integer are
//     rejected (wrong_type);
//   - invalid UTF-8, lone UTF-16 surrogates in \u escapes, raw control
//     characters and anything after the event are rejected (malformed_json).
//
// Decode also checks presence (missing_field, forbidden_field), that schema
// names a known category version (unknown_schema) and parses occurred_at
// (invalid_timestamp). Values are checked by Validate. The error is a *Rejection
// for the first problem found, in the order of the input; a message that is not
// JSON at all is always malformed_json.
//
// Decode is a single pass over the input with one allocation for the input's
// string copy (values without escapes are substrings of it), one for the
// payload and one per escaped string; see decode_timing_test.go for why not
// encoding/json.
func Decode(b []byte) (Event, error) {
	ev, r := decode(b)
	if r != nil {
		return Event{}, r
	}
	return ev, nil
}

func decode(b []byte) (Event, *Rejection) {
	d := decoder{s: string(b)}
	ev, r := d.event()
	if r != nil && r.Reason != ReasonMalformedJSON && !json.Valid(b) {
		// Decoding stops at the first problem, so without this the reason for a
		// message that is not JSON at all would depend on where the syntax error
		// sits. "Not JSON" wins, whatever else is wrong.
		return Event{}, reject(ReasonMalformedJSON, "", "not a single valid JSON value")
	}
	if r != nil {
		return Event{}, r
	}
	return ev, nil
}

type decoder struct {
	s   string
	pos int
}

var (
	envelopeKeys      = []string{"event_id", "tenant_id", "occurred_at", "schema", "source", "user", "client", "data"}
	clientKeys        = []string{"os", "os_version", "device_kind"}
	tenantProfileKeys = []string{"user_count", "organization_count"}
	clientEnvKeys     = []string{"client_kind", "browser"}
	appAccessKeys     = []string{"app_id", "action"}
	featureUseKeys    = []string{"feature_id", "count", "records_registered"}
	settingsKeys      = []string{"setting_key", "value", "customization_present", "customization_count"}
	operationKeys     = []string{"operation_id", "app_id", "result_code", "request_id"}
)

// Bits of envelopeKeys, in order.
const (
	envEventID = 1 << iota
	envTenantID
	envOccurredAt
	envSchema
	envSource
	envUser
	envClient
	envData
	envRequired = envEventID | envTenantID | envOccurredAt | envSchema | envSource | envData
)

func (d *decoder) event() (Event, *Rejection) {
	var ev Event
	if d.peek() == 0 {
		return ev, syntax("empty input")
	}
	dataAt, dataDone := -1, false
	seen, r := d.object("", envelopeKeys, envRequired, func(i int) *Rejection {
		var r *Rejection
		switch i {
		case 0:
			ev.EventID, r = d.stringValue("event_id")
		case 1:
			ev.TenantID, r = d.stringValue("tenant_id")
		case 2:
			var s string
			if s, r = d.stringValue("occurred_at"); r == nil {
				ev.OccurredAt, r = parseTime(s)
			}
		case 3:
			var s string
			s, r = d.stringValue("schema")
			ev.Schema = Schema(s)
		case 4:
			ev.Source, r = d.stringValue("source")
		case 5:
			ev.User, r = d.stringValue("user")
		case 6:
			r = d.client(&ev.Client)
		case 7:
			if c := d.peek(); c != '{' {
				return d.mismatch("data", c, "an object")
			}
			if ev.Schema.Known() {
				ev.Data, r = d.payload(ev.Schema)
				dataDone = true
				break
			}
			// The payload's type depends on schema, which comes later (or is
			// unknown): remember where data starts, decode it at the end.
			dataAt = d.pos
			r = d.skipObject()
		}
		return r
	})
	if r != nil {
		return ev, r
	}
	if d.peek() != 0 {
		return ev, syntax("data after the event; send one event per message")
	}
	if !ev.Schema.Known() {
		return ev, reject(ReasonUnknownSchema, "schema", "not a known category version; see schemas/events")
	}
	if ev.Schema.TenantLevel() {
		if seen&envUser != 0 {
			return ev, reject(ReasonForbiddenField, "user", "a tenant-level event carries no user; omit the key")
		}
	} else {
		if seen&envUser == 0 {
			return ev, reject(ReasonMissingField, "user", "required for user-level categories")
		}
		if seen&envClient == 0 {
			return ev, reject(ReasonMissingField, "client", "required for user-level categories")
		}
	}
	if !dataDone {
		d.pos = dataAt
		ev.Data, r = d.payload(ev.Schema)
	}
	return ev, r
}

func (d *decoder) client(c *Client) *Rejection {
	_, r := d.object("client", clientKeys, 1|4, func(i int) *Rejection {
		var r *Rejection
		var s string
		switch i {
		case 0:
			s, r = d.stringValue("client.os")
			c.OS = OS(s)
		case 1:
			// Validate reads "" as "absent", so a present empty version must
			// fail here or it would pass although the schema refuses it.
			if s, r = d.stringValue("client.os_version"); r == nil && s == "" {
				r = reject(ReasonInvalidField, "client.os_version", "must not be empty; omit it when unknown")
			}
			c.OSVersion = s
		case 2:
			s, r = d.stringValue("client.device_kind")
			c.DeviceKind = DeviceKind(s)
		}
		return r
	})
	return r
}

func (d *decoder) payload(s Schema) (Payload, *Rejection) {
	var r *Rejection
	switch s {
	case SchemaTenantProfileV1:
		p := &TenantProfile{}
		_, r = d.object("data", tenantProfileKeys, 1|2, func(i int) *Rejection {
			var r *Rejection
			switch i {
			case 0:
				p.UserCount, r = d.intValue("data.user_count")
			case 1:
				p.OrganizationCount, r = d.intValue("data.organization_count")
			}
			return r
		})
		return p, r
	case SchemaClientEnvV1:
		p := &ClientEnv{}
		_, r = d.object("data", clientEnvKeys, 1|2, func(i int) *Rejection {
			s, r := d.stringValue("data." + clientEnvKeys[i])
			switch i {
			case 0:
				p.ClientKind = ClientKind(s)
			case 1:
				p.Browser = Browser(s)
			}
			return r
		})
		return p, r
	case SchemaAppAccessV1:
		p := &AppAccess{}
		_, r = d.object("data", appAccessKeys, 1|2, func(i int) *Rejection {
			var r *Rejection
			switch i {
			case 0:
				p.AppID, r = d.stringValue("data.app_id")
			case 1:
				var s string
				s, r = d.stringValue("data.action")
				p.Action = Action(s)
			}
			return r
		})
		return p, r
	case SchemaFeatureUseV1:
		p := &FeatureUse{}
		_, r = d.object("data", featureUseKeys, 1|2|4, func(i int) *Rejection {
			var r *Rejection
			switch i {
			case 0:
				p.FeatureID, r = d.stringValue("data.feature_id")
			case 1:
				p.Count, r = d.intValue("data.count")
			case 2:
				p.RecordsRegistered, r = d.intValue("data.records_registered")
			}
			return r
		})
		return p, r
	case SchemaSettingsV1:
		p := &Settings{}
		_, r = d.object("data", settingsKeys, 1|2|4|8, func(i int) *Rejection {
			var r *Rejection
			switch i {
			case 0:
				p.SettingKey, r = d.stringValue("data.setting_key")
			case 1:
				p.Value, r = d.settingValue()
			case 2:
				p.CustomizationPresent, r = d.boolValue("data.customization_present")
			case 3:
				p.CustomizationCount, r = d.intValue("data.customization_count")
			}
			return r
		})
		return p, r
	case SchemaOperationV1:
		p := &Operation{}
		_, r = d.object("data", operationKeys, 1|2|4|8, func(i int) *Rejection {
			var r *Rejection
			switch i {
			case 0:
				p.OperationID, r = d.stringValue("data.operation_id")
			case 1:
				p.AppID, r = d.stringValue("data.app_id")
			case 2:
				p.ResultCode, r = d.stringValue("data.result_code")
			case 3:
				p.RequestID, r = d.stringValue("data.request_id")
			}
			return r
		})
		return p, r
	}
	return nil, reject(ReasonUnknownSchema, "schema", "not a known category version")
}

func (d *decoder) settingValue() (SettingValue, *Rejection) {
	switch c := d.peek(); {
	case c == '"':
		s, r := d.str()
		return TokenValue(s), r
	case c == 't' || c == 'f':
		b, r := d.boolValue("data.value")
		return BoolValue(b), r
	case c == '-' || c-'0' < 10:
		i, r := d.intValue("data.value")
		return IntValue(i), r
	default:
		return SettingValue{}, d.mismatch("data.value", c, "a token, a boolean or an integer")
	}
}

// object decodes the object that comes next. keys are the keys it may hold,
// bit i of the returned mask standing for keys[i]; value decodes the value of
// keys[i]. Keys in required must all be present.
func (d *decoder) object(path string, keys []string, required uint32, value func(i int) *Rejection) (uint32, *Rejection) {
	if c := d.peek(); c != '{' {
		return 0, d.mismatch(path, c, "an object")
	}
	d.pos++
	var seen uint32
	for first := true; ; first = false {
		c := d.peek()
		if c == '}' && first {
			d.pos++
			break
		}
		if !first {
			if c == '}' {
				d.pos++
				break
			}
			if c != ',' {
				return seen, syntax("expected , or } after a value")
			}
			d.pos++
			c = d.peek()
		}
		if c != '"' {
			return seen, syntax("expected a key")
		}
		key, r := d.str()
		if r != nil {
			return seen, r
		}
		if d.peek() != ':' {
			return seen, syntax("expected : after a key")
		}
		d.pos++
		i := keyIndex(keys, key)
		if i == len(keys) {
			// The key is not quoted back: it could itself be content.
			return seen, reject(ReasonUnknownField, join(path, "*"), "unknown field; allowed here: "+strings.Join(keys, ", "))
		}
		bit := uint32(1) << i
		if seen&bit != 0 {
			return seen, reject(ReasonDuplicateKey, join(path, key), "given twice; every key must appear once")
		}
		seen |= bit
		if r := value(i); r != nil {
			return seen, r
		}
	}
	if missing := required &^ seen; missing != 0 {
		for i := range keys {
			if missing&(1<<i) != 0 {
				return seen, reject(ReasonMissingField, join(path, keys[i]), "required")
			}
		}
	}
	return seen, nil
}

func keyIndex(keys []string, key string) int {
	for i, k := range keys {
		// Length and first byte settle most comparisons without a call to memequal.
		if len(k) == len(key) && k[0] == key[0] && k == key {
			return i
		}
	}
	return len(keys)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func syntax(msg string) *Rejection { return reject(ReasonMalformedJSON, "", msg) }

// peek skips white space and returns the next byte, 0 at the end of input.
func (d *decoder) peek() byte {
	s, i := d.s, d.pos
	for ; i < len(s); i++ {
		if c := s[i]; c > ' ' || (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			d.pos = i
			return c
		}
	}
	d.pos = i
	return 0
}

// mismatch reports a value of the wrong type, if c starts a value at all.
func (d *decoder) mismatch(field string, c byte, want string) *Rejection {
	switch {
	case c == '"', c == '{', c == '[', c == 't', c == 'f', c == 'n', c == '-', c-'0' < 10:
		if field == "" {
			return reject(ReasonWrongType, "", "an event must be "+want)
		}
		return reject(ReasonWrongType, field, "must be "+want)
	}
	return syntax("expected a value")
}

func (d *decoder) stringValue(field string) (string, *Rejection) {
	if c := d.peek(); c != '"' {
		return "", d.mismatch(field, c, "a string")
	}
	return d.str()
}

func (d *decoder) boolValue(field string) (bool, *Rejection) {
	switch c := d.peek(); c {
	case 't':
		if strings.HasPrefix(d.s[d.pos:], "true") {
			d.pos += 4
			return true, nil
		}
	case 'f':
		if strings.HasPrefix(d.s[d.pos:], "false") {
			d.pos += 5
			return false, nil
		}
	default:
		return false, d.mismatch(field, c, "a boolean")
	}
	return false, syntax("invalid literal")
}

func (d *decoder) intValue(field string) (int64, *Rejection) {
	if c := d.peek(); c != '-' && c-'0' >= 10 {
		return 0, d.mismatch(field, c, "an integer")
	}
	v, isInt, overflow, r := d.number()
	switch {
	case r != nil:
		return 0, r
	case !isInt:
		return 0, reject(ReasonWrongType, field, "must be an integer, without fraction or exponent")
	case overflow:
		return 0, reject(ReasonOutOfRange, field, "does not fit in 64 bits")
	}
	return v, nil
}

// number scans a JSON number at d.pos. isInt is false for numbers with a
// fraction or an exponent; v is set only for integers that fit in int64.
func (d *decoder) number() (v int64, isInt, overflow bool, r *Rejection) {
	s, i := d.s, d.pos
	neg := i < len(s) && s[i] == '-'
	if neg {
		i++
	}
	var u uint64
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i]-'1' < 9:
		for ; i < len(s) && s[i]-'0' < 10; i++ {
			dg := uint64(s[i] - '0')
			if u > (math.MaxUint64-dg)/10 {
				overflow = true
			} else {
				u = u*10 + dg
			}
		}
	default:
		return 0, false, false, syntax("invalid number")
	}
	isInt = true
	if i < len(s) && s[i] == '.' {
		isInt = false
		i++
		j := i
		for i < len(s) && s[i]-'0' < 10 {
			i++
		}
		if i == j {
			return 0, false, false, syntax("invalid number")
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		isInt = false
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := i
		for i < len(s) && s[i]-'0' < 10 {
			i++
		}
		if i == j {
			return 0, false, false, syntax("invalid number")
		}
	}
	d.pos = i
	if overflow || (!neg && u > math.MaxInt64) || (neg && u > 1<<63) {
		return 0, isInt, true, nil
	}
	if neg {
		return -int64(u), isInt, false, nil
	}
	return int64(u), isInt, false, nil
}

// plain marks the ASCII bytes a string can hold without escaping or ending
// it. Bytes from 0x80 up are not plain: their UTF-8 is validated where they
// occur, which saves a pass over the whole input.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	lows  = 0x0101010101010101
	highs = 0x8080808080808080
)

// skipPlain returns the index of the first byte at or after i that ends a
// plain run of string bytes: a quote, a backslash, a control character or a
// non-ASCII byte. It tests eight bytes per step; strings are most of an
// event's bytes.
func skipPlain(s string, i int) int {
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		q := x ^ (lows * '"')
		b := x ^ (lows * '\\')
		// A byte below 0x20, or one equal to '"' or '\\' (zero after the xor),
		// sets its high bit in the first term; a byte from 0x80 up has it set.
		if (((x-lows*0x20)|(q-lows)|(b-lows))&^x|x)&highs != 0 {
			break
		}
	}
	for i < len(s) && plain[s[i]] {
		i++
	}
	return i
}

// str reads the string whose opening quote is at d.pos.
func (d *decoder) str() (string, *Rejection) {
	s := d.s
	start := d.pos + 1
	i := start
	for {
		i = skipPlain(s, i)
		switch {
		case i == len(s):
			return "", syntax("unterminated string")
		case s[i] == '"':
			d.pos = i + 1
			return s[start:i], nil
		case s[i] == '\\':
			return d.strEscaped(start, i)
		case s[i] < 0x20:
			return "", syntax("control character in a string; escape it")
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return "", syntax("input is not valid UTF-8")
		}
		i += size
	}
}

func (d *decoder) strEscaped(start, i int) (string, *Rejection) {
	s := d.s
	buf := make([]byte, 0, i-start+16)
	buf = append(buf, s[start:i]...)
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return string(buf), nil
		case c < 0x20:
			return "", syntax("control character in a string; escape it")
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return "", syntax("input is not valid UTF-8")
			}
			buf = append(buf, s[i:i+size]...)
			i += size
			continue
		case c != '\\':
			buf = append(buf, c)
			i++
			continue
		}
		if i+1 >= len(s) {
			break
		}
		e := s[i+1]
		i += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r1, ok := hex4(s, i)
			if !ok {
				return "", syntax("invalid \\u escape")
			}
			i += 4
			if utf16.IsSurrogate(r1) {
				// A lone surrogate is not a character; encoding/json would turn it
				// into U+FFFD, hiding what was sent.
				if r1 >= 0xdc00 || i+6 > len(s) || s[i] != '\\' || s[i+1] != 'u' {
					return "", syntax("lone UTF-16 surrogate in \\u escape")
				}
				r2, ok := hex4(s, i+2)
				if !ok || r2 < 0xdc00 || r2 > 0xdfff {
					return "", syntax("lone UTF-16 surrogate in \\u escape")
				}
				i += 6
				r1 = utf16.DecodeRune(r1, r2)
			}
			buf = utf8.AppendRune(buf, r1)
		default:
			return "", syntax("invalid escape in a string")
		}
	}
	return "", syntax("unterminated string")
}

func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case c-'0' < 10:
			r = r<<4 | rune(c-'0')
		case c-'a' < 6:
			r = r<<4 | rune(c-'a'+10)
		case c-'A' < 6:
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// skipObject moves past the object at d.pos without decoding it. It only needs
// to find the object's end: the payload decoder reads the same bytes again,
// strictly, and reports any syntax error in them.
func (d *decoder) skipObject() *Rejection {
	depth := 0
	for s := d.s; d.pos < len(s); d.pos++ {
		switch s[d.pos] {
		case '"':
			for d.pos++; d.pos < len(s); d.pos++ {
				d.pos = skipPlain(s, d.pos)
				if d.pos >= len(s) || s[d.pos] == '"' {
					break
				}
				if s[d.pos] == '\\' {
					d.pos++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				d.pos++
				return nil
			}
		}
	}
	return syntax("unterminated object")
}

func parseTime(s string) (time.Time, *Rejection) {
	if IsTimestamp(s) {
		// The error is not wrapped: it would quote the value.
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, reject(ReasonInvalidTimestamp, "occurred_at", "must be RFC 3339 with an offset, e.g. 2025-05-31T09:15:00+09:00")
}
