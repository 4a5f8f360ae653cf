// The phone number detector: Japanese numbers (090-1234-5678, 03-1234-5678,
// 0120-123-456), international ones (+81 90 ..., 0081 ..., 81-90-...) and North American
// ones (XXX-XXX-XXXX), also where a number hides in a user id or an OS version. A phone
// number reaches a person: identity, and so input data under the policy (reason
// input_data.phone).

package guard

import (
	"strings"
)

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
