package query

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/registry"
)

// Kind is the type of a report parameter. There is no free text: every kind has a strict form,
// and a value that does not have it is refused (400) before any SQL is built.
type Kind string

// Parameter kinds.
const (
	Enum   Kind = "enum"   // one of Values
	Ident  Kind = "ident"  // event.PatternID (tenant ids, feature ids, editions, size bands)
	Ticket Kind = "ticket" // registry.PatternTicket
	Int    Kind = "int"    // decimal, Min..Max
	Date   Kind = "date"   // YYYY-MM-DD
	Month  Kind = "month"  // YYYY-MM
	Time   Kind = "time"   // RFC 3339
	Bool   Kind = "bool"   // true or false
)

var patterns = map[Kind]*regexp.Regexp{
	Ident:  regexp.MustCompile(event.PatternID),
	Ticket: regexp.MustCompile(registry.PatternTicket),
}

// maxValues bounds a list parameter.
const maxValues = 50

// Param describes one parameter of a report.
type Param struct {
	Name     string
	Kind     Kind
	Doc      string
	Values   []string // Enum
	Min, Max int      // Int
	Multi    bool     // a comma-separated list (or the parameter repeated)
	Required bool
	Default  string // as it would be written in the URL; empty: none
}

// Args are a request's parameters after validation, typed by their Param.
type Args map[string]any

// Str returns a single-valued enum, ident, ticket or month parameter ("" when absent).
func (a Args) Str(name string) string { s, _ := a[name].(string); return s }

// List returns a list parameter (nil when absent).
func (a Args) List(name string) []string { l, _ := a[name].([]string); return l }

// Int returns an int parameter.
func (a Args) Int(name string) int { n, _ := a[name].(int); return n }

// Time returns a date or time parameter.
func (a Args) Time(name string) time.Time { t, _ := a[name].(time.Time); return t }

// Bool returns a bool parameter.
func (a Args) Bool(name string) bool { b, _ := a[name].(bool); return b }

// BadParam is a parameter the caller got wrong; the service answers 400 with its text.
type BadParam struct{ Msg string }

func (e *BadParam) Error() string { return e.Msg }

func badf(format string, args ...any) error { return &BadParam{Msg: fmt.Sprintf(format, args...)} }

// reserved parameters are the service's, not a report's.
var reserved = []string{"purpose", "format"}

// parse validates q against params. Unknown parameters are errors, so a misspelt filter is
// never silently ignored.
func parse(params []Param, q url.Values, now time.Time) (Args, error) {
	known := map[string]*Param{}
	for i := range params {
		known[params[i].Name] = &params[i]
	}
	for name := range q {
		if _, ok := known[name]; !ok && !slices.Contains(reserved, name) {
			return nil, badf("unknown parameter %q (this report takes: %s)", trunc(name), names(params))
		}
	}
	a := Args{}
	for _, p := range params {
		raw := q[p.Name]
		if len(raw) > 1 && !p.Multi {
			return nil, badf("parameter %s is given %d times; it takes one value", p.Name, len(raw))
		}
		var vals []string
		for _, r := range raw {
			for v := range strings.SplitSeq(r, ",") {
				if p.Multi {
					v = strings.TrimSpace(v)
				}
				vals = append(vals, v)
			}
		}
		if len(raw) == 0 || len(vals) == 1 && vals[0] == "" {
			if p.Required {
				return nil, badf("parameter %s is required: %s", p.Name, p.Doc)
			}
			if p.Default == "" {
				continue
			}
			vals = strings.Split(p.Default, ",")
		}
		if !p.Multi && len(vals) > 1 {
			return nil, badf("parameter %s takes one value, got %d", p.Name, len(vals))
		}
		if len(vals) > maxValues {
			return nil, badf("parameter %s takes at most %d values, got %d", p.Name, maxValues, len(vals))
		}
		typed := make([]any, 0, len(vals))
		for _, v := range vals {
			t, err := p.value(v, now)
			if err != nil {
				return nil, err
			}
			typed = append(typed, t)
		}
		if p.Multi {
			l := make([]string, 0, len(typed))
			for _, t := range typed {
				if !slices.Contains(l, t.(string)) {
					l = append(l, t.(string))
				}
			}
			a[p.Name] = l
		} else {
			a[p.Name] = typed[0]
		}
	}
	return a, nil
}

func (p *Param) value(v string, now time.Time) (any, error) {
	switch p.Kind {
	case Enum:
		if !slices.Contains(p.Values, v) {
			return nil, badf("parameter %s: %q is not one of %s", p.Name, trunc(v), strings.Join(p.Values, ", "))
		}
		return v, nil
	case Ident, Ticket:
		if !patterns[p.Kind].MatchString(v) {
			return nil, badf("parameter %s: %q is not an identifier (%s)", p.Name, trunc(v), patterns[p.Kind])
		}
		return v, nil
	case Int:
		n, err := strconv.Atoi(v)
		if err != nil || n < p.Min || n > p.Max {
			return nil, badf("parameter %s: %q is not a whole number from %d to %d", p.Name, trunc(v), p.Min, p.Max)
		}
		return n, nil
	case Date:
		today := now.UTC().Truncate(24 * time.Hour)
		switch v {
		case "today":
			return today, nil
		case "last_week": // the Monday of the last complete ISO week
			return today.AddDate(0, 0, -((int(today.Weekday())+6)%7)-7), nil
		}
		t, err := time.Parse(time.DateOnly, v)
		if err != nil {
			return nil, badf("parameter %s: %q is not a date (YYYY-MM-DD, today or last_week)", p.Name, trunc(v))
		}
		return t, nil
	case Month:
		if v == "current" {
			return now.UTC().Format("2006-01"), nil
		}
		if _, err := time.Parse("2006-01", v); err != nil {
			return nil, badf("parameter %s: %q is not a month (YYYY-MM or current)", p.Name, trunc(v))
		}
		return v, nil
	case Time:
		if v == "now" {
			return now.UTC().Truncate(time.Second), nil
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, badf("parameter %s: %q is not an RFC 3339 time (2026-11-29T10:00:00Z or now)", p.Name, trunc(v))
		}
		return t.UTC(), nil
	case Bool:
		b, err := strconv.ParseBool(v)
		if err != nil || (v != "true" && v != "false") {
			return nil, badf("parameter %s: %q is not true or false", p.Name, trunc(v))
		}
		return b, nil
	}
	return nil, fmt.Errorf("parameter %s has no kind", p.Name)
}

// trunc keeps an echoed value short: error messages repeat what was sent, not all of it.
func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func names(params []Param) string {
	n := make([]string, len(params))
	for i, p := range params {
		n[i] = p.Name
	}
	return strings.Join(n, ", ")
}

// paramsHash is the audit log's fingerprint of a request's parameters: SHA-256 of the sorted
// name=value pairs as sent (the format is left out; it does not change what was read).
func paramsHash(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		if k != "format" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		for _, v := range q[k] {
			fmt.Fprintf(h, "%q=%q\n", k, v)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}
