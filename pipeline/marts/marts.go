// Package marts knows the purpose marts as the event store's materialised views define them:
// which tables the views fill, each view's SELECT, the column a mart's rows are dated by, and
// how to read a mart, or what its view would make of some events, as one comparable value per
// row key. Re-deriving the marts (retention's rebuild-marts) and repairing them after an insert
// cut short (the processor, at resume) both start from here, so neither keeps its own copy of
// the views' definitions: a mart added by a migration is covered by both at once.
package marts

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Mart is one table a materialised view over the event store fills.
type Mart struct {
	Table  string // database.name
	View   string // database.name of its view
	Select string // the view's SELECT, reading FROM <db>.events
	Time   string // the column its rows are dated by: day, week or occurred_at
	// Keys are the columns that identify a row: the sorting key of an aggregating mart (a
	// plain column outside it keeps one of its merged rows' values, so it is not compared),
	// every column of a plain one (a row is its own key; equal rows are counted).
	Keys []string
	// Merges are the aggregate columns and their -Merge functions (aggregating marts only).
	Merges []Merge
	// Columns are all its columns, in table order (what an INSERT names).
	Columns []string
	db      string
}

// Merge is an aggregate column and the function that finalises its states.
type Merge struct{ Column, Func string }

// Aggregating says whether the mart holds aggregate states (AggregatingMergeTree).
func (m Mart) Aggregating() bool { return len(m.Merges) > 0 }

var (
	viewTarget = regexp.MustCompile(`(?s)^CREATE MATERIALIZED VIEW (\S+) TO ([a-z0-9_]+\.[a-z0-9_]+)\b.*?\sAS (SELECT\s.*)$`)
	aggType    = regexp.MustCompile(`^AggregateFunction\(([A-Za-z0-9_]+)[,)]`)
)

func fromEvents(db string) *regexp.Regexp {
	return regexp.MustCompile(`\bFROM\s+` + regexp.QuoteMeta(db) + `\.events\b`)
}

// List returns the marts the views over db.events fill, as conn's server defines them, in the
// order of their views' names.
func List(ctx context.Context, conn driver.Conn, db string) ([]Mart, error) {
	rows, err := conn.Query(ctx, "SELECT concat(database, '.', name) FROM system.tables WHERE engine = 'MaterializedView' AND (database = ? OR startsWith(database, ?)) ORDER BY database, name", db, db+"_")
	if err != nil {
		return nil, fmt.Errorf("the views of %s: %w", db, err)
	}
	var views []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, err
		}
		views = append(views, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	over := fromEvents(db)
	var out []Mart
	for _, v := range views {
		var create string
		if err := conn.QueryRow(ctx, "SHOW CREATE TABLE "+v).Scan(&create); err != nil {
			return nil, fmt.Errorf("the definition of %s: %w", v, err)
		}
		m := viewTarget.FindStringSubmatch(strings.TrimSpace(create))
		if m == nil || !over.MatchString(m[3]) {
			continue // not a view of the event store
		}
		mart := Mart{Table: m[2], View: v, Select: m[3], db: db}
		if err := mart.describe(ctx, conn); err != nil {
			return nil, err
		}
		out = append(out, mart)
	}
	return out, nil
}

// describe reads the mart's engine and columns.
func (m *Mart) describe(ctx context.Context, conn driver.Conn) error {
	database, name, _ := strings.Cut(m.Table, ".")
	var engine string
	if err := conn.QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = ?", database, name).Scan(&engine); err != nil {
		return fmt.Errorf("the engine of %s: %w", m.Table, err)
	}
	aggregating := strings.Contains(engine, "AggregatingMergeTree")
	if !aggregating && strings.TrimPrefix(engine, "Replicated") != "MergeTree" {
		return fmt.Errorf("%s is a %s: only MergeTree and AggregatingMergeTree marts can be compared with the event store", m.Table, engine)
	}
	rows, err := conn.Query(ctx, "SELECT name, type, is_in_sorting_key FROM system.columns WHERE database = ? AND table = ?", database, name)
	if err != nil {
		return fmt.Errorf("the columns of %s: %w", m.Table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var col, typ string
		var key uint8
		if err := rows.Scan(&col, &typ, &key); err != nil {
			return err
		}
		m.Columns = append(m.Columns, col)
		switch a := aggType.FindStringSubmatch(typ); {
		case a != nil:
			m.Merges = append(m.Merges, Merge{Column: col, Func: a[1] + "Merge"})
		case !aggregating || key == 1:
			m.Keys = append(m.Keys, col)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, c := range []string{"day", "week", "occurred_at"} {
		if slices.Contains(m.Columns, c) {
			m.Time = c
			break
		}
	}
	if m.Time == "" {
		return fmt.Errorf("%s has no day, week or occurred_at column", m.Table)
	}
	if aggregating != (len(m.Merges) > 0) {
		return fmt.Errorf("%s is a %s with %d aggregate columns", m.Table, engine, len(m.Merges))
	}
	return nil
}

// Day renders t's date as a ClickHouse Date literal.
func Day(t time.Time) string { return "toDate('" + t.Format(time.DateOnly) + "')" }

// Dated is the condition on the mart's rows of the dates [from, to).
func (m Mart) Dated(from, to time.Time) string {
	col := m.Time
	if col == "occurred_at" {
		col = "toDate(occurred_at)"
	}
	return col + " >= " + Day(from) + " AND " + col + " < " + Day(to)
}

// EventsDated is the condition on the event store's rows that occurred in [from, to).
func EventsDated(from, to time.Time) string {
	return "toDate(occurred_at) >= " + Day(from) + " AND toDate(occurred_at) < " + Day(to)
}

// Over is the view's SELECT reading the events of db.events that where selects.
func (m Mart) Over(where string) string {
	return fromEvents(m.db).ReplaceAllLiteralString(m.Select, "FROM (SELECT * FROM "+m.db+".events WHERE "+where+")")
}

// hashOf is one UInt64 of the values of exprs, separated so that no two tuples of strings
// read alike.
func hashOf(exprs []string) string {
	parts := make([]string, len(exprs))
	for i, e := range exprs {
		parts[i] = "toString(" + e + ")"
	}
	return "cityHash64(concat('', " + strings.Join(parts, ", '\\x1f', ") + "))"
}

// KeyHash is the expression, over the mart's columns, that identifies a row: what Values
// reports as a row's key.
func (m Mart) KeyHash() string { return hashOf(m.Keys) }

// Values is a query of one row per row key of the rows source holds (the mart, or its view's
// SELECT over some events: the same columns): the key's hash and a hash of its finalised
// aggregates (aggregating marts) or how many rows have it (plain ones).
func (m Mart) Values(source string) string {
	if !m.Aggregating() {
		return "SELECT " + m.KeyHash() + " AS key, cityHash64(count()) AS value FROM (" + source + ") GROUP BY key"
	}
	vals := make([]string, len(m.Merges))
	for i, g := range m.Merges {
		vals[i] = g.Func + "(" + g.Column + ")"
		if arrayValued(g.Func) {
			// The order of an array a state finalises to follows the state's hash table,
			// which depends on how the states were merged: compared as a multiset.
			vals[i] = "arraySort(" + vals[i] + ")"
		}
	}
	return "SELECT " + m.KeyHash() + " AS key, " + hashOf(vals) + " AS value FROM (" + source + ") GROUP BY " + strings.Join(m.Keys, ", ")
}

// Show is a query of one String describing row key key of the rows source holds: the key's
// columns and its finalised aggregates (aggregating marts) or how many rows have it (plain
// ones), for a log line an operator can act on; never a user's pseudonym. Empty when source
// holds no such row.
func (m Mart) Show(source string, key uint64) string {
	cols := make([]string, 0, len(m.Keys)+len(m.Merges))
	for _, k := range m.Keys {
		if k == "user_pseudonym" {
			// The support trace's rows name a user: a log line is no place for a pseudonym
			// (the row's event_id, tenant and time already identify it).
			continue
		}
		cols = append(cols, "'"+k+"=', toString("+k+")")
	}
	if !m.Aggregating() {
		cols = append(cols, "'rows=', toString(count())")
	}
	for _, g := range m.Merges {
		v := g.Func + "(" + g.Column + ")"
		if arrayValued(g.Func) {
			v = "arraySort(" + v + ")"
		}
		cols = append(cols, "'"+g.Column+"=', toString("+v+")")
	}
	return "SELECT concat(" + strings.Join(cols, ", ' ', ") + ") FROM (" + source + ") WHERE " + m.KeyHash() + " = " + fmt.Sprint(key) +
		" GROUP BY " + strings.Join(m.Keys, ", ")
}

// arrayValued says whether the aggregate function merge finalises to an array.
func arrayValued(merge string) bool {
	for _, p := range []string{"groupArray", "groupUniqArray", "topK"} {
		if strings.HasPrefix(merge, p) {
			return true
		}
	}
	return false
}

// Fingerprint is a query of one UInt64 that changes with any row key's value in Values(source).
func (m Mart) Fingerprint(source string) string {
	return "SELECT sum(cityHash64(key, value)) FROM (" + m.Values(source) + ")"
}

// Rows reads the mart's rows that where selects.
func (m Mart) Rows(where string) string { return "SELECT * FROM " + m.Table + " WHERE " + where }

// ReadValues runs Values(source) on conn: row key → value.
func ReadValues(ctx context.Context, conn driver.Conn, query string, args ...any) (map[uint64]uint64, error) {
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[uint64]uint64{}
	for rows.Next() {
		var k, v uint64
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, rows.Err()
}

// Differ are the row keys whose values differ between have and want (ReadValues of a mart and
// of its view), a key missing on one side included, in ascending order.
func Differ(have, want map[uint64]uint64) []uint64 {
	var out []uint64
	for k, v := range want {
		if h, ok := have[k]; !ok || h != v {
			out = append(out, k)
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// ShowKey runs Show(source, key) on conn: "(none)" when source holds no such row, the error in
// parentheses when the query fails (it describes, for a log line; it never decides).
func ShowKey(ctx context.Context, conn driver.Conn, m Mart, source string, key uint64) string {
	var out string
	if err := conn.QueryRow(ctx, m.Show(source, key)).Scan(&out); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return "(none)"
		}
		return "(" + err.Error() + ")"
	}
	return out
}
