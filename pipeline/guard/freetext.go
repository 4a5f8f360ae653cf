// The free-text detector: several words with spaces, non-ASCII letters, symbols or
// emoji (Japanese text, accented words), prose punctuation next to letters, e-mail subjects
// (re:, fwd:), values too long for an id, and sentences joined by separators
// (please_call_me_back). Prose is what a customer wrote, their content: input data under
// the policy (reason input_data.free_text).

package guard

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

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
