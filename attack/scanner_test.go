package attack

import (
	"strings"
	"testing"
)

// TestScannerFindsWhatItClaims checks the attack harness itself (no services): a scan that
// cannot find a leak would make every attack pass. Each needle is planted in the forms a
// writer may use (as is, other case, JSON-escaped, Go-quoted) and must be found; values that
// merely look alike must not be.
func TestScannerFindsWhatItClaims(t *testing.T) {
	sc := newScanner()
	sc.add(&needle{id: "a", desc: "email", value: "Taro.Yamada@Example.CO.JP"})
	sc.add(&needle{id: "b", desc: "control char", value: "weekly\x00"})
	sc.add(&needle{id: "c", desc: "zero-width joiner", value: "ta\u200dro"})
	sc.add(&needle{id: "d", desc: "html", value: "田中太郎 <tanaka@example.jp>"})
	sc.add(&needle{id: "e", desc: "short", value: "高橋"})
	sc.add(&needle{id: "f", desc: "newline", value: "ja\n"})
	sc.add(&needle{id: "g", desc: "three bytes", value: "\u3164"})
	sc.add(&needle{id: "canary", desc: "canary", value: "atk-canary", canary: true})
	sc.addUser("3f1c9a52-7b0e-4d6e-9a51-2c8e4f0b7d13", "a user", nil)

	plant := map[string]string{
		"raw, other case":        "x taro.yamada@example.co.jp y",
		"JSON-escaped NUL":       `{"v":"weekly\u0000"}`,
		"Go-quoted ZWJ":          `user="ta\u200dro"`,
		"JSON HTML-escaped":      `"田中太郎 \u003ctanaka@example.jp\u003e"`,
		"escaped newline":        `value="ja\n"`,
		"user upper-case":        "USER=3F1C9A52-7B0E-4D6E-9A51-2C8E4F0B7D13",
		"canary":                 "tenant atk-canary",
		"short in binary (skip)": "\xff\xfe\u3164\x00",
		"short in text":          "name=高橋",
		"three bytes in text":    "a\u3164b",
		"look-alike (no hit)":    "taro.yamada@example.com weekly ta-ro 3f1c9a52-7b0e-4d6e-9a51-2c8e4f0b7d14 ja",
	}
	for where, v := range plant {
		sc.scan("test", "test "+where, []string{v}, func(int, string, int) string { return "" })
	}
	found := map[string]bool{}
	for _, f := range sc.findings {
		found[strings.TrimPrefix(f.where, "test ")] = true
	}
	for where := range plant {
		want := !strings.Contains(where, "(skip)") && !strings.Contains(where, "(no hit)") && where != "canary"
		if found[where] != want {
			t.Errorf("%s: found %v, want %v", where, found[where], want)
		}
	}
	if len(sc.canaries) != 1 {
		t.Errorf("canary found in %d places, want 1", len(sc.canaries))
	}
	if sc.ignored != 1 {
		t.Errorf("%d short hits in binary values ignored, want 1", sc.ignored)
	}
	if got := safe("taro.yamada@example.co.jp"); strings.Contains(got, "yamada") {
		t.Errorf("safe gives the value away: %s", got)
	}
	if got := safe("高橋"); strings.Contains(got, "高橋") {
		t.Errorf("safe gives a two-character value away: %s", got)
	}
	red := sc.redactor()("ok line\nleak taro.yamada@example.co.jp here\nuser 3f1c9a52-7b0e-4d6e-9a51-2c8e4f0b7d13")
	if strings.Contains(red, "yamada") || strings.Contains(red, "3f1c9a52") || !strings.Contains(red, "ok line") {
		t.Errorf("redactor: %q", red)
	}
}
