package dp

import (
	"math"
	"testing"
)

// zTwoSided1e5 is the two-sided standard-normal quantile for a false-rejection probability of
// 1e-5: P(|Z| > z) = 1e-5  ⇔  z = √2·erfc⁻¹(1e-5) ≈ 4.417.
var zTwoSided1e5 = math.Sqrt2 * math.Erfcinv(1e-5)

// rawValue returns the un-noised value inside a MarshalPartial output.
func rawValue(t testing.TB, data []byte) int64 {
	t.Helper()
	v, err := PartialValue(data)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// template builds one cell with the contributions added, through the public constructor.
// Tests draw many releases from clones of it (see draw).
func template(t testing.TB, newCell func(Params) (*Cell, error), p Params, contributions []int64) *Cell {
	t.Helper()
	c, err := newCell(p)
	if err != nil {
		t.Fatalf("new cell %+v: %v", p, err)
	}
	for _, v := range contributions {
		if err := c.Add(v); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	return c
}

// clone copies an open cell including its library aggregate (a struct copy: the library's
// objects hold only parameters, the raw sum and a state, and the Noise value is stateless).
// It exists only to keep the statistical tests fast: the library's constructors draw and
// discard one noise sample to validate their parameters, which doubles the cost of a draw.
func (c *Cell) clone() *Cell {
	cp := *c
	if c.count != nil {
		lib := *c.count
		cp.count = &lib
	}
	if c.sum != nil {
		lib := *c.sum
		cp.sum = &lib
	}
	return &cp
}

// draw returns n releases of independent clones of tmpl (which stays open).
func draw(t testing.TB, tmpl *Cell, n int) []Release {
	t.Helper()
	out := make([]Release, n)
	for i := range out {
		r, err := tmpl.clone().Result()
		if err != nil {
			t.Fatalf("Result: %v", err)
		}
		out[i] = r
	}
	return out
}

// values extracts the noisy values.
func values(rs []Release) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.Value
	}
	return out
}
