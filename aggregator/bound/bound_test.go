package bound

import (
	"fmt"
	"math"
	"testing"
)

func TestOneTenantCannotMoveACellByMoreThanLinf(t *testing.T) {
	b, err := New(3, 5, SeedFrom(1))
	if err != nil {
		t.Fatal(err)
	}
	// One tenant sends a million events to one cell, and one event to each of 50 others.
	for range 1_000_000 {
		b.Add("flood", "feature|a", 1)
	}
	for i := range 50 {
		b.Add("flood", Cell(fmt.Sprintf("feature|x%02d", i)), 1)
	}
	b.Add("quiet", "feature|a", 2)
	got := b.Bounded()
	cells := 0
	for c, cs := range got {
		for _, x := range cs {
			if x.Value < 1 || x.Value > 5 {
				t.Errorf("cell %s: tenant %s contributes %d, outside [1, Linf=5]", c, x.Tenant, x.Value)
			}
			if x.Tenant == "flood" {
				cells++
			}
		}
	}
	if cells != 3 {
		t.Errorf("the flooding tenant touches %d cells, want L0=3", cells)
	}
	for _, x := range got["feature|a"] {
		if x.Tenant == "quiet" && x.Value != 2 {
			t.Errorf("a tenant within the bounds was changed: %d, want 2", x.Value)
		}
	}
}

func TestTotalsSaturate(t *testing.T) {
	b, _ := New(1, 10, SeedFrom(2))
	b.Add("t", "c", math.MaxInt64)
	b.Add("t", "c", math.MaxInt64)
	b.Add("t", "c", -5) // ignored
	if v := b.Bounded()["c"][0].Value; v != 10 {
		t.Errorf("value %d, want the clamp 10", v)
	}
}

func TestBoundsMustBePositive(t *testing.T) {
	for _, c := range [][2]int64{{0, 1}, {1, 0}, {-1, 5}} {
		if _, err := New(c[0], c[1], nil); err == nil {
			t.Errorf("New(%d, %d) accepted", c[0], c[1])
		}
	}
}

// Over-limit tenants keep a uniform sample of their cells. 20 cells, L0 = 5: each cell is kept
// with probability 1/4. Over n = 40,000 trials the count per cell is Binomial(n, 1/4); with 20
// cells, a per-cell bound of 5.5 standard deviations keeps the whole test's false-rejection
// probability under 1e-6, while a sampler biased towards the first cells fails it at once.
func TestSamplingIsUniform(t *testing.T) {
	const cellsN, l0, n = 20, 5, 40_000
	kept := make([]int, cellsN)
	rng := SeedFrom(3)
	for range n {
		b, _ := New(l0, 1, rng)
		for i := range cellsN {
			b.Add("t", Cell(fmt.Sprintf("c%02d", i)), 1)
		}
		for c := range b.Bounded() {
			var i int
			fmt.Sscanf(string(c), "c%02d", &i)
			kept[i]++
		}
	}
	p := float64(l0) / cellsN
	mean, sd := n*p, math.Sqrt(n*p*(1-p))
	for i, k := range kept {
		if math.Abs(float64(k)-mean) > 5.5*sd {
			t.Errorf("cell %d kept %d times, expected %.0f ± %.0f", i, k, mean, 5.5*sd)
		}
	}
}

func TestDeterministicForASeed(t *testing.T) {
	run := func() map[Cell][]Contribution {
		b, _ := New(2, 3, SeedFrom(9))
		for tn := range 30 {
			for c := range 7 {
				b.Add(fmt.Sprint("t", tn), Cell(fmt.Sprint("c", c)), int64(tn+c))
			}
		}
		return b.Bounded()
	}
	a, b := run(), run()
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Error("the same seed gave different samples")
	}
}
