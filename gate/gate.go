// Package gate is the k-threshold's one home (promise 9): the aggregate reports of
// service_improvement and marketing, and the dashboards, read only atoms — one segment × one
// ISO week — that hold at least k distinct tenants each, and an atom never changes once it can
// be read.
//
// An atom is computed once per week, when the week is sealed: some time after it ends
// (aggregator.seal_after), from the purpose's per-tenant daily mart, each tenant in exactly
// one segment of the week (its latest edition, and for marketing its latest contract status),
// and only atoms of at least k tenants are kept. The seal is published through the aggregator's
// release log, so of two sealers — a paused one and the one that took over — only the first
// seal of a week is ever materialised (aggregator/seal.go); its atoms are written to the
// purpose's gated database (<db>_<purpose>_gated), which holds no tenant id and which the
// dashboards' ClickHouse user may read. Reports select whole atoms only, so the difference of
// two answers is a sum of whole atoms too.
package gate

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/policy"
)

// Purposes are the purposes whose reports are built from atoms.
var Purposes = []policy.Purpose{policy.ServiceImprovement, policy.Marketing}

// Gated reports whether purpose's aggregate reports read atoms.
func Gated(purpose string) bool {
	return slices.ContainsFunc(Purposes, func(p policy.Purpose) bool { return p.String() == purpose })
}

// DB is the gated database of purpose under the internal database prefix.
func DB(prefix, purpose string) string { return prefix + "_" + purpose + "_gated" }

// All is the feature of an atom of all activity (marketing: active tenants and their events).
const All = "*"

// Atom is one segment of one ISO week and what its tenants did.
type Atom struct {
	Week     time.Time `json:"week"` // Monday 00:00 UTC
	Category string    `json:"category"`
	Feature  string    `json:"feature"`          // feature or application id; All for all activity
	Status   string    `json:"status,omitempty"` // marketing: the tenants' contract status
	Edition  string    `json:"edition"`
	Tenants  uint64    `json:"tenants"` // distinct tenants, at least k
	Users    uint64    `json:"users"`   // the sum of each tenant's distinct users
	Uses     uint64    `json:"uses"`    // uses (All: events)
}

// Monday is the first instant of t's ISO week.
func Monday(t time.Time) time.Time {
	t = t.UTC().Truncate(24 * time.Hour)
	return t.AddDate(0, 0, -((int(t.Weekday()) + 6) % 7))
}

// atLeastK is the k-threshold in SQL, the one condition on the tenants of an atom: Compute
// keeps (HAVING) and Read returns (WHERE) only atoms that meet it; its argument is kArg(k).
const atLeastK = "tenants >= ?"

// kArg is the argument of atLeastK for k: never below policy.MinK, whatever k a caller gives.
func kArg(k int) uint64 { return uint64(max(k, policy.MinK)) }

// Enough reports whether an atom of tenants distinct tenants may be kept under k: the Go form
// of atLeastK, for atoms on their way to the gated database.
func Enough(tenants uint64, k int) bool { return tenants >= kArg(k) }

// Compute returns purpose's atoms of the week starting on monday with at least k tenants,
// read from the purpose's daily mart under prefix (on a cluster, every shard's, through its
// Distributed table).
func Compute(ctx context.Context, conn driver.Conn, prefix, cluster, purpose string, monday time.Time, k int) ([]Atom, error) {
	if k < policy.MinK {
		return nil, fmt.Errorf("gate: k=%d; an atom needs at least %d tenants", k, policy.MinK)
	}
	from, to := monday.UTC().Format(time.DateOnly), monday.AddDate(0, 0, 7).UTC().Format(time.DateOnly)
	// Each tenant in one segment of the week: its latest edition (and for marketing its latest
	// contract status); per feature (or application), and over all its activity (feature All:
	// its events).
	var table, status string
	switch purpose {
	case policy.ServiceImprovement.String():
		table, status = "feature_daily", "''"
	case policy.Marketing.String():
		table, status = "activity_daily", "argMax(contract_status, day)"
	default:
		return nil, fmt.Errorf("gate: purpose %q has no atoms", purpose)
	}
	t := databases.Across(cluster, prefix+"_"+purpose+"."+table)
	week := "day >= toDate(?) AND day < toDate(?)"
	q := `
SELECT category, feature, status, edition, count() AS tenants, sum(u) AS users, sum(n) AS uses
FROM (
    SELECT tenant_id, category, feature, uniqMerge(users) AS u, sumMerge(uses) AS n
    FROM ` + t + `
    WHERE ` + week + ` AND category IN ('feature_use', 'app_access')
    GROUP BY tenant_id, category, feature
    UNION ALL
    SELECT tenant_id, '' AS category, '` + All + `' AS feature, uniqMerge(users) AS u, sumMerge(events) AS n
    FROM ` + t + `
    WHERE ` + week + `
    GROUP BY tenant_id
) ANY INNER JOIN (
    SELECT tenant_id, ` + status + ` AS status, argMax(edition, day) AS edition
    FROM ` + t + `
    WHERE ` + week + `
    GROUP BY tenant_id
) USING tenant_id
GROUP BY category, feature, status, edition
HAVING ` + atLeastK
	args := []any{from, to, from, to, from, to, kArg(k)}
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("gate: atoms of %s, week %s: %w", purpose, from, err)
	}
	defer rows.Close()
	var out []Atom
	for rows.Next() {
		a := Atom{Week: monday.UTC()}
		if err := rows.Scan(&a.Category, &a.Feature, &a.Status, &a.Edition, &a.Tenants, &a.Users, &a.Uses); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sortAtoms(out)
	return out, nil
}

func sortAtoms(as []Atom) {
	slices.SortFunc(as, func(a, b Atom) int {
		if c := a.Week.Compare(b.Week); c != 0 {
			return c
		}
		for _, p := range [][2]string{{a.Category, b.Category}, {a.Feature, b.Feature}, {a.Status, b.Status}, {a.Edition, b.Edition}} {
			if p[0] != p[1] {
				if p[0] < p[1] {
					return -1
				}
				return 1
			}
		}
		return 0
	})
}

// Before is how many weeks before its first week with data a purpose's sealing starts: those
// weeks are sealed empty (nothing happened in them), so a period of up to Before+1 weeks
// ending with any sealed week is whole.
const Before = 12

// FirstWeek returns the Monday of the earliest week purpose's daily mart holds, and false
// when it holds nothing (on a cluster, on any shard).
func FirstWeek(ctx context.Context, conn driver.Conn, prefix, cluster, purpose string) (time.Time, bool, error) {
	table := map[string]string{policy.ServiceImprovement.String(): "feature_daily", policy.Marketing.String(): "activity_daily"}[purpose]
	if table == "" {
		return time.Time{}, false, fmt.Errorf("gate: purpose %q has no atoms", purpose)
	}
	var n uint64
	var first time.Time
	if err := conn.QueryRow(ctx, "SELECT count(), min(day) FROM "+databases.Across(cluster, prefix+"_"+purpose+"."+table)).Scan(&n, &first); err != nil {
		return time.Time{}, false, fmt.Errorf("gate: first week of %s: %w", purpose, err)
	}
	if n == 0 {
		return time.Time{}, false, nil
	}
	return Monday(first), true, nil
}

// Seal is one week's atoms of one purpose as the release log publishes them.
type Seal struct {
	Purpose string    `json:"purpose"`
	Week    time.Time `json:"week"`
	K       int       `json:"k"`
	ID      string    `json:"seal_id"`
	At      time.Time `json:"sealed_at"`
	Atoms   []Atom    `json:"atoms"`
}

// Sealed returns the weeks of purpose already sealed in its gated database.
func Sealed(ctx context.Context, conn driver.Conn, prefix, purpose string) (map[time.Time]bool, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT week FROM "+DB(prefix, purpose)+".seals")
	if err != nil {
		return nil, fmt.Errorf("gate: sealed weeks of %s: %w", purpose, err)
	}
	defer rows.Close()
	out := map[time.Time]bool{}
	for rows.Next() {
		var w time.Time
		if err := rows.Scan(&w); err != nil {
			return nil, err
		}
		out[w.UTC()] = true
	}
	return out, rows.Err()
}

// Materialise writes a published seal to its gated database: its atoms, then the seal row
// that makes the week readable. Writing the same seal twice writes the same rows, which the
// tables collapse (ReplacingMergeTree, read with FINAL).
func Materialise(ctx context.Context, conn driver.Conn, prefix string, s Seal) error {
	db := DB(prefix, s.Purpose)
	if len(s.Atoms) > 0 {
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".atoms (week, category, feature, status, edition, tenants, users, uses, k, seal_id)")
		if err != nil {
			return err
		}
		for _, a := range s.Atoms {
			if !Enough(a.Tenants, s.K) {
				return fmt.Errorf("gate: seal %s holds an atom of %d tenants, below k=%d", s.ID, a.Tenants, s.K)
			}
			if err := b.Append(s.Week, a.Category, a.Feature, a.Status, a.Edition, a.Tenants, a.Users, a.Uses, uint16(s.K), s.ID); err != nil {
				return err
			}
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("gate: write the atoms of %s %s: %w", s.Purpose, s.Week.Format(time.DateOnly), err)
		}
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".seals (week, seal_id, sealed_at, k, atoms)")
	if err != nil {
		return err
	}
	if err := b.Append(s.Week, s.ID, s.At.UTC().Truncate(time.Second), uint16(s.K), uint32(len(s.Atoms))); err != nil {
		return err
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("gate: write the seal of %s %s: %w", s.Purpose, s.Week.Format(time.DateOnly), err)
	}
	return nil
}

// Atoms are the sealed atoms a report reads, with the weeks they cover.
type Atoms struct {
	From, To time.Time // Mondays: the weeks read, To included
	List     []Atom
}

// ErrNotSealed means a report asked for a week that is not sealed.
type ErrNotSealed struct {
	Week, Latest time.Time // Latest: the latest sealed week, zero if none
}

func (e *ErrNotSealed) Error() string {
	msg := fmt.Sprintf("the week of %s is not sealed: aggregate reports read only weeks sealed after they end (aggregator.seal_after)",
		e.Week.Format(time.DateOnly))
	if e.Latest.IsZero() {
		return msg + "; no week is sealed yet"
	}
	return msg + "; the latest sealed week is " + e.Latest.Format(time.DateOnly)
}

// Read returns the atoms of the weeks from..to (Mondays, to included) of the gated database
// db with at least k tenants — the one place a report's k is applied. Every week asked for
// must be sealed (a week is never read before its seal, so what a report shows of a week never
// changes); otherwise *ErrNotSealed.
func Read(ctx context.Context, conn driver.Conn, db string, from, to time.Time, k int) (Atoms, error) {
	from, to = Monday(from), Monday(to)
	rows, err := conn.Query(ctx, "SELECT DISTINCT week FROM "+db+".seals")
	if err != nil {
		return Atoms{}, fmt.Errorf("gate: sealed weeks: %w", err)
	}
	sealed := map[time.Time]bool{}
	var latest time.Time
	for rows.Next() {
		var w time.Time
		if err := rows.Scan(&w); err != nil {
			rows.Close()
			return Atoms{}, err
		}
		sealed[w.UTC()] = true
		if w.After(latest) {
			latest = w.UTC()
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Atoms{}, err
	}
	for w := from; !w.After(to); w = w.AddDate(0, 0, 7) {
		if !sealed[w] {
			return Atoms{}, &ErrNotSealed{Week: w, Latest: latest}
		}
	}
	rows, err = conn.Query(ctx, `
SELECT week, category, feature, status, edition, tenants, users, uses
FROM `+db+`.atoms FINAL
WHERE week >= toDate(?) AND week <= toDate(?) AND `+atLeastK,
		from.Format(time.DateOnly), to.Format(time.DateOnly), kArg(k))
	if err != nil {
		return Atoms{}, fmt.Errorf("gate: read atoms: %w", err)
	}
	defer rows.Close()
	out := Atoms{From: from, To: to}
	for rows.Next() {
		var a Atom
		if err := rows.Scan(&a.Week, &a.Category, &a.Feature, &a.Status, &a.Edition, &a.Tenants, &a.Users, &a.Uses); err != nil {
			return Atoms{}, err
		}
		a.Week = a.Week.UTC()
		out.List = append(out.List, a)
	}
	if err := rows.Err(); err != nil {
		return Atoms{}, err
	}
	sortAtoms(out.List)
	return out, nil
}

// Weeks is the number of weeks the atoms cover.
func (a Atoms) Weeks() int { return int(a.To.Sub(a.From).Hours()/(24*7)) + 1 }
