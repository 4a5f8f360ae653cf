package collector

import (
	"strings"
	"testing"
)

// PrintNewToken prints a token and the config entry holding only its hash.
func TestPrintNewToken(t *testing.T) {
	var b strings.Builder
	if err := PrintNewToken(&b, "acme"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want two lines:\n%s", b.String())
	}
	tok, ok1 := strings.CutPrefix(lines[0], "token: shk_")
	entry, ok2 := strings.CutPrefix(lines[1], "ingest_tokens entry: ")
	if !ok1 || !ok2 || entry != TokenHash("acme", "shk_"+tok) || strings.Contains(entry, tok) {
		t.Fatalf("token and entry do not match, or the entry holds the token:\n%s", b.String())
	}
}
