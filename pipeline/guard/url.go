// The URL detector: a scheme (https://), a host followed by a path or a query
// (example.co.jp/path), an IP address or localhost with a path, a query string on its own
// (?id=1, key=value&key=value). A URL with a path or a query points at a customer's content,
// which the policy names as input data (reason input_data.url); a bare host name passes.

package guard

import (
	"strings"
)

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
