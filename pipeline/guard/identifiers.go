package guard

import (
	"crypto/sha256"
	"net/netip"
	"strings"

	"github.com/shukei/shukei/event"
)

// The identifier classes a PII scanner knows (Presidio's recognisers, Cloud DLP's infoTypes)
// that fit in a short token: payment cards, IBANs, national and corporate numbers, passports,
// vehicle ids, postal codes, IP, MAC and IMEI addresses, wallet addresses and credentials.
// Most of them fit the id grammar once lower-cased (4111111111111111, 192.168.10.23,
// de89370400440532013000, 123-4567), so only a detector can stop them. Where a class has a
// check digit, the detector requires it: a numeric id is then refused by chance only as often
// as the check passes (one in ten for Luhn), and only at the class's length and prefix.

// identifier returns the reason for a value of a field of kind k that is one of those
// classes, or "". s is ASCII or already normalised (full-width digits folded).
func identifier(k kind, s string) event.Reason {
	if len(s) < 7 || len(s) > 100 {
		return ""
	}
	if len(s) == 36 && event.IsUUIDAnyCase(s) {
		return uuidLeak(s)
	}
	if isCredential(s) {
		return event.ReasonBlob
	}
	var digits, letters, colons, eq int
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigit(c):
			digits++
		case isLower(c), c-'A' < 26:
			letters++
		case c == ':':
			colons++
		case c == '=':
			eq++
		}
	}
	if eq > 0 && strings.Contains(s, "=40") {
		if u := unquotePrintable(s); isEmail(strings.ToLower(u), profile(u)) {
			return event.ReasonEmail // sato=40example=2Eco=2Ejp: quoted-printable
		}
	}
	// The bulk of ids (app.record.create, u:20931) have few digits and no colon.
	if digits < 5 && colons < 2 {
		return ""
	}
	if letters == 0 {
		if r := numeric(k, s); r != "" {
			return r
		}
	}
	if colons >= 2 || strings.HasPrefix(s, "[") {
		if isIPv6(s) {
			return event.ReasonNetworkAddress
		}
	}
	if isMAC(k, s) {
		return event.ReasonNetworkAddress
	}
	if letters > 0 && digits >= 5 {
		switch {
		case isIBAN(s):
			return event.ReasonBankAccount
		case nationalIDShape(s), isVIN(s):
			return event.ReasonNationalID
		case isWallet(s):
			return event.ReasonBlob
		}
		if r := labelled(s); r != "" {
			return r
		}
	}
	return embedded(s)
}

// unquotePrintable decodes =XX escapes (quoted-printable, as in sato=40example=2Eco=2Ejp).
func unquotePrintable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '=' && i+2 < len(s) && unhex(s[i+1]) >= 0 && unhex(s[i+2]) >= 0 {
			b.WriteByte(byte(unhex(s[i+1])<<4 | unhex(s[i+2])))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// uuidLeak judges a UUID: a version-1 UUID whose node is a real (unicast) MAC address tells
// the machine that made it; one whose variant is not RFC 4122's and whose bytes read as text
// is text in a UUID's clothes.
func uuidLeak(s string) event.Reason {
	if s == "00000000-0000-0000-0000-000000000000" {
		return ""
	}
	variant := s[19] | 0x20
	rfc := variant == '8' || variant == '9' || variant == 'a' || variant == 'b'
	if rfc && s[14] == '1' && unhex(s[25]|0x20)&1 == 0 {
		return event.ReasonNetworkAddress
	}
	if !rfc && hexIsText(strings.ToLower(strings.ReplaceAll(s, "-", "")), 8) {
		return event.ReasonBlob
	}
	return ""
}

// nationalIDShape: passports (TK1234567), Japan's residence card (AB12345678CD), the UK's
// National Insurance number (CE482917B), Spain's DNI (78042367D, with its check letter) and
// Singapore's NRIC (S2937705E), each by its shape.
func nationalIDShape(s string) bool {
	if len(s) != 9 && len(s) != 12 {
		return false
	}
	var shape [12]byte
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case isDigit(c):
			shape[i] = '9'
		case isLetter(c):
			shape[i] = 'a'
		default:
			return false
		}
	}
	lower := func(i int) byte { return s[i] | 0x20 }
	switch string(shape[:len(s)]) {
	case "aa9999999": // passport
		return true
	case "aa99999999aa": // residence card
		return true
	case "aa999999a": // NINO
		return lower(8) >= 'a' && lower(8) <= 'd' && strings.IndexByte("dfiquv", lower(0)) < 0 && strings.IndexByte("dfioquv", lower(1)) < 0
	case "99999999a": // DNI
		n := 0
		for i := 0; i < 8; i++ {
			n = n*10 + int(s[i]-'0')
		}
		return "trwagmyfpdxbnjzsqvhlcke"[n%23] == lower(8)
	case "a9999999a": // NRIC / FIN: the check letter's formula is published in two forms that
		// disagree, so the shape with its series letter decides.
		return strings.IndexByte("stfgm", lower(0)) >= 0
	}
	return false
}

// labels name an identifier class when a value carries one before its number
// (ssn_478201935, passport.mz5517304, mac_b827eb1a2b3c): the label says what the number is,
// where the number alone could be any id. Each needs at least so many digits after it.
var labels = map[string]struct {
	reason event.Reason
	digits int
}{
	"ssn": {event.ReasonNationalID, 7}, "itin": {event.ReasonNationalID, 7}, "passport": {event.ReasonNationalID, 6},
	"mynumber": {event.ReasonNationalID, 10}, "kojinbango": {event.ReasonNationalID, 10}, "houjinbango": {event.ReasonNationalID, 10},
	"dl": {event.ReasonNationalID, 8}, "license": {event.ReasonNationalID, 8}, "licence": {event.ReasonNationalID, 8},
	"nhs": {event.ReasonNationalID, 9}, "nino": {event.ReasonNationalID, 6}, "dni": {event.ReasonNationalID, 8},
	"nif": {event.ReasonNationalID, 8}, "nric": {event.ReasonNationalID, 7}, "aadhaar": {event.ReasonNationalID, 10},
	"iban": {event.ReasonBankAccount, 8}, "bank": {event.ReasonBankAccount, 7}, "acct": {event.ReasonBankAccount, 7},
	"account": {event.ReasonBankAccount, 7}, "kouza": {event.ReasonBankAccount, 7},
	"card": {event.ReasonPaymentCard, 12}, "cc": {event.ReasonPaymentCard, 12}, "ccn": {event.ReasonPaymentCard, 12},
	"creditcard": {event.ReasonPaymentCard, 12}, "visa": {event.ReasonPaymentCard, 12}, "amex": {event.ReasonPaymentCard, 12},
	"imei": {event.ReasonNetworkAddress, 14}, "mac": {event.ReasonNetworkAddress, 5}, "hwaddr": {event.ReasonNetworkAddress, 5},
	"macaddr": {event.ReasonNetworkAddress, 5}, "ipaddr": {event.ReasonNetworkAddress, 4},
	"zip": {event.ReasonPostalCode, 5}, "zipcode": {event.ReasonPostalCode, 5}, "postal": {event.ReasonPostalCode, 5},
	"postcode": {event.ReasonPostalCode, 5}, "yubin": {event.ReasonPostalCode, 7},
	"tel": {event.ReasonPhone, 9}, "phone": {event.ReasonPhone, 9}, "mobile": {event.ReasonPhone, 9}, "fax": {event.ReasonPhone, 9},
}

// labelled finds a label word, at the start or after a separator, followed after one
// separator by a number-like rest (mostly digits, at least the label's count): not a date,
// export_20240531 is a day, not an account.
func labelled(s string) event.Reason {
	l := s
	if strings.IndexFunc(s, func(r rune) bool { return r >= 'A' && r <= 'Z' }) >= 0 {
		l = strings.ToLower(s)
	}
	start := 0
	for i := 0; i <= len(l); i++ {
		if i < len(l) && isLower(l[i]) {
			continue
		}
		wordStart := start == 0 || strings.IndexByte("_.:=- ", l[start-1]) >= 0
		if wordStart && i > start && i+1 < len(l) && strings.IndexByte("_.:=- ", l[i]) >= 0 {
			if lab, ok := labels[l[start:i]]; ok && numberLike(l[i+1:], lab.digits) {
				return lab.reason
			}
		}
		start = i + 1
	}
	return ""
}

// numberLike: at least min digits, digits at least 40% of the letters and digits, nothing
// but letters, digits and separators, and not a date.
func numberLike(s string, min int) bool {
	d, a := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case isDigit(c):
			d++
		case isLower(c):
			a++
		case strings.IndexByte("_.:=- ", c) >= 0:
		default:
			return false
		}
	}
	return d >= min && 10*d >= 4*(d+a) && !dateLike(s)
}

// dateLike reports a value that is a date or a timestamp: 20240531, 2024-05-31, 202405311230.
func dateLike(s string) bool {
	if d, ok := digitGroups(s); ok {
		return dateDigits(d.d[:d.n])
	}
	return allDigits(s) && dateDigits([]byte(s))
}

func dateDigits(d []byte) bool {
	if len(d) < 8 || !(d[0] == '1' && d[1] == '9' || d[0] == '2' && d[1] == '0') {
		return false
	}
	m := int(d[4]-'0')*10 + int(d[5]-'0')
	day := int(d[6]-'0')*10 + int(d[7]-'0')
	return m >= 1 && m <= 12 && day >= 1 && day <= 31
}

// embedded looks for a number with a check digit that stands as a part of a longer value,
// set off by separators (card_4018070627780831, cc:372962353451355, id-352311764890-x):
// cards, IMEIs and My Numbers; and Japan's invoice registration number, T and a corporate
// number (T7015007299147). Runs inside a hash or an encoded value are not parts.
func embedded(s string) event.Reason {
	if len(s) == 14 && (s[0] == 't' || s[0] == 'T') && allDigits(s[1:]) && corporateNumber([]byte(s[1:])) {
		return event.ReasonNationalID
	}
	sep := func(c byte) bool { return strings.IndexByte("_.:=/ -", c) >= 0 }
	for i := 0; i < len(s); {
		if !isDigit(s[i]) || i > 0 && !sep(s[i-1]) {
			i++
			continue
		}
		j := i
		for j < len(s) && (isDigit(s[j]) || (s[j] == '-' || s[j] == ' ') && j+1 < len(s) && isDigit(s[j+1])) {
			j++
		}
		whole := i == 0 && j == len(s)
		bounded := j == len(s) || sep(s[j])
		run := s[i:j]
		i = j
		if whole || !bounded || len(run) < 12 {
			continue // numeric() judged a whole value; an unbounded run is part of a token
		}
		d, ok := digitGroups(run)
		if !ok || d.n < 12 || dateDigits(d.d[:d.n]) {
			continue
		}
		b := d.d[:d.n]
		switch n := d.n; {
		case n >= 13 && n <= 19 && luhn(b) && cardPrefix(b):
			return event.ReasonPaymentCard
		case n == 15 && luhn(b):
			return event.ReasonNetworkAddress
		case n == 12 && myNumber(b):
			return event.ReasonNationalID
		}
	}
	return ""
}

// numeric judges a value made of digits and separators, or a 〒 and a postal code.
func numeric(k kind, s string) event.Reason {
	if rest, ok := strings.CutPrefix(s, "〒"); ok {
		if d, ok := digitGroups(strings.TrimSpace(rest)); ok && d.n == 7 {
			return event.ReasonPostalCode
		}
		return ""
	}
	// An IPv4 address, possibly with a port or a prefix length.
	if ip := strings.IndexAny(s, ":/"); ip > 0 && allDigits(s[ip+1:]) {
		if isIPv4(s[:ip]) {
			return event.ReasonNetworkAddress
		}
	}
	if strings.IndexByte(s, '_') > 0 && strings.Trim(s, "0123456789_") == "" {
		// 81_90_2468_1357, 0001_052_4582361: a phone or account number spelled to fit the id
		// pattern.
		dashed := strings.ReplaceAll(s, "_", "-")
		if isPhone(dashed, profile(dashed)) {
			return event.ReasonPhone
		}
		if g, ok := digitGroups(dashed); ok && (g.grouped(3, 7) || g.grouped(4, 3, 7)) {
			return event.ReasonBankAccount
		}
		return ""
	}
	dg, ok := digitGroups(s)
	if !ok {
		return ""
	}
	d, n, sep := dg.d[:dg.n], dg.n, separators(s)
	if sep == "." {
		switch {
		case isIPv4(s):
			return event.ReasonNetworkAddress
		case n >= 13 && n <= 19 && luhn(d) && cardPrefix(d) && dg.grouped(4, 4, 4, 4):
			return event.ReasonPaymentCard // 4053.6098.4584.0012 fits the OS version pattern
		case dg.grouped(3, 2, 4) && (ssnArea(d) || itin(d)):
			return event.ReasonNationalID
		}
		return "" // versions: 17.4.1, 10.0.22631.3296
	}
	if sep != "" && sep != "-" && sep != " " {
		return ""
	}
	switch {
	case n >= 13 && n <= 19 && luhn(d) && cardPrefix(d):
		return event.ReasonPaymentCard
	case n == 15 && luhn(d):
		return event.ReasonNetworkAddress // IMEI
	// A My Number has a check digit that one in eleven random 12-digit numbers pass too, so
	// numeric user ids of twelve digits are refused that often: send them hashed, or shorter.
	case n == 12 && myNumber(d) && (sep == "" || dg.grouped(4, 4, 4)):
		return event.ReasonNationalID
	case n == 12 && sep != "" && dg.grouped(4, 4, 4):
		return event.ReasonNationalID // grouped like a My Number or an Aadhaar number
	case n == 13 && corporateNumber(d) && (sep == "" || dg.grouped(1, 4, 4, 4)):
		return event.ReasonNationalID
	case sep != "" && dg.grouped(3, 2, 4) && (ssnArea(d) || itin(d)):
		return event.ReasonNationalID
	case sep == "-" && (dg.grouped(3, 4) || dg.grouped(5, 4)):
		return event.ReasonPostalCode // 123-4567 (Japan), 12345-6789 (ZIP+4)
	case sep == "-" && (dg.grouped(3, 7) || dg.grouped(4, 3, 7)):
		return event.ReasonBankAccount // branch-account, bank-branch-account
	}
	return ""
}

// digits is a value made of digits and separators: its digits and the lengths of its runs,
// on the stack.
type digits struct {
	d      [24]byte
	n      int
	groups [8]int
	ng     int
}

func (d *digits) str() string { return string(d.d[:d.n]) }

// digitGroups reads s as digits and separators (space, dash, dot); ok is false when s holds
// anything else, an empty run, or more than fit.
func digitGroups(s string) (d digits, ok bool) {
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigit(c):
			if d.n == len(d.d) {
				return d, false
			}
			d.d[d.n] = c
			d.n++
			run++
		case c == ' ' || c == '-' || c == '.':
			if run == 0 || d.ng == len(d.groups)-1 {
				return d, false
			}
			d.groups[d.ng] = run
			d.ng++
			run = 0
		default:
			return d, false
		}
	}
	if run == 0 {
		return d, false
	}
	d.groups[d.ng] = run
	d.ng++
	return d, true
}

// separators returns the one separator s uses, "" for none, or "mixed".
func separators(s string) string {
	sep := ""
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isDigit(c) {
			if sep != "" && sep[0] != c {
				return "mixed"
			}
			sep = s[i : i+1]
		}
	}
	return sep
}

func (d *digits) grouped(want ...int) bool {
	if d.ng != len(want) {
		return false
	}
	for i, w := range want {
		if d.groups[i] != w {
			return false
		}
	}
	return true
}

func luhn(d []byte) bool {
	sum, double := 0, false
	for i := len(d) - 1; i >= 0; i-- {
		n := int(d[i] - '0')
		if double {
			if n *= 2; n > 9 {
				n -= 9
			}
		}
		sum += n
		double = !double
	}
	return sum%10 == 0
}

// cardPrefix reports whether d starts like a card of an issuer that uses its length: Visa,
// Mastercard (51-55, 2221-2720), Amex, Diners, Discover, JCB, UnionPay, Maestro, Mir.
func cardPrefix(d []byte) bool {
	n := len(d)
	p2 := int(d[0]-'0')*10 + int(d[1]-'0')
	p4 := p2*100 + int(d[2]-'0')*10 + int(d[3]-'0')
	switch {
	case d[0] == '4':
		return n == 13 || n == 16 || n == 19
	case p2 >= 51 && p2 <= 55, p4 >= 2221 && p4 <= 2720:
		return n == 16
	case p2 == 34 || p2 == 37:
		return n == 15
	case p2 == 36:
		return n >= 14 && n <= 19
	case p2 == 30 || p2 == 38 || p2 == 39:
		return n >= 14 && n <= 19
	case p4 >= 3528 && p4 <= 3589:
		return n >= 16 && n <= 19
	case p4 >= 2200 && p4 <= 2204:
		return n >= 16 && n <= 19
	case d[0] == '6', p2 == 50, p2 >= 56 && p2 <= 58:
		return n >= 12
	}
	return false
}

// myNumber checks the Japanese individual number's check digit (12 digits, the last one
// from the first eleven with weights 6,5,4,3,2,7,6,5,4,3,2).
func myNumber(d []byte) bool {
	sum := 0
	for i := 0; i < 11; i++ {
		q := 11 - i // position from the check digit
		w := q + 1
		if q > 6 {
			w = q - 5
		}
		sum += int(d[i]-'0') * w
	}
	check := 0
	if r := sum % 11; r > 1 {
		check = 11 - r
	}
	return int(d[11]-'0') == check
}

// corporateNumber checks the Japanese corporate number's leading check digit (13 digits:
// 9 - (Σ of the 12 others with weights 1,2 alternating from the right) mod 9).
func corporateNumber(d []byte) bool {
	sum := 0
	for i := 12; i >= 1; i-- {
		w := 1
		if (12-i)%2 == 1 {
			w = 2
		}
		sum += int(d[i]-'0') * w
	}
	return int(d[0]-'0') == 9-sum%9
}

// ssnArea rejects the SSN areas never issued (000, 666, 900-999), group 00 and serial 0000.
func ssnArea(d []byte) bool {
	area := string(d[:3])
	return area != "000" && area != "666" && area[0] != '9' && string(d[3:5]) != "00" && string(d[5:]) != "0000"
}

// itin: the US individual taxpayer number, 9xx-[50-65|70-88|90-92|94-99]-xxxx.
func itin(d []byte) bool {
	if d[0] != '9' {
		return false
	}
	g := int(d[3]-'0')*10 + int(d[4]-'0')
	return g >= 50 && g <= 65 || g >= 70 && g <= 88 || g >= 90 && g <= 92 || g >= 94
}

// isIPv4 reports a dotted quad of numbers up to 255 without leading zeros.
func isIPv4(s string) bool {
	var v [4]int
	part, digits := 0, 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if digits == 0 || part == 4 {
				return false
			}
			part++
			digits = 0
			continue
		}
		c := s[i]
		if part == 4 || !isDigit(c) || digits == 3 || digits == 1 && v[part] == 0 {
			return false // not a digit, more than three, or a leading zero
		}
		v[part] = v[part]*10 + int(c-'0')
		digits++
		if v[part] > 255 {
			return false
		}
	}
	if part != 4 {
		return false
	}
	// In os_version too: no OS numbers its versions as a dotted quad below 256 (Windows's
	// 10.0.22631.3296 has a build number above it).
	return true
}

func isIPv6(s string) bool {
	s = strings.TrimPrefix(s, "[")
	if i := strings.IndexByte(s, ']'); i >= 0 {
		s = s[:i]
	}
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6()
}

// isMAC reports 00:1a:2b:3c:4d:5e, 00-1a-…, 001a.2b3c.4d5e and, outside the fields where
// hex is expected, 001a2b3c4d5e.
func isMAC(k kind, s string) bool {
	hexAt := func(i, n int) bool { return isHexAnyCase(s[i : i+n]) }
	switch len(s) {
	case 17:
		sep := s[2]
		if sep != ':' && sep != '-' {
			return false
		}
		for i := 0; i < 17; i += 3 {
			if !hexAt(i, 2) || i+2 < 17 && s[i+2] != sep {
				return false
			}
		}
		return true
	case 14:
		return s[4] == '.' && s[9] == '.' && hexAt(0, 4) && hexAt(5, 4) && hexAt(10, 4)
	case 12:
		if k == kindUser || k == kindRequestID || !hexAt(0, 12) {
			return false
		}
		letters := 0
		for i := 0; i < 12; i++ {
			if !isDigit(s[i]) {
				letters++
			}
		}
		return letters >= 2 && letters <= 10
	}
	return false
}

// ibanLength is the length of each country's IBAN (ISO 13616 registry).
var ibanLength = map[string]int{
	"ad": 24, "ae": 23, "al": 28, "at": 20, "az": 28, "ba": 20, "be": 16, "bg": 22, "bh": 22, "br": 29,
	"by": 28, "ch": 21, "cr": 22, "cy": 28, "cz": 24, "de": 22, "dk": 18, "do": 28, "ee": 20, "eg": 29,
	"es": 24, "fi": 18, "fo": 18, "fr": 27, "gb": 22, "ge": 22, "gi": 23, "gl": 18, "gr": 27, "gt": 28,
	"hr": 21, "hu": 28, "ie": 22, "il": 23, "iq": 23, "is": 26, "it": 27, "jo": 30, "kw": 30, "kz": 20,
	"lb": 28, "lc": 32, "li": 21, "lt": 20, "lu": 20, "lv": 21, "ly": 25, "mc": 27, "md": 24, "me": 22,
	"mk": 19, "mr": 27, "mt": 31, "mu": 30, "nl": 18, "no": 15, "pk": 24, "pl": 28, "ps": 29, "pt": 25,
	"qa": 29, "ro": 24, "rs": 22, "sa": 24, "sc": 31, "se": 24, "si": 19, "sk": 24, "sm": 27, "sd": 18,
	"st": 25, "sv": 28, "tl": 23, "tn": 24, "tr": 26, "ua": 29, "va": 22, "vg": 24, "xk": 20,
}

// isIBAN: a country's length and the ISO 7064 mod-97 check, in any case, grouped or not.
func isIBAN(s string) bool {
	var b [34]byte
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '-':
			continue
		case c-'A' < 26:
			c += 'a' - 'A'
		case isLower(c), isDigit(c):
		default:
			return false
		}
		if n == len(b) {
			return false
		}
		b[n] = c
		n++
	}
	if n < 15 || !isLower(b[0]) || !isLower(b[1]) || !isDigit(b[2]) || !isDigit(b[3]) || ibanLength[string(b[:2])] != n {
		return false
	}
	rem := 0
	add := func(c byte) {
		if isDigit(c) {
			rem = (rem*10 + int(c-'0')) % 97
		} else {
			rem = (rem*100 + int(c-'a') + 10) % 97
		}
	}
	for _, c := range b[4:n] {
		add(c)
	}
	for _, c := range b[:4] {
		add(c)
	}
	return rem == 1
}

// isPassport: two letters and seven digits (Japan's TK1234567 form, in any case).
func isPassport(s string) bool {
	if len(s) != 9 || !isLetter(s[0]) || !isLetter(s[1]) {
		return false
	}
	return allDigits(s[2:])
}

// isVIN: 17 characters without I, O, Q, with the ISO 3779 check digit in position 9.
func isVIN(s string) bool {
	if len(s) != 17 {
		return false
	}
	weights := [17]int{8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2}
	sum, letters, digits := 0, 0, 0
	for i := 0; i < 17; i++ {
		c := s[i]
		if c-'a' < 26 {
			c -= 'a' - 'A'
		}
		var v int
		switch {
		case isDigit(c):
			v = int(c - '0')
			digits++
		case c == 'I' || c == 'O' || c == 'Q':
			return false
		case c-'A' < 26:
			v = int("12345678_12345_7_923456789"[c-'A'] - '0')
			letters++
		default:
			return false
		}
		sum += v * weights[i]
	}
	check := byte('0' + sum%11)
	if sum%11 == 10 {
		check = 'X'
	}
	c9 := s[8]
	if c9 == 'x' {
		c9 = 'X'
	}
	return letters >= 3 && digits >= 5 && c9 == check
}

// isWallet: Ethereum (0x + 40 hex), Bitcoin bech32 (bc1…) and base58check (1…, 3…) addresses.
func isWallet(s string) bool {
	if len(s) == 42 && (strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X")) {
		return isHexAnyCase(s[2:])
	}
	if len(s) >= 14 && len(s) <= 90 && s[0]|0x20 == 'b' && s[1]|0x20 == 'c' && s[2] == '1' {
		return bech32(strings.ToLower(s))
	}
	if (s[0] == '1' || s[0] == '3') && len(s) >= 26 && len(s) <= 35 {
		return base58Check(s)
	}
	return false
}

// bech32 checks a lower-case "bc1…" address's BCH checksum (BIP 173 and BIP 350 constants).
func bech32(s string) bool {
	const charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
	gen := [5]uint32{0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3}
	chk := uint32(1)
	step := func(v uint32) {
		top := chk >> 25
		chk = (chk&0x1ffffff)<<5 ^ v
		for i := 0; i < 5; i++ {
			if top>>i&1 == 1 {
				chk ^= gen[i]
			}
		}
	}
	hrp := "bc"
	for i := 0; i < len(hrp); i++ {
		step(uint32(hrp[i] >> 5))
	}
	step(0)
	for i := 0; i < len(hrp); i++ {
		step(uint32(hrp[i] & 31))
	}
	for i := 3; i < len(s); i++ {
		v := strings.IndexByte(charset, s[i])
		if v < 0 {
			return false
		}
		step(uint32(v))
	}
	return chk == 1 || chk == 0x2bc830a3
}

func isHexAnyCase(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; !isDigit(s[i]) && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// base58Check decodes a Bitcoin address and checks its double-SHA-256 checksum.
func base58Check(s string) bool {
	var out [25]byte
	for i := 0; i < len(s); i++ {
		v := strings.IndexByte(base58Alphabet, s[i])
		if v < 0 {
			return false
		}
		carry := v
		for j := len(out) - 1; j >= 0; j-- {
			carry += 58 * int(out[j])
			out[j] = byte(carry)
			carry >>= 8
		}
		if carry != 0 {
			return false
		}
	}
	h := sha256.Sum256(out[:21])
	h = sha256.Sum256(h[:])
	return string(h[:4]) == string(out[21:])
}

// credentials are the access keys and tokens of common services, each a prefix, a
// length range and the alphabet of the rest: AWS access key ids, GitHub, GitLab, npm, Slack,
// Stripe and Google API keys. Compared in lower case.
var credentials = []struct {
	prefix   string
	min, max int
	alphabet string
}{
	{"akia", 20, 20, alnum}, {"asia", 20, 20, alnum}, {"aroa", 20, 20, alnum}, {"aida", 20, 20, alnum},
	{"ghp_", 40, 40, alnum}, {"gho_", 40, 40, alnum}, {"ghu_", 40, 40, alnum}, {"ghs_", 40, 40, alnum},
	{"ghr_", 40, 40, alnum}, {"github_pat_", 40, 100, alnum + "_"}, {"glpat-", 26, 40, alnum + "_-"},
	{"npm_", 40, 40, alnum}, {"xoxb-", 24, 100, alnum + "-"}, {"xoxp-", 24, 100, alnum + "-"},
	{"xoxa-", 24, 100, alnum + "-"}, {"xoxs-", 24, 100, alnum + "-"}, {"xapp-", 24, 100, alnum + "-"},
	{"sk_live_", 20, 120, alnum}, {"sk_test_", 20, 120, alnum}, {"rk_live_", 20, 120, alnum},
	{"pk_live_", 20, 120, alnum}, {"aiza", 39, 39, alnum + "_-"},
}

const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

// hasPrefixFold: s starts with the lower-case ASCII prefix, in any case.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := s[i]
		if c-'A' < 26 {
			c |= 0x20
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

func isCredential(s string) bool {
	if len(s) < 20 || strings.IndexByte("agnxsrp", s[0]|0x20) < 0 {
		return false
	}
	for _, c := range credentials {
		if len(s) < c.min || len(s) > c.max || !hasPrefixFold(s, c.prefix) {
			continue
		}
		ok := true
		for i := len(c.prefix); i < len(s) && ok; i++ {
			ch := s[i]
			if ch-'A' < 26 {
				ch |= 0x20
			}
			ok = strings.IndexByte(c.alphabet, ch) >= 0
		}
		if ok {
			return true
		}
	}
	return false
}
