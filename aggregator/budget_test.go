package aggregator

import (
	"testing"
	"time"

	"github.com/shukei/shukei/anonymizer/ledger"
)

func TestBudgetMonthAndRollingYear(t *testing.T) {
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	one := ledger.Budget{Epsilon: 1, Delta: 1e-9}
	k := &book{b: budgets{month: ledger.Budget{Epsilon: 3, Delta: 1e-6}, year: ledger.Budget{Epsilon: 10, Delta: 1e-6}}}
	f := func(name string, start time.Time, want bool, why string) {
		t.Helper()
		ok, got := k.fits(start, one)
		if ok != want || got != why {
			t.Errorf("%s: fits=%v (%q), want %v (%q)", name, ok, got, want, why)
		}
		if ok {
			k.charge(start, one)
		}
	}
	// Three a month fit, a fourth does not; ten a rolling year fit.
	f("jan 1", day(2026, 1, 1), true, "")
	f("jan 2", day(2026, 1, 2), true, "")
	f("jan 3", day(2026, 1, 3), true, "")
	f("jan 4 over the month", day(2026, 1, 4), false, "month")
	for _, m := range []time.Month{2, 3, 4, 5, 6, 7, 8} {
		f("one in "+m.String(), day(2026, m, 1), true, "")
	}
	// Ten spent in 2026-01-01 … 2026-08-01: nothing fits until a year after January's.
	f("december, within a year of all ten", day(2026, 12, 1), false, "year")
	f("2027-01-02: two of January's are a year old", day(2027, 1, 2), true, "")
	// A window released late (its start before charges already made) counts against the
	// years that contain it, including those reaching forward.
	k2 := &book{b: budgets{month: ledger.Budget{Epsilon: 100, Delta: 1}, year: ledger.Budget{Epsilon: 2, Delta: 1}}}
	k2.charge(day(2026, 6, 1), one)
	k2.charge(day(2026, 12, 1), one)
	if ok, why := k2.fits(day(2026, 3, 1), one); ok || why != "year" {
		t.Errorf("a late window between two charges 6 months apart fits=%v %q, want refused for the year", ok, why)
	}
	if ok, _ := k2.fits(day(2025, 5, 1), one); !ok {
		t.Error("a window more than a year before both charges is refused")
	}
}
