// The personal name detector: Latin names from the lexicon (taro.yamada, YamadaTaro,
// t.yamada, yamada-san, mr_smith, yamadataro) and Japanese names in kanji and kana (山田太郎,
// やまだ たろう, 田中さん, ジョン・スミス), with the rule that keeps chance names inside
// opaque user ids from firing. A person's name is identity: input data under the policy
// (reason input_data.personal_name). Tenant ids are not checked (see scan).

package guard

import (
	"strings"
	"unicode"
)

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
