package dp

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// withTimeout fails the test if f does not return within d (a hang in the library's sampler
// would otherwise block the whole test binary until go test's own timeout).
func withTimeout(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("did not return within %v", d)
	}
}

func TestValidateRefusesBeforeTheLibrary(t *testing.T) {
	ok := Params{Epsilon: 1, L0: 1, LInf: 1}
	with := func(f func(*Params)) Params { p := ok; f(&p); return p }
	cases := []struct {
		name string
		p    Params
		want error
	}{
		{"eps NaN", with(func(p *Params) { p.Epsilon = math.NaN() }), ErrEpsilon},
		{"eps +Inf", with(func(p *Params) { p.Epsilon = math.Inf(1) }), ErrEpsilon},
		{"eps -Inf", with(func(p *Params) { p.Epsilon = math.Inf(-1) }), ErrEpsilon},
		{"eps 0", with(func(p *Params) { p.Epsilon = 0 }), ErrEpsilon},
		{"eps negative", with(func(p *Params) { p.Epsilon = -1 }), ErrEpsilon},
		{"eps tiny", with(func(p *Params) { p.Epsilon = 1e-300 }), ErrEpsilon},
		{"eps huge", with(func(p *Params) { p.Epsilon = 1e6 }), ErrEpsilon},
		{"eps just above max", with(func(p *Params) { p.Epsilon = math.Nextafter(MaxEpsilon, 100) }), ErrEpsilon},
		{"delta NaN", with(func(p *Params) { p.Delta = math.NaN() }), ErrDelta},
		{"delta negative", with(func(p *Params) { p.Delta = -1e-9 }), ErrDelta},
		{"delta 1", with(func(p *Params) { p.Delta = 1 }), ErrDelta},
		{"delta +Inf", with(func(p *Params) { p.Delta = math.Inf(1) }), ErrDelta},
		{"L0 0", with(func(p *Params) { p.L0 = 0 }), ErrL0},
		{"L0 negative", with(func(p *Params) { p.L0 = -3 }), ErrL0},
		{"LInf 0", with(func(p *Params) { p.LInf = 0 }), ErrLInf},
		{"LInf negative", with(func(p *Params) { p.LInf = math.MinInt64 }), ErrLInf},
		{"L0*LInf overflows int64", with(func(p *Params) { p.L0 = math.MaxInt64 / 2; p.LInf = 4 }), ErrSensitivity},
		{"LInf*L0 overflows int64", with(func(p *Params) { p.L0 = 4; p.LInf = math.MaxInt64 / 2 }), ErrSensitivity},
		{"L0*LInf above max", with(func(p *Params) { p.L0 = 100_000; p.LInf = 10_001 }), ErrSensitivity},
		{"max int64 both", with(func(p *Params) { p.L0 = math.MaxInt64; p.LInf = math.MaxInt64 }), ErrSensitivity},
		{"unknown mechanism", with(func(p *Params) { p.Mechanism = 7 }), ErrMechanism},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := libraryCalls.Load()
			withTimeout(t, 5*time.Second, func() {
				if err := tc.p.Validate(); !errors.Is(err, tc.want) {
					t.Errorf("Validate(%+v) = %v, want %v", tc.p, err, tc.want)
				}
				for name, f := range map[string]func(Params) (*Cell, error){"NewCount": NewCount, "NewSum": NewSum} {
					if c, err := f(tc.p); !errors.Is(err, tc.want) || c != nil {
						t.Errorf("%s(%+v) = %v, %v; want nil, %v", name, tc.p, c, err, tc.want)
					}
				}
				sel := tc.p
				if !errors.Is(tc.want, ErrDelta) {
					sel.Delta = 1e-6 // selection needs δ > 0; keep the field under test invalid
				}
				if _, err := SelectPartition(sel, 10); !errors.Is(err, tc.want) {
					t.Errorf("SelectPartition(%+v) = %v, want %v", sel, err, tc.want)
				}
			})
			if n := libraryCalls.Load() - before; n != 0 {
				t.Errorf("%d call(s) reached the library with invalid parameters", n)
			}
		})
	}

	// Mechanism-specific δ rules, also refused before the library.
	before := libraryCalls.Load()
	if _, err := NewCount(Params{Epsilon: 1, Delta: 1e-6, L0: 1, LInf: 1}); !errors.Is(err, ErrDelta) {
		t.Errorf("Laplace with δ > 0: %v, want ErrDelta", err)
	}
	if _, err := NewSum(Params{Epsilon: 1, L0: 1, LInf: 1, Mechanism: Gaussian}); !errors.Is(err, ErrDelta) {
		t.Errorf("Gaussian with δ = 0: %v, want ErrDelta", err)
	}
	if _, err := SelectPartition(Params{Epsilon: 1, L0: 1, LInf: 1}, 5); !errors.Is(err, ErrDelta) {
		t.Errorf("selection with δ = 0: %v, want ErrDelta", err)
	}
	if _, err := SelectPartition(Params{Epsilon: 1, Delta: 1e-6, L0: 1, LInf: 1}, -1); !errors.Is(err, ErrTenants) {
		t.Errorf("selection with -1 tenants: %v, want ErrTenants", err)
	}
	if n := libraryCalls.Load() - before; n != 0 {
		t.Errorf("%d call(s) reached the library with invalid parameters", n)
	}

	// Messages say what to do.
	err := Params{Epsilon: 1, L0: math.MaxInt64 / 2, LInf: 4}.Validate()
	if err == nil || !strings.Contains(err.Error(), "lower L0 or LInf") {
		t.Errorf("message %q does not say what to do", err)
	}
}

// The extreme accepted parameters must work and return promptly: the largest sensitivity
// with the smallest ε gives λ = 1e15 > 2^40, the library's other (granularity ≥ 1) path.
func TestExtremeValidParamsDoNotHang(t *testing.T) {
	for _, p := range []Params{
		{Epsilon: MinEpsilon, L0: 1000, LInf: 1_000_000},
		{Epsilon: MaxEpsilon, L0: 1, LInf: 1},
		{Epsilon: MinEpsilon, Delta: 1e-12, L0: 1000, LInf: 1_000_000, Mechanism: Gaussian},
		{Epsilon: MaxEpsilon, Delta: 0.5, L0: 1, LInf: 1, Mechanism: Gaussian},
	} {
		withTimeout(t, 10*time.Second, func() {
			c, err := NewSum(p)
			if err != nil {
				t.Errorf("NewSum(%+v): %v", p, err)
				return
			}
			r, err := c.Result()
			if err != nil || math.IsNaN(r.StdDev) || math.IsInf(r.StdDev, 0) || r.StdDev <= 0 {
				t.Errorf("Result(%+v) = %+v, %v", p, r, err)
			}
		})
	}
}

func TestResultOnceAndReleaseFields(t *testing.T) {
	p := Params{Epsilon: 0.5, Delta: 1e-6, L0: 3, LInf: 7, Mechanism: Gaussian}
	c, err := NewSum(p)
	if err != nil {
		t.Fatal(err)
	}
	for range 200 { // true value 1400 ≈ 14σ: the library's clamp of the CI at 0 does not apply
		if err := c.Add(7); err != nil {
			t.Fatal(err)
		}
	}
	r, err := c.Result()
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != "sum" || r.Epsilon != 0.5 || r.Delta != 1e-6 || r.L0 != 3 || r.LInf != 7 || r.Mechanism != "gaussian" {
		t.Errorf("release does not state its parameters: %+v", r)
	}
	if !(r.CI95Low <= float64(r.Value) && float64(r.Value) <= r.CI95High) || r.StdDev <= 0 {
		t.Errorf("CI or StdDev inconsistent: %+v", r)
	}
	// The 95% CI half-width is ≈ 1.96 σ.
	if hw := (r.CI95High - r.CI95Low) / 2; math.Abs(hw-1.96*r.StdDev) > 1 {
		t.Errorf("CI half-width %.2f, want ≈ 1.96·%.2f", hw, r.StdDev)
	}
	if _, err := c.Result(); !errors.Is(err, ErrReleased) {
		t.Errorf("second Result: %v, want ErrReleased", err)
	}
	if err := c.Add(1); !errors.Is(err, ErrReleased) {
		t.Errorf("Add after Result: %v, want ErrReleased", err)
	}
	if _, err := c.MarshalPartial(); !errors.Is(err, ErrReleased) {
		t.Errorf("MarshalPartial after Result: %v, want ErrReleased", err)
	}
	var zero Cell
	if err := zero.Add(1); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("zero Cell Add: %v", err)
	}
	if _, err := zero.Result(); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("zero Cell Result: %v", err)
	}
}

func TestAddClamps(t *testing.T) {
	for _, tc := range []struct {
		name    string
		newCell func(Params) (*Cell, error)
		linf    int64
		adds    []int64
		want    int64
	}{
		{"count LInf=1 (dpagg.Count)", NewCount, 1, []int64{1, 5, -3, 0, math.MaxInt64, math.MinInt64}, 3},
		{"count LInf=4 (bounded sum)", NewCount, 4, []int64{1, 5, -3, 4, math.MaxInt64}, 13},
		{"sum", NewSum, 100, []int64{50, 1000, -1000, math.MinInt64, math.MaxInt64}, 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := template(t, tc.newCell, Params{Epsilon: 1, L0: 2, LInf: tc.linf}, tc.adds)
			b, err := c.MarshalPartial()
			if err != nil {
				t.Fatal(err)
			}
			if got := rawValue(t, b); got != tc.want {
				t.Errorf("raw value %d, want %d (each contribution clamped to [0, %d])", got, tc.want, tc.linf)
			}
		})
	}
}

func TestSelectPartition(t *testing.T) {
	cases := []struct {
		name      string
		p         Params
		tenants   int64
		trials    int
		wantAbove float64 // selected fraction must be ≥
		wantBelow float64 // selected fraction must be ≤
	}{
		// L0 ≤ 3: the library's exact "keep probability" (1 tenant: δ/L0... = 1e-5).
		{"1 tenant, L0=1", Params{Epsilon: 1, Delta: 1e-5, L0: 1, LInf: 1}, 1, 10_000, 0, 0.01},
		{"1000 tenants, L0=1", Params{Epsilon: 1, Delta: 1e-5, L0: 1, LInf: 1}, 1000, 10_000, 0.99, 1},
		{"0 tenants", Params{Epsilon: 1, Delta: 1e-5, L0: 1, LInf: 1}, 0, 1_000, 0, 0},
		// L0 > 3: the library switches to a thresholded Gaussian count.
		{"1 tenant, L0=5", Params{Epsilon: 1, Delta: 1e-5, L0: 5, LInf: 1}, 1, 2_000, 0, 0.01},
		{"1000 tenants, L0=5", Params{Epsilon: 1, Delta: 1e-5, L0: 5, LInf: 1}, 1000, 2_000, 0.99, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kept := 0
			for range tc.trials {
				k, err := SelectPartition(tc.p, tc.tenants)
				if err != nil {
					t.Fatal(err)
				}
				if k {
					kept++
				}
			}
			f := float64(kept) / float64(tc.trials)
			t.Logf("kept %d/%d", kept, tc.trials)
			if f < tc.wantAbove || f > tc.wantBelow {
				t.Errorf("kept fraction %.4f, want in [%v, %v]", f, tc.wantAbove, tc.wantBelow)
			}
		})
	}
}

func TestMergePartials(t *testing.T) {
	for _, tc := range []struct {
		name    string
		newCell func(Params) (*Cell, error)
		other   func(Params) (*Cell, error) // the other kind
		p       Params
	}{
		{"count", NewCount, NewSum, Params{Epsilon: 1, L0: 2, LInf: 1}},
		{"count LInf=3", NewCount, NewSum, Params{Epsilon: 1, L0: 2, LInf: 3}},
		{"sum gaussian", NewSum, NewCount, Params{Epsilon: 1, Delta: 1e-6, L0: 2, LInf: 10, Mechanism: Gaussian}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			part1 := []int64{1, 7, 12, -4}
			part2 := []int64{3, 10, 1_000}
			all := template(t, tc.newCell, tc.p, append(append([]int64{}, part1...), part2...))
			allBytes, err := all.MarshalPartial()
			if err != nil {
				t.Fatal(err)
			}
			want := rawValue(t, allBytes)

			w1 := template(t, tc.newCell, tc.p, part1)
			w2 := template(t, tc.newCell, tc.p, part2)
			b1, err := w1.MarshalPartial()
			if err != nil {
				t.Fatal(err)
			}
			b2, err := w2.MarshalPartial()
			if err != nil {
				t.Fatal(err)
			}
			if err := w1.Add(1); !errors.Is(err, ErrMarshalled) {
				t.Errorf("Add after MarshalPartial: %v, want ErrMarshalled", err)
			}
			if _, err := w1.Result(); !errors.Is(err, ErrMarshalled) {
				t.Errorf("Result after MarshalPartial: %v, want ErrMarshalled", err)
			}

			coord := template(t, tc.newCell, tc.p, nil)
			for _, b := range [][]byte{b1, b2} {
				if err := coord.MergePartial(b); err != nil {
					t.Fatal(err)
				}
			}
			check := coord.clone()
			cb, err := check.MarshalPartial()
			if err != nil {
				t.Fatal(err)
			}
			if got := rawValue(t, cb); got != want || want == 0 {
				t.Errorf("merged raw value %d, want %d (one aggregate of all contributions)", got, want)
			}
			if _, err := coord.Result(); err != nil {
				t.Errorf("Result after merge: %v", err)
			}

			// Incompatible partials are refused.
			other := tc.p
			other.Epsilon = 2
			wrongEps, _ := template(t, tc.newCell, other, nil).MarshalPartial()
			wrongKind, _ := template(t, tc.other, tc.p, nil).MarshalPartial()
			for name, b := range map[string][]byte{"other ε": wrongEps, "other kind": wrongKind, "garbage": []byte("not a partial"), "empty": nil} {
				dst := template(t, tc.newCell, tc.p, nil)
				if err := dst.MergePartial(b); !errors.Is(err, ErrPartial) {
					t.Errorf("merge %s: %v, want ErrPartial", name, err)
				}
			}
		})
	}
}
