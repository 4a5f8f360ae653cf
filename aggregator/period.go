package aggregator

import (
	"fmt"
	"time"

	"github.com/shukei/shukei/config"
)

// Period is a span a release covers: the base window (aggregator.window), a week or a month.
//
// The base window is the unit of accumulation and of replay: a partition closes base windows,
// storing for each its partials (the base window's own release) and each tenant's raw
// material (TenantRow). A weekly or monthly release reads the tenant rows of every base
// window in the period, merges them per tenant and bounds each tenant over the whole period
// — at most L0 cells, at most LInf in each — so that a tenant's contribution to the period's
// release is bounded exactly as in a base window's, however many days it was active. That is
// why a month costs one release's ε, not one per day, and why its noise does not grow with the
// number of days (docs/DESIGN.md §4).
type Period string

const (
	PeriodWindow Period = "window"
	PeriodWeek   Period = "week"  // ISO week: Monday 00:00 UTC to the next Monday
	PeriodMonth  Period = "month" // calendar month, UTC
)

// Of returns the period's span containing t; base is the base window's size.
func (p Period) Of(t time.Time, base time.Duration) Window {
	t = t.UTC()
	switch p {
	case PeriodWeek:
		d := t.Truncate(24 * time.Hour)
		s := d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
		return Window{Start: s, End: s.AddDate(0, 0, 7)}
	case PeriodMonth:
		s := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return Window{Start: s, End: s.AddDate(0, 1, 0)}
	}
	return WindowOf(t, base)
}

// Periods are the spans a deployment releases, each with its own plan (the same metrics and
// bounds, its own ε per metric release).
type releaseKind struct {
	period Period
	plan   *Plan
	hash   string
}

// Kinds returns the release kinds the configuration enables, in the order the release step
// takes them: base windows, weeks, months (each ends no later than the next kind's).
func (p *Plan) kinds(windowEps, weekEps, monthEps float64) ([]releaseKind, error) {
	var out []releaseKind
	for _, k := range []struct {
		p   Period
		eps float64
	}{{PeriodWindow, windowEps}, {PeriodWeek, weekEps}, {PeriodMonth, monthEps}} {
		if k.eps == 0 {
			continue
		}
		q, err := p.WithEpsilon(k.eps)
		if err != nil {
			return nil, fmt.Errorf("aggregator: the %s release: %w", k.p, err)
		}
		out = append(out, releaseKind{period: k.p, plan: q, hash: q.Hash()})
	}
	return out, nil
}

// WithEpsilon returns the plan with ε per metric release eps (the same metrics, bounds and
// catalogues), validated.
func (p *Plan) WithEpsilon(eps float64) (*Plan, error) {
	q := *p
	q.Epsilon = eps
	for _, m := range q.Metrics {
		if err := q.params(m).Validate(); err != nil {
			return nil, err
		}
	}
	return &q, nil
}

// PeriodsOf returns the periods beyond the base window that c releases (weeks, months).
func PeriodsOf(c config.Aggregator) []Period {
	var out []Period
	if c.WeekEpsilon > 0 {
		out = append(out, PeriodWeek)
	}
	if c.MonthEpsilon > 0 {
		out = append(out, PeriodMonth)
	}
	return out
}
