package guard

import (
	"embed"
	"strings"
	"unicode/utf8"
)

//go:embed names/*.txt
var nameFiles embed.FS

// Word flags of the Latin lexicon. One map lookup gives every role a token can
// play, which keeps the per-token cost of the guard to a single hash.
const (
	wJPFamily  uint16 = 1 << iota // romaji family name
	wPairOnly                     // family name that is also a place, brand or word
	wJPGiven                      // romaji given name
	wENFirst                      // English first name
	wENLast                       // English last name
	wStop                         // word that marks a sentence, not an identifier
	wHonorific                    // -san, -sama: follows a name
	wTitle                        // mr, dr: precedes a name
	wFileExt                      // extension of a document, image, archive or mail file
	wFileStem                     // word typical of a file's name (final, draft, copy)
	wTLD                          // top-level domain, for obfuscated email addresses

	wFirst = wJPGiven | wENFirst
	wLast  = wJPFamily | wENLast
)

// lexicon is built once at package initialisation and only read afterwards,
// so the guard is safe for concurrent use.
var (
	latin      = map[string]uint16{}
	jaFamily   = map[string]bool{} // kanji, hiragana and katakana
	jaGiven    = map[string]bool{}
	enKatakana = map[string]bool{}
	// longest entries, in runes, to bound prefix and suffix searches
	maxJAFamily, maxJAGiven int
)

func init() {
	for _, w := range listWords("ja_family_romaji.txt") {
		if w == "pair" {
			continue
		}
		latin[w] |= wJPFamily
	}
	// "pair" marks the entry before it.
	prev := ""
	for _, w := range listWords("ja_family_romaji.txt") {
		if w == "pair" {
			latin[prev] |= wPairOnly
		}
		prev = w
	}
	prev = ""
	for _, w := range listWords("ja_given_romaji.txt") {
		if w == "pair" {
			latin[prev] |= wPairOnly
		} else {
			latin[w] |= wJPGiven
		}
		prev = w
	}
	for _, w := range listWords("en_first.txt") {
		latin[w] |= wENFirst
	}
	for _, w := range listWords("en_last.txt") {
		latin[w] |= wENLast
	}
	for _, w := range strings.Fields(stopWords) {
		latin[w] |= wStop
	}
	for _, w := range strings.Fields("san sama kun chan sensei dono shi senpai") {
		latin[w] |= wHonorific
	}
	for _, w := range strings.Fields("mr mrs ms miss dr prof mister madam") {
		latin[w] |= wTitle
	}
	for _, w := range strings.Fields(fileExtensions) {
		latin[w] |= wFileExt
	}
	for _, w := range strings.Fields("final draft copy backup old new rev revised fixed scan scanned signed memo minutes invoice receipt contract resume cv estimate quotation") {
		latin[w] |= wFileStem
	}
	for _, w := range strings.Fields("com net org jp io co info biz edu gov us uk de fr cn kr tw ne or ac go ad ed lg gr ca au in ru br it es nl se ch") {
		latin[w] |= wTLD
	}

	for _, w := range listWords("ja_family_kanji.txt") {
		jaFamily[w] = true
	}
	for _, w := range listWords("ja_family_kana.txt") {
		jaFamily[w] = true
		jaFamily[katakana(w)] = true
	}
	for _, w := range listWords("ja_given_kanji.txt") {
		jaGiven[w] = true
	}
	for _, w := range listWords("ja_given_kana.txt") {
		jaGiven[w] = true
		jaGiven[katakana(w)] = true
	}
	for _, w := range listWords("en_katakana.txt") {
		enKatakana[w] = true
	}
	for w, f := range latin {
		prefixes.add(w)
		if f&(wFirst|wLast) != 0 {
			namePrefixes.add(w)
		}
		// Honorifics, titles, domain endings and file-stem words only count
		// next to a name, an "at" or an extension, which are risky themselves.
		if f&(wFirst|wLast|wStop|wFileExt) != 0 {
			riskPrefixes.add(w)
		}
	}
	for w := range jaFamily {
		maxJAFamily = max(maxJAFamily, utf8.RuneCountInString(w))
	}
	for w := range jaGiven {
		maxJAGiven = max(maxJAGiven, utf8.RuneCountInString(w))
	}
}

// prefixSet holds the first three letters of words (or the whole word when
// shorter). Most tokens of an id (app, record, create) start no word of the
// lexicon, and a bit test rules them out without hashing.
type prefixSet [(27*27*27 + 63) / 64]uint64

func prefixIndex(w string) (int, bool) {
	idx := 0
	for i := 0; i < 3; i++ {
		c := byte(0)
		if i < len(w) {
			c = w[i]
			if c-'A' < 26 {
				c += 'a' - 'A'
			}
			if c-'a' >= 26 {
				return 0, false
			}
			c = c - 'a' + 1
		}
		idx = idx*27 + int(c)
	}
	return idx, true
}

func (p *prefixSet) add(w string) {
	if i, ok := prefixIndex(w); ok {
		p[i/64] |= 1 << (i % 64)
	}
}

// mayStart reports whether some word of the set starts like w[:3] (or is w,
// when w is shorter). Words with other than ASCII letters are always looked up.
func (p *prefixSet) mayStart(w string) bool {
	i, ok := prefixIndex(w)
	return !ok || p[i/64]&(1<<(i%64)) != 0
}

// prefixes: every word of the lexicon; namePrefixes: names only;
// riskPrefixes: words that make a detector fire on their own.
var prefixes, namePrefixes, riskPrefixes prefixSet

func listWords(name string) []string {
	b, err := nameFiles.ReadFile("names/" + name)
	if err != nil {
		panic("guard: embedded name list missing: " + err.Error())
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		out = append(out, strings.Fields(line)...)
	}
	return out
}

// katakana maps hiragana to katakana; both spell the same names.
func katakana(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'ぁ' && r <= 'ゖ' {
			return r + ('ァ' - 'ぁ')
		}
		return r
	}, s)
}

// stopWords mark a sentence: identifiers are built from nouns and verbs, not
// from pronouns, greetings and polite Japanese forms. Words that ids use
// (to, in, with, and, is, not, no, has) are left out: back_to_top,
// sign_in_with_sso and is_not_required are ids, not prose.
const stopWords = `
the i me my mine you your yours we our he him his she her they them their this that these those
please thanks thank hello hi hey dear regards sorry cant dont doesnt didnt wont isnt will would could
should tomorrow yesterday asap attached re fw fwd
wo ga ni wa desu masu deshita mashita shimasu kudasai onegai yoroshiku arigatou arigato gozaimasu
ken nitsuite
`

// fileExtensions are those of files a user creates or receives. Extensions that
// are also common words or id parts (md, log, key, ai, app, msg, pages) are left out.
const fileExtensions = `
pdf doc docx docm xls xlsx xlsm ppt pptx pptm csv tsv txt rtf odt ods odp
zip 7z rar lzh tgz gz tar jpg jpeg png gif heic webp bmp tif tiff svg psd dwg jtd
mp3 mp4 m4a wav mov avi wmv mkv eml pst ics vcf
bz2 xz zst sql bak dump sqlite pem p12 pfx kdbx iso dmg apk ipa exe msi
`
