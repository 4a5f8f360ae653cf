package audit

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"
)

// Printable reports the first character of s that is not printable (unicode.IsGraphic:
// letters, marks, numbers, punctuation, symbols and spaces — the ideographic space of Japanese
// text included — but no control characters, no escape, no format characters such as
// bidirectional overrides or zero-width spaces, no line breaks), or ok. It is the one rule of
// what free text may be stored for the trails (a break-glass justification, its tenant).
func Printable(s string) (bad rune, ok bool) {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return r, false
			}
		}
		if !unicode.IsGraphic(r) {
			return r, false
		}
	}
	return 0, true
}

// Shown is s as a terminal may print it: every rune that is not printable (unicode.IsGraphic:
// control characters, escape sequences, format characters such as bidirectional overrides,
// line breaks, tabs) and every byte that is not UTF-8 is escaped Go-style (\x1b, \u202e, \n,
// \xff), and so is the backslash, so that a stored text can neither rewrite the terminal, hide
// or fake a line, nor pass for an escape. Free text is refused unless printable when stored
// (Printable, the one rule of what is printable); this covers rows from before. Every listing
// of the audit log, the principals and the break-glass grants shows its text through it.
func Shown(s string) string {
	if _, ok := Printable(s); ok && !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case unicode.IsGraphic(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\u202e', '\n'
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// ReportTo writes the records of principal who in month (Report) as WriteReport does
// ('shukei audit report').
func (l *Log) ReportTo(ctx context.Context, w io.Writer, who, month string) error {
	rs, err := l.Report(ctx, who, month)
	if err != nil {
		return err
	}
	WriteReport(w, who, month, rs)
	return nil
}

// WriteReport writes rs, the records of principal who in month (Log.Report), as a table with
// every text field Shown, followed by one line of totals: the requests allowed (and their
// rows) and denied ('shukei audit report', clause 5).
func WriteReport(w io.Writer, who, month string, rs []Record) {
	var allowed, denied int
	var rows uint64
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tAT\tPURPOSE\tTENANT\tTICKET\tREPORT\tDECISION\tREASON\tROWS\tε\t")
	for _, r := range rs {
		tenant := "-"
		if r.Tenant != "" {
			tenant = Shown(r.Tenant)
		}
		// Every text field shown escaped: a record written before free text was
		// refused unless printable must not rewrite the terminal or hide a line.
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%g\t\n", r.Seq, r.At.UTC().Format(time.RFC3339), Shown(r.Purpose), tenant,
			Shown(r.Ticket), Shown(r.Report), Shown(r.Decision), Shown(r.Reason), r.Rows, r.BudgetEpsilon)
		if r.Decision == Allowed {
			allowed++
			rows += r.Rows
		} else {
			denied++
		}
	}
	_ = tw.Flush()
	kind, ref := "", ""
	if len(rs) > 0 {
		kind, ref = rs[0].Kind, rs[0].ContractRef
	}
	fmt.Fprintf(w, "%s (%s %s) in %s: %d requests allowed (%d rows), %d denied\n", Shown(who), Shown(kind), Shown(ref), month, allowed, rows, denied)
}
