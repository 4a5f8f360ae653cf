package dlq

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"
)

// Dim is a dimension stats can group by.
type Dim string

// The dimensions.
const (
	DimReason Dim = "reason"
	DimClass  Dim = "class"
	DimTenant Dim = "tenant"
	DimField  Dim = "field"
	DimDay    Dim = "day" // the Kafka record time's UTC date
)

// Dims lists every dimension, in their canonical order.
var Dims = []Dim{DimReason, DimClass, DimTenant, DimField, DimDay}

// DefaultBy is the grouping of 'shukei dlq stats' without --by.
const DefaultBy = "reason,class"

// ParseBy parses a comma-separated list of dimensions (reason,class,tenant,field,day).
func ParseBy(s string) ([]Dim, error) {
	var out []Dim
	seen := map[Dim]bool{}
	for _, part := range strings.Split(s, ",") {
		d := Dim(strings.TrimSpace(part))
		if d == "" {
			continue
		}
		known := false
		for _, k := range Dims {
			known = known || k == d
		}
		if !known {
			return nil, fmt.Errorf("--by: %s is not a dimension; use any of reason, class, tenant, field, day", quoteShort(string(d)))
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--by: name at least one of reason, class, tenant, field, day")
	}
	return out, nil
}

func (r Record) dim(d Dim) string {
	switch d {
	case DimReason:
		return r.Reason
	case DimClass:
		return r.Class
	case DimTenant:
		return r.Tenant
	case DimField:
		return r.Field
	case DimDay:
		return r.Time.UTC().Format("2006-01-02")
	}
	return ""
}

// Group is one row of the stats: the values of the grouped dimensions, the records in it,
// and how many of them kept a payload.
type Group struct {
	Keys    map[Dim]string `json:"keys"`
	Records int            `json:"records"`
	Kept    int            `json:"payload_kept"`
}

// Stats counts DLQ records. It never holds anything but checked header values: reasons,
// classes, field paths, tenant ids and dates.
type Stats struct {
	Topic string    `json:"topic"`
	By    []Dim     `json:"by"`
	Since time.Time `json:"since,omitzero"`
	// Read is every message read; Records the distinct records among them (by key); Copies the
	// re-sent copies of a record (a processor that crashed after writing the DLQ writes it
	// again), counted once.
	Read    int `json:"read"`
	Records int `json:"records"`
	Copies  int `json:"resent_copies"`
	Legacy  int `json:"legacy_records"`
	// Malformed counts records that could not be parsed, by what was wrong.
	Malformed map[string]int `json:"malformed"`
	Groups    []Group        `json:"groups"`

	idx  map[string]int
	seen map[Position]bool
}

// NewStats starts counting with the given grouping.
func NewStats(by []Dim) *Stats {
	return &Stats{By: by, Malformed: map[string]int{}, idx: map[string]int{}, seen: map[Position]bool{}}
}

// Add counts one DLQ message.
func (s *Stats) Add(m kafka.Message) {
	s.Read++
	r, err := Parse(m)
	if err != nil {
		s.Malformed[err.(*Malformed).Code]++
		return
	}
	if s.seen[r.Key] {
		s.Copies++
		return
	}
	s.seen[r.Key] = true
	s.Records++
	if r.Kept == KeptLegacy {
		s.Legacy++
	}
	vals := make([]string, len(s.By))
	for i, d := range s.By {
		vals[i] = r.dim(d)
	}
	k := strings.Join(vals, "\x00")
	i, ok := s.idx[k]
	if !ok {
		g := Group{Keys: map[Dim]string{}}
		for j, d := range s.By {
			g.Keys[d] = vals[j]
		}
		i = len(s.Groups)
		s.idx[k] = i
		s.Groups = append(s.Groups, g)
	}
	s.Groups[i].Records++
	if r.Kept == KeptPayload {
		s.Groups[i].Kept++
	}
}

// Sort orders the groups by records, most first, then by their keys.
func (s *Stats) Sort() {
	sort.SliceStable(s.Groups, func(i, j int) bool {
		a, b := s.Groups[i], s.Groups[j]
		if a.Records != b.Records {
			return a.Records > b.Records
		}
		for _, d := range s.By {
			if a.Keys[d] != b.Keys[d] {
				return a.Keys[d] < b.Keys[d]
			}
		}
		return false
	})
	s.idx = map[string]int{}
	for i, g := range s.Groups {
		vals := make([]string, len(s.By))
		for j, d := range s.By {
			vals[j] = g.Keys[d]
		}
		s.idx[strings.Join(vals, "\x00")] = i
	}
}

// MalformedTotal is the number of malformed records.
func (s *Stats) MalformedTotal() int {
	n := 0
	for _, c := range s.Malformed {
		n += c
	}
	return n
}

// CollectStats reads the DLQ topic (bounded, see Source.Scan) and counts its records.
func CollectStats(ctx context.Context, src Source, by []Dim, since time.Time) (*Stats, error) {
	s := NewStats(by)
	s.Topic, s.Since = src.Topic, since
	_, err := src.Scan(ctx, since, nil, func(m kafka.Message) error {
		s.Add(m)
		return nil
	})
	s.Sort()
	return s, err
}

// StatsTo counts the records of src written since s (ParseSince; "" all) grouped by the
// dimensions by names (ParseBy), and writes them to w as a table (WriteTable), or as indented
// JSON ('shukei dlq stats').
func StatsTo(ctx context.Context, w io.Writer, src Source, by, since string, asJSON bool) error {
	dims, err := ParseBy(by)
	if err != nil {
		return err
	}
	from, err := ParseSince(since, time.Now())
	if err != nil {
		return err
	}
	st, err := CollectStats(ctx, src, dims, from)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(w, st)
	}
	return st.WriteTable(w)
}

// writeJSON writes v to w as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// WriteTable prints the stats as a table, then the totals and what was malformed.
func (s *Stats) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	var head []string
	for _, d := range s.By {
		head = append(head, strings.ToUpper(string(d)))
	}
	fmt.Fprintln(tw, strings.Join(append(head, "RECORDS", "PAYLOAD KEPT"), "\t")+"\t")
	for _, g := range s.Groups {
		var row []string
		for _, d := range s.By {
			v := g.Keys[d]
			if v == "" {
				v = "-"
			}
			row = append(row, v)
		}
		row = append(row, strconv.Itoa(g.Records), strconv.Itoa(g.Kept))
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	since := ""
	if !s.Since.IsZero() {
		since = " since " + s.Since.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "%d records in %s%s (%d messages read", s.Records, s.Topic, since, s.Read)
	if s.Copies > 0 {
		fmt.Fprintf(w, ", %d re-sent copies counted once", s.Copies)
	}
	fmt.Fprintln(w, ")")
	if s.Legacy > 0 {
		fmt.Fprintf(w, "%d legacy records (no kept header: written before payloads were content-free; never shown or replayed)\n", s.Legacy)
	}
	if n := s.MalformedTotal(); n > 0 {
		codes := make([]string, 0, len(s.Malformed))
		for c := range s.Malformed {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		parts := make([]string, len(codes))
		for i, c := range codes {
			parts[i] = fmt.Sprintf("%s %d", c, s.Malformed[c])
		}
		fmt.Fprintf(w, "%d malformed records, not counted above: %s\n", n, strings.Join(parts, ", "))
	}
	return nil
}

// ParseSince reads --since: a look-back ("7d", "36h") from now, a UTC date ("2025-05-01") or
// an RFC 3339 time. Empty means from the beginning (the zero time).
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if d, err := strconv.Atoi(n); err == nil && d > 0 && d < 100000 {
			return now.UTC().Add(-time.Duration(d) * 24 * time.Hour), nil
		}
	} else if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.UTC().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %s: want a look-back (7d, 36h), a date (2025-05-01) or an RFC 3339 time", quoteShort(s))
}
