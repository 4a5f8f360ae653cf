package event

// The patterns of the JSON Schemas, as constants so that tests can hold the
// hand-written matchers below (regexp is several times slower on the hot path)
// and the schema files to the same text.
const (
	PatternID          = `^[a-z0-9][a-z0-9_.-]{0,63}$`
	PatternEventID     = `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`
	PatternUser        = `^[A-Za-z0-9][A-Za-z0-9_:=-]{0,127}$`
	PatternOSVersion   = `^[0-9]{1,4}(\.[0-9]{1,5}){0,3}$`
	PatternToken       = `^[a-z0-9][a-z0-9_.-]{0,31}$`
	PatternResultCode  = `^[a-z0-9_]{1,32}$`
	PatternRequestID   = `^([0-9a-f]{16,32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$`
	PatternOccurredAt  = `^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	nilUUID            = "00000000-0000-0000-0000-000000000000"
	maxIDLen           = 64
	maxTokenLen        = 32
	maxUserLen         = 128
	minHexRequestIDLen = 16
	maxHexRequestIDLen = 32
)

// Bounds of the numbers in the schemas.
const (
	MaxUserCount          = 10_000_000
	MaxOrganizationCount  = 1_000_000
	MaxFeatureCount       = 1_000_000
	MaxRecordsRegistered  = 1_000_000
	MaxSettingInt         = 1_000_000
	MinSettingInt         = -1_000_000
	MaxCustomizationCount = 10_000
)

func isLowerAlnum(c byte) bool { return c-'a' < 26 || c-'0' < 10 }

func isHexLower(c byte) bool { return c-'0' < 10 || c-'a' < 6 }

// IsID reports whether s matches PatternID: tenant, source, feature, app,
// setting and operation ids.
func IsID(s string) bool { return isIDUpTo(s, maxIDLen) }

// IsSettingToken reports whether s matches PatternToken, the string form of a
// setting value.
func IsSettingToken(s string) bool { return isIDUpTo(s, maxTokenLen) }

func isIDUpTo(s string, max int) bool {
	if len(s) == 0 || len(s) > max || !isLowerAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isLowerAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// IsUUID reports whether s is a UUID in lowercase canonical form (PatternEventID).
func IsUUID(s string) bool {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	// One table lookup a character and no branch: the processor checks several UUIDs an
	// event, and a loop with a switch was 7% of its CPU under make bench.
	t := &hexLowerTable
	return t[s[0]]&t[s[1]]&t[s[2]]&t[s[3]]&t[s[4]]&t[s[5]]&t[s[6]]&t[s[7]]&
		t[s[9]]&t[s[10]]&t[s[11]]&t[s[12]]&
		t[s[14]]&t[s[15]]&t[s[16]]&t[s[17]]&
		t[s[19]]&t[s[20]]&t[s[21]]&t[s[22]]&
		t[s[24]]&t[s[25]]&t[s[26]]&t[s[27]]&t[s[28]]&t[s[29]]&t[s[30]]&t[s[31]]&t[s[32]]&t[s[33]]&t[s[34]]&t[s[35]] == 1
}

// hexLowerTable is 1 at the lowercase hex digits.
var hexLowerTable = func() (t [256]uint8) {
	for c := range 256 {
		if isHexLower(byte(c)) {
			t[c] = 1
		}
	}
	return t
}()

// IsUUIDAnyCase reports whether s is a UUID in canonical form, in either case: the guard's
// test for a UUID where one does not belong (a user id, a UUID inside a longer value).
func IsUUIDAnyCase(s string) bool {
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
			if !(isHexLower(c) || c-'A' < 6) {
				return false
			}
		}
	}
	return true
}

// IsEventID reports whether s is acceptable as event_id: a lowercase canonical
// UUID other than the nil UUID, which a buggy collector would send for every event.
func IsEventID(s string) bool { return IsUUID(s) && s != nilUUID }

// IsUserID reports whether s matches PatternUser.
func IsUserID(s string) bool {
	if len(s) == 0 || len(s) > maxUserLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c-'a' < 26, c-'A' < 26, c-'0' < 10:
		case i > 0 && (c == '_' || c == ':' || c == '=' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// IsOSVersion reports whether s matches PatternOSVersion.
func IsOSVersion(s string) bool {
	parts, digits := 0, 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			max := 5
			if parts == 0 {
				max = 4
			}
			if digits == 0 || digits > max {
				return false
			}
			parts++
			digits = 0
			continue
		}
		if s[i]-'0' >= 10 {
			return false
		}
		digits++
	}
	return parts <= 4
}

// IsResultCode reports whether s matches PatternResultCode.
func IsResultCode(s string) bool {
	if len(s) == 0 || len(s) > maxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLowerAlnum(c) && c != '_' {
			return false
		}
	}
	return true
}

// IsRequestID reports whether s matches PatternRequestID.
func IsRequestID(s string) bool {
	if IsUUID(s) {
		return true
	}
	if len(s) < minHexRequestIDLen || len(s) > maxHexRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHexLower(s[i]) {
			return false
		}
	}
	return true
}

// IsTimestamp reports whether s matches PatternOccurredAt. time.Parse alone is
// not enough: it also takes a comma before the fraction and more than nine
// fractional digits, which the schema refuses.
func IsTimestamp(s string) bool {
	// 2006-01-02T15:04:05 is 19 bytes, then fraction, then Z or ±hh:mm.
	if len(s) < 20 {
		return false
	}
	d := func(i int) bool { return s[i]-'0' < 10 }
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18} {
		if !d(i) {
			return false
		}
	}
	if s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return false
	}
	month := (s[5]-'0')*10 + s[6] - '0'
	day := (s[8]-'0')*10 + s[9] - '0'
	hour := (s[11]-'0')*10 + s[12] - '0'
	if month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || s[14] > '5' || s[17] > '5' {
		return false
	}
	rest := s[19:]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n]-'0' < 10 {
			n++
		}
		if n == 1 || n > 10 {
			return false
		}
		rest = rest[n:]
	}
	switch {
	case rest == "Z":
		return true
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		for _, i := range [...]int{1, 2, 4, 5} {
			if rest[i]-'0' >= 10 {
				return false
			}
		}
		return (rest[1]-'0')*10+rest[2]-'0' <= 23 && rest[4] <= '5'
	}
	return false
}
