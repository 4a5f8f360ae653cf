package attack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
)

// needle is one value that must be found nowhere Shukei writes (or, for a canary, that must
// be found: a check that the scan reads what it claims to read).
type needle struct {
	id     string // short handle: "corpus.jsonl:12", "user", "content"
	desc   string // what it is, for failure messages; never the value itself
	value  string
	forms  []string // lower-cased search forms: as is, JSON-escaped, Go-quoted
	canary bool
	owner  *sent // the event it was sent in (raw users, unique content)
}

// safe shows a value without giving it away: at most its first 3 characters (never more than
// half of them), Go-quoted, and its length.
func safe(v string) string {
	r := []rune(v)
	n := min(3, len(r)/2)
	return fmt.Sprintf("%s…(%d chars)", strconv.Quote(string(r[:n])), len(r))
}

func hasLetter(s string) bool {
	for _, r := range s {
		if unicode.IsLetter(r) {
			return true
		}
	}
	return false
}

// forms are the ways a value can be written out: as is, JSON-escaped (with and without HTML
// escaping), Go-quoted (what a text log handler or %q writes) and Go-quoted as ASCII; each
// lower-cased (values with letters are compared case-insensitively; lower-casing changes
// nothing in the others).
func forms(v string) []string {
	var out []string
	add := func(f string) {
		f = strings.ToLower(f)
		if f == "" {
			return
		}
		for _, g := range out {
			if g == f {
				return
			}
		}
		out = append(out, f)
	}
	unquote := func(q string) string {
		q = strings.TrimSuffix(q, "\n")
		if len(q) >= 2 && q[0] == '"' && q[len(q)-1] == '"' {
			return q[1 : len(q)-1]
		}
		return q
	}
	add(v)
	if b, err := json.Marshal(v); err == nil {
		add(unquote(string(b)))
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) == nil {
		add(unquote(buf.String()))
	}
	add(unquote(strconv.Quote(v)))
	add(unquote(strconv.QuoteToASCII(v)))
	return out
}

// finding is every place one needle was found in one location.
type finding struct {
	where   string
	n       *needle
	form    int // index of the form found first
	hits    int
	example string
}

// scanner looks for many needles at once (Aho-Corasick over lower-cased bytes) and for raw
// user ids (UUIDs, looked up in a set), in every value of every location it is given.
type scanner struct {
	needles []*needle
	users   map[string]*needle // lower-case UUID → who sent it

	ac *acMachine

	findings map[string]*finding // where + needle id + value
	order    []string
	canaries map[*needle][]string // canary → locations it was found in
	ignored  int                  // short needles found inside binary (non-UTF-8) values
	scanned  map[string]int       // location kind → values scanned
}

func newScanner() *scanner {
	return &scanner{users: map[string]*needle{}, findings: map[string]*finding{}, canaries: map[*needle][]string{}, scanned: map[string]int{}}
}

func (s *scanner) add(n *needle) {
	n.forms = forms(n.value)
	s.needles = append(s.needles, n)
	s.ac = nil
}

func (s *scanner) addUser(user, desc string, owner *sent) {
	s.users[strings.ToLower(user)] = &needle{id: "raw user", desc: desc, value: user, owner: owner}
}

func (s *scanner) machine() *acMachine {
	if s.ac == nil {
		var pats []string
		var owners [][2]int
		for i, n := range s.needles {
			for j, f := range n.forms {
				pats = append(pats, f)
				owners = append(owners, [2]int{i, j})
			}
		}
		s.ac = buildAC(pats, owners)
	}
	return s.ac
}

// scan looks through values (one location: a column, a DLQ field, a role's output). attr
// names the place of a hit (row, record, line) from the value's index and the lower-cased
// value and the hit's byte position in it.
func (s *scanner) scan(kind, where string, values []string, attr func(i int, lower string, pos int) string) {
	ac := s.machine()
	s.scanned[kind] += len(values)
	for i, v := range values {
		if v == "" {
			continue
		}
		lower := strings.ToLower(v)
		binary := !utf8.ValidString(v)
		ac.match(lower, func(end int, owner [2]int) {
			n := s.needles[owner[0]]
			f := n.forms[owner[1]]
			if binary && len(f) < 4 {
				// A value that is not text (a hash, a key, an aggregate state) holds any short
				// byte sequence by chance; a needle of 1-3 bytes found there proves nothing.
				s.ignored++
				return
			}
			s.record(where, n, owner[1], func() string { return attr(i, lower, end-len(f)) })
		})
		for pos := 0; pos+36 <= len(lower); pos++ {
			if lower[pos+8] != '-' || lower[pos+13] != '-' || lower[pos+18] != '-' || lower[pos+23] != '-' {
				continue
			}
			if n := s.users[lower[pos:pos+36]]; n != nil {
				p := pos
				s.record(where, n, 0, func() string { return attr(i, lower, p) })
			}
		}
	}
}

func (s *scanner) record(where string, n *needle, form int, example func() string) {
	if n.canary {
		locs := s.canaries[n]
		if len(locs) == 0 || locs[len(locs)-1] != where {
			s.canaries[n] = append(locs, where)
		}
		return
	}
	key := where + "\x00" + n.id + "\x00" + n.value
	f := s.findings[key]
	if f == nil {
		f = &finding{where: where, n: n, form: form, example: example()}
		s.findings[key] = f
		s.order = append(s.order, key)
	}
	f.hits++
}

// report fails the test for every finding of a location kind ("table", "DLQ", "log"), with
// the needle's description and a shortened value, never the value itself: first how many
// distinct values each location holds, then the findings one by one (bounded). classify, if
// not nil, sorts findings under titles of their own ("" keeps the promise's title).
func (s *scanner) report(t *testing.T, kind, promise string, classify func(*finding) string) int {
	t.Helper()
	type group struct {
		out      []string
		perWhere map[string][2]int
		wheres   []string
	}
	groups := map[string]*group{}
	var titles []string
	total := 0
	for _, k := range s.order {
		f := s.findings[k]
		if !strings.HasPrefix(f.where, kind+" ") {
			continue
		}
		title := promise
		if classify != nil {
			if c := classify(f); c != "" {
				title = c
			}
		}
		g := groups[title]
		if g == nil {
			g = &group{perWhere: map[string][2]int{}}
			groups[title] = g
			titles = append(titles, title)
		}
		how := "as sent"
		if f.n.id != "raw user" && f.form < len(f.n.forms) {
			how = describeForm(f.n.value, f.n.forms[f.form])
		}
		g.out = append(g.out, fmt.Sprintf("%s: %s %s %s, %d hit(s) (%s), e.g. %s", f.where, f.n.id, safe(f.n.value), f.n.desc, f.hits, how, f.example))
		c, seen := g.perWhere[f.where]
		if !seen {
			g.wheres = append(g.wheres, f.where)
		}
		g.perWhere[f.where] = [2]int{c[0] + 1, c[1] + f.hits}
		total++
	}
	for _, title := range titles {
		g := groups[title]
		var head []string
		for _, w := range g.wheres {
			head = append(head, fmt.Sprintf("SUMMARY %s: %d distinct value(s), %d hit(s)", w, g.perWhere[w][0], g.perWhere[w][1]))
		}
		const most = 40
		more := ""
		if len(g.out) > most {
			more = fmt.Sprintf("\n  … and %d more", len(g.out)-most)
		}
		t.Errorf("%s — found in %ss: %d value(s) in %d place(s):\n  %s\n  %s%s", title, kind, len(g.out), len(g.wheres),
			strings.Join(head, "\n  "), strings.Join(g.out[:min(most, len(g.out))], "\n  "), more)
	}
	return total
}

func describeForm(v, f string) string {
	switch f {
	case strings.ToLower(v):
		if hasLetter(v) && f != v {
			return "as sent, case-insensitively"
		}
		return "as sent"
	default:
		return "escaped"
	}
}

// checkCanaries fails the test when a canary (a value the harness knows is stored) was not
// found: then the scan did not read what it claims to read, and a clean result means nothing.
func (s *scanner) checkCanaries(t *testing.T) {
	t.Helper()
	for _, n := range s.needles {
		if !n.canary {
			continue
		}
		if len(s.canaries[n]) == 0 {
			t.Errorf("harness: the scan did not find %s (%s), which is certainly stored: the scan is broken, its clean results mean nothing", n.id, n.desc)
		}
	}
}

// redactor returns a function that withholds every line holding a needle or a raw user id,
// for the few places a test prints what a role wrote.
func (s *scanner) redactor() func(string) string {
	return func(text string) string {
		var out []string
		for _, line := range strings.Split(text, "\n") {
			probe := newScanner()
			probe.needles, probe.users, probe.ac = s.needles, s.users, s.machine()
			probe.scan("redact", "redact", []string{line}, func(int, string, int) string { return "" })
			if len(probe.findings) > 0 {
				line = fmt.Sprintf("[line of %d bytes withheld by the attack harness: it holds a value that must not be printed]", len(line))
			}
			out = append(out, line)
		}
		return strings.Join(out, "\n")
	}
}

// ---- the places Shukei writes ----

// tableInfo is one table of the test's databases.
type tableInfo struct {
	db, name, engine string
	rows             uint64
}

// scanTables reads every column whose type contains String of every table of every database
// named db or starting with db, every row, and scans it. attr names a row from its raw offset
// (when the table has kafka_partition and kafka_offset) for failure messages.
func scanTables(t *testing.T, s *stack, sc *scanner, attr func(p, o int64) string) []tableInfo {
	t.Helper()
	ctx := context.Background()
	rows, err := s.conn.Query(ctx, "SELECT database, name, engine FROM system.tables WHERE startsWith(database, ?) ORDER BY database, name", s.db)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	var tables []tableInfo
	for rows.Next() {
		var ti tableInfo
		if err := rows.Scan(&ti.db, &ti.name, &ti.engine); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, ti)
	}
	rows.Close()
	if len(tables) == 0 {
		t.Fatalf("harness: no tables in database %s or those starting with it", s.db)
	}
	for k := range tables {
		ti := &tables[k]
		switch ti.engine {
		case "View", "MaterializedView":
			continue // no storage of its own: what it shows is in the tables it reads or fills
		case "Kafka", "RabbitMQ", "NATS":
			t.Errorf("table %s.%s has engine %s: reading it would consume its queue, so it was not scanned", ti.db, ti.name, ti.engine)
			continue
		}
		cols, err := s.conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = ? AND table = ?", ti.db, ti.name)
		if err != nil {
			t.Fatalf("columns of %s.%s: %v", ti.db, ti.name, err)
		}
		var names, exprs []string
		hasPart, hasOff := false, false
		for cols.Next() {
			var name, typ string
			if err := cols.Scan(&name, &typ); err != nil {
				t.Fatal(err)
			}
			hasPart = hasPart || name == "kafka_partition"
			hasOff = hasOff || name == "kafka_offset"
			if !strings.Contains(typ, "String") {
				continue
			}
			expr := quoteIdent(name)
			if strings.HasPrefix(typ, "AggregateFunction(") {
				expr = "toString(" + expr + ")" // the serialised state, bytes and all
			}
			names = append(names, name)
			exprs = append(exprs, expr)
		}
		cols.Close()
		if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+quoteIdent(ti.db)+"."+quoteIdent(ti.name)).Scan(&ti.rows); err != nil {
			t.Errorf("count rows of %s.%s: %v", ti.db, ti.name, err)
			continue
		}
		if len(exprs) == 0 || ti.rows == 0 {
			continue
		}
		withOffsets := hasPart && hasOff
		sel := strings.Join(exprs, ", ")
		if withOffsets {
			sel += ", toInt64(kafka_partition), toInt64(kafka_offset)"
		}
		r, err := s.conn.Query(ctx, "SELECT "+sel+" FROM "+quoteIdent(ti.db)+"."+quoteIdent(ti.name))
		if err != nil {
			t.Errorf("read %s.%s: %v", ti.db, ti.name, err)
			continue
		}
		types := r.ColumnTypes()
		values := make([][]string, len(names))
		owners := make([][]int, len(names)) // value → row
		var offs [][2]int64
		row := 0
		for r.Next() {
			dest := make([]any, len(types))
			for i, ct := range types {
				dest[i] = reflect.New(ct.ScanType()).Interface()
			}
			if err := r.Scan(dest...); err != nil {
				t.Fatalf("scan %s.%s: %v", ti.db, ti.name, err)
			}
			for c := range names {
				var vs []string
				collectStrings(reflect.ValueOf(dest[c]), &vs)
				for _, v := range vs {
					values[c] = append(values[c], v)
					owners[c] = append(owners[c], row)
				}
			}
			if withOffsets {
				p := *(dest[len(names)].(*int64))
				o := *(dest[len(names)+1].(*int64))
				offs = append(offs, [2]int64{p, o})
			}
			row++
		}
		if err := r.Err(); err != nil {
			t.Errorf("read %s.%s: %v", ti.db, ti.name, err)
		}
		r.Close()
		for c, name := range names {
			c := c
			where := fmt.Sprintf("table %s.%s column %s", ti.db, ti.name, name)
			sc.scan("table", where, values[c], func(i int, _ string, _ int) string {
				rw := owners[c][i]
				if withOffsets {
					return fmt.Sprintf("row of raw offset %d/%d: %s", offs[rw][0], offs[rw][1], attr(offs[rw][0], offs[rw][1]))
				}
				return fmt.Sprintf("row %d", rw)
			})
		}
	}
	return tables
}

// collectStrings gathers every string inside a scanned value (pointers, slices, arrays,
// maps, structs), byte slices and arrays as strings.
func collectStrings(v reflect.Value, out *[]string) {
	switch v.Kind() {
	case reflect.String:
		*out = append(*out, v.String())
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			collectStrings(v.Elem(), out)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, v.Len())
			for i := range b {
				b[i] = byte(v.Index(i).Uint())
			}
			*out = append(*out, string(b))
			return
		}
		for i := range v.Len() {
			collectStrings(v.Index(i), out)
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			collectStrings(it.Key(), out)
			collectStrings(it.Value(), out)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				collectStrings(v.Field(i), out)
			}
		}
	}
}

// scanDLQ scans every DLQ record: key, value, every header key and value. Header values are
// grouped by header key (a key that itself holds a needle is named by its position).
func scanDLQ(sc *scanner, topic string, dlq []kafka.Message) {
	type loc struct {
		vs, refs []string
	}
	locs := map[string]*loc{}
	var order []string
	add := func(where, v, ref string) {
		l := locs[where]
		if l == nil {
			l = &loc{}
			locs[where] = l
			order = append(order, where)
		}
		l.vs = append(l.vs, v)
		l.refs = append(l.refs, ref)
	}
	safeKey := map[string]string{}
	for _, m := range dlq {
		ref := fmt.Sprintf("record %d/%d", m.Partition, m.Offset)
		add("DLQ "+topic+" record key", string(m.Key), ref)
		add("DLQ "+topic+" record value", string(m.Value), ref)
		for j, h := range m.Headers {
			add("DLQ "+topic+" header key", h.Key, fmt.Sprintf("%s header #%d", ref, j))
			name, ok := safeKey[h.Key]
			if !ok {
				name = fmt.Sprintf("%q", h.Key)
				if sc.redactor()(h.Key) != h.Key || len(h.Key) > 64 {
					name = fmt.Sprintf("#%d", j)
				}
				safeKey[h.Key] = name
			}
			add("DLQ "+topic+" header "+name+" value", string(h.Value), fmt.Sprintf("%s header #%d", ref, j))
		}
	}
	for _, w := range order {
		l := locs[w]
		sc.scan("DLQ", w, l.vs, func(i int, _ string, _ int) string { return l.refs[i] })
	}
}

// scanLogs scans everything every role and CLI run printed, line by line (a raw line break
// inside a value cannot be told from the end of a log line; its escaped forms are found).
func scanLogs(s *stack, sc *scanner) {
	s.mu.Lock()
	outs := append([]*output(nil), s.outputs...)
	s.mu.Unlock()
	for _, o := range outs {
		ls := strings.Split(o.out.String(), "\n")
		sc.scan("log", "log of "+o.name, ls, func(i int, _ string, _ int) string {
			return fmt.Sprintf("line %d", i+1)
		})
	}
}

// tableSummary is a one-line count of what the tables hold.
func tableSummary(tables []tableInfo) string {
	var parts []string
	for _, ti := range tables {
		if ti.rows > 0 {
			parts = append(parts, fmt.Sprintf("%s.%s=%d", ti.db, ti.name, ti.rows))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// ---- Aho-Corasick over bytes, dense transitions ----

type acMachine struct {
	next   [][256]int32
	fail   []int32
	out    [][]int // pattern indexes ending at a state (including by fail links)
	lens   []int
	owners [][2]int
}

func buildAC(pats []string, owners [][2]int) *acMachine {
	m := &acMachine{next: make([][256]int32, 1), fail: []int32{0}, out: [][]int{nil}, owners: owners}
	for i := range m.next[0] {
		m.next[0][i] = -1
	}
	for pi, p := range pats {
		m.lens = append(m.lens, len(p))
		st := int32(0)
		for k := 0; k < len(p); k++ {
			c := p[k]
			if m.next[st][c] < 0 {
				var row [256]int32
				for i := range row {
					row[i] = -1
				}
				m.next = append(m.next, row)
				m.fail = append(m.fail, 0)
				m.out = append(m.out, nil)
				m.next[st][c] = int32(len(m.next) - 1)
			}
			st = m.next[st][c]
		}
		m.out[st] = append(m.out[st], pi)
	}
	// Breadth first: fail links and the complete transition function.
	var queue []int32
	for c := range 256 {
		if s := m.next[0][c]; s >= 0 {
			m.fail[s] = 0
			queue = append(queue, s)
		} else {
			m.next[0][c] = 0
		}
	}
	for len(queue) > 0 {
		st := queue[0]
		queue = queue[1:]
		m.out[st] = append(m.out[st], m.out[m.fail[st]]...)
		for c := range 256 {
			s := m.next[st][c]
			if s >= 0 {
				m.fail[s] = m.next[m.fail[st]][c]
				queue = append(queue, s)
			} else {
				m.next[st][c] = m.next[m.fail[st]][c]
			}
		}
	}
	return m
}

// match calls hit with the end position (exclusive) and owner of every occurrence.
func (m *acMachine) match(text string, hit func(end int, owner [2]int)) {
	st := int32(0)
	for i := 0; i < len(text); i++ {
		st = m.next[st][text[i]]
		for _, pi := range m.out[st] {
			hit(i+1, m.owners[pi])
		}
	}
}
