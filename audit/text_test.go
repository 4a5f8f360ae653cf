package audit

import (
	"strings"
	"testing"
	"time"
)

func TestPrintable(t *testing.T) {
	for s, want := range map[string]bool{
		"plain text, with spaces":    true,
		"警察からの照会書 (2026-1129-7) による": true,
		"hidden\x1b[2Kline":          false, // ESC: erase the line
		"evil\u202etxt.exe":          false, // right-to-left override
		"two\nlines":                 false,
		"tab\there":                  false,
		"cr\rhere":                   false,
		"nul\x00":                    false,
		"zero\u200bwidth":            false,
		"bad utf-8 \xff":             false,
		"non-breaking\u00a0space":    true,
		"全角\u3000スペース":               true,
	} {
		if _, ok := Printable(s); ok != want {
			t.Errorf("Printable(%q) = %v, want %v", s, ok, want)
		}
	}
}

func TestShownEscapesWhatIsNotPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, spaces fine":   "plain text, spaces fine",
		"警察からの照会 (T-99)":            "警察からの照会 (T-99)",
		"ok\x1b[1A\x1b[2Khidden":    `ok\x1b[1A\x1b[2Khidden`,
		"evil\u202etxt.exe":         `evil\u202etxt.exe`,
		"one\ntwo\r\tthree":         `one\ntwo\r\tthree`,
		"nul\x00 del\x7f":           `nul\x00 del\x7f`,
		"bad \xff utf-8":            `bad \xff utf-8`,
		`a \x1b typed as text`:      `a \\x1b typed as text`,
		"zero\u200bwidth\u00a0nbsp": "zero\\u200bwidth\u00a0nbsp",
		"全角\u3000スペース":              "全角\u3000スペース",
		"":                          "",
	} {
		if got := Shown(in); got != want {
			t.Errorf("Shown(%q) = %q, want %q", in, got, want)
		}
	}
}

// WriteReport: one row a record, every text escaped, a tenant or "-", and the totals of the
// allowed (with their rows) and the denied.
func TestWriteReport(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	rs := []Record{
		{Seq: 7, At: at, Kind: "contractor", ContractRef: "C-1", Purpose: "support", Tenant: "t\x1b1", Ticket: "T-1", Report: "support_trace",
			Decision: Allowed, Reason: "ok", Rows: 12},
		{Seq: 9, At: at, Kind: "contractor", ContractRef: "C-1", Purpose: "marketing", Report: "segments", Decision: Denied,
			Reason: "not granted\u202e", BudgetEpsilon: 0.5},
	}
	var b strings.Builder
	WriteReport(&b, "agency", "2026-03", rs)
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want a header, 2 rows and the totals:\n%s", len(lines), b.String())
	}
	for _, want := range []string{"SEQ", "REASON", "ROWS", "ε"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("header %q lacks %s", lines[0], want)
		}
	}
	if got := strings.Fields(lines[1]); strings.Join(got, " ") != `7 2026-03-04T05:06:07Z support t\x1b1 T-1 support_trace allowed ok 12 0` {
		t.Errorf("row 1: %q", lines[1])
	}
	if got := strings.Fields(lines[2]); strings.Join(got, " ") != `9 2026-03-04T05:06:07Z marketing - segments denied not granted\u202e 0 0.5` {
		t.Errorf("row 2: %q", lines[2])
	}
	if want := "agency (contractor C-1) in 2026-03: 1 requests allowed (12 rows), 1 denied"; lines[3] != want {
		t.Errorf("totals %q, want %q", lines[3], want)
	}
	b.Reset()
	WriteReport(&b, "nobody\n", "2026-03", nil)
	if !strings.HasSuffix(b.String(), `nobody\n ( ) in 2026-03: 0 requests allowed (0 rows), 0 denied`+"\n") {
		t.Errorf("no records: %q", b.String())
	}
}
