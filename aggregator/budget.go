package aggregator

import (
	"time"

	"github.com/shukei/shukei/anonymizer/ledger"
)

// Year is the span of the rolling budget: no 365 days of window starts may hold releases that
// spend more than the year's budget, whichever 365 days one looks at.
const Year = 365 * 24 * time.Hour

// budgets are external_aggregate's two allowances: per calendar month, and per rolling year.
type budgets struct {
	month, year ledger.Budget
}

// spend is one charge: a release of the window starting at start.
type spend struct {
	start time.Time
	cost  ledger.Budget
}

// book keeps the charges in the order they were accepted and answers whether one more fits.
type book struct {
	b       budgets
	charges []spend
}

// monthOf is a window's calendar month, the monthly budget's period.
func monthOf(t time.Time) string { return t.UTC().Format("2006-01") }

// spentIn sums what the charges spend in a month.
func (k *book) spentIn(month string) ledger.Budget {
	var s ledger.Budget
	for _, c := range k.charges {
		if monthOf(c.start) == month {
			s.Epsilon += c.cost.Epsilon
			s.Delta += c.cost.Delta
		}
	}
	return s
}

// fits reports whether a release of the window starting at start, costing cost, stays within
// both budgets: its month's, and every 365 days that contain it. The 365 days that spend the
// most around it start at one of the charges (or at it), so those are the spans to check.
func (k *book) fits(start time.Time, cost ledger.Budget) (bool, string) {
	if overdraws(k.spentIn(monthOf(start)), cost, k.b.month) {
		return false, "month"
	}
	anchors := []time.Time{start}
	for _, c := range k.charges {
		if !c.start.After(start) && start.Sub(c.start) < Year {
			anchors = append(anchors, c.start)
		}
	}
	for _, a := range anchors {
		var s ledger.Budget
		for _, c := range k.charges {
			if !c.start.Before(a) && c.start.Sub(a) < Year {
				s.Epsilon += c.cost.Epsilon
				s.Delta += c.cost.Delta
			}
		}
		if overdraws(s, cost, k.b.year) {
			return false, "year"
		}
	}
	return true, ""
}

// charge books a release.
func (k *book) charge(start time.Time, cost ledger.Budget) {
	k.charges = append(k.charges, spend{start: start, cost: cost})
}
