package dp

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/shukei/shukei/internal/dptest"
)

const statDraws = 100_000

// Claimed parameters of the count cells used by the statistical and neighbouring tests.
var (
	laplaceCount  = Params{Epsilon: 1, L0: 1, LInf: 1}
	gaussianCount = Params{Epsilon: 1, Delta: 1e-5, L0: 1, LInf: 1, Mechanism: Gaussian}
)

// zeroCountDraws caches statDraws releases of an empty count cell per mechanism: both the
// mean/variance test and the neighbouring test (as dataset B) use them, which keeps
// `go test -race` fast (the library's sampler costs ~0.25 ms per draw under -race).
var zeroCountDraws = map[Mechanism]func(testing.TB) []Release{
	Laplace:  cachedDraws(laplaceCount),
	Gaussian: cachedDraws(gaussianCount),
}

func cachedDraws(p Params) func(testing.TB) []Release {
	var (
		once sync.Once
		rs   []Release
	)
	return func(t testing.TB) []Release {
		once.Do(func() {
			start := time.Now()
			rs = draw(t, template(t, NewCount, p, nil), statDraws)
			t.Logf("%d draws of an empty %v count in %v", statDraws, p.Mechanism, time.Since(start))
		})
		if len(rs) != statDraws {
			t.Fatal("cached draws failed")
		}
		return rs
	}
}

// TestNoiseMeanAndVariance draws statDraws releases of a cell and checks, each with a
// false-rejection probability of about 1e-5:
//
//   - mean: the noise is unbiased, so the sample mean m of n draws has mean = true value and
//     variance V/n where V = StdDev² is the theoretical variance. z-test:
//     |m − true| ≤ 4.417·√(V/n), where 4.417 is the two-sided 1e-5 normal quantile (CLT; n is
//     large and both noises have all moments).
//   - variance: the sample variance s² (with the known mean, s² = Σ(x−true)²/n, an average of
//     n i.i.d. terms) has mean V and variance (μ4 − V²)/n, μ4 the fourth central moment. By
//     the CLT, |s² − V| ≤ z·√((μ4 − V²)/n). μ4 is estimated from the sample (its relative
//     error is small at n = 1e5), and z = 5 instead of 4.417 (nominal 5.7e-7) leaves room
//     for the normal approximation of a heavy-tailed (Laplace, kurtosis 6) sum: that keeps
//     the real false-rejection probability below 1e-5. At n = 1e5 the bound is ≈ ±3.5 % of V
//     for Laplace and ±2.2 % for Gaussian, so a noise scaled for the wrong ε (≥ ±7 % in
//     variance for a 3.5 % error in ε) or ignoring L0 or LInf (×4 or more) fails.
//
// StdDev is the value the release reports, so this also proves the reported StdDev is true.
// The count cells at 0 (λ = 1, σ ≈ 3.7; 100,000 draws) are where rounding to integers
// matters (the exact Laplace formula differs from 2λ² by 0.3 %, Gaussian has +1/12); the sum
// cells at 1000 (10,000 draws, bounds ≈ ±11 % / ±7 % of V, derived the same way) use L0 > 1
// and LInf > 1 so that a sensitivity computed from the wrong field (×3, ×4 in variance)
// fails.
func TestNoiseMeanAndVariance(t *testing.T) {
	if raceDetector {
		t.Skip("statistical, draws noise only: make test runs it without -race")
	}
	cases := []struct {
		name    string
		newCell func(Params) (*Cell, error)
		p       Params
		contrib []int64
		truth   float64
		n       int // 0: the cached statDraws of an empty count
	}{
		{"laplace-count-0", NewCount, laplaceCount, nil, 0, 0},
		{"gaussian-count-0", NewCount, gaussianCount, nil, 0, 0},
		{"laplace-sum-1000", NewSum, Params{Epsilon: 2, L0: 3, LInf: 500}, []int64{500, 500}, 1000, 10_000},
		{"gaussian-sum-1000", NewSum, Params{Epsilon: 0.5, Delta: 1e-6, L0: 4, LInf: 250, Mechanism: Gaussian}, []int64{250, 250, 250, 250}, 1000, 10_000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var rs []Release
			if tc.n == 0 {
				rs = zeroCountDraws[tc.p.Mechanism](t)
			} else {
				rs = draw(t, template(t, tc.newCell, tc.p, tc.contrib), tc.n)
			}
			v := rs[0].StdDev * rs[0].StdDev
			n := float64(len(rs))
			var sum, sum2, sum4 float64
			covered := 0
			for _, r := range rs {
				d := float64(r.Value) - tc.truth
				sum += d
				sum2 += d * d
				sum4 += d * d * d * d
				if r.CI95Low <= tc.truth && tc.truth <= r.CI95High {
					covered++
				}
			}
			mean, s2, m4 := sum/n, sum2/n, sum4/n
			meanBound := zTwoSided1e5 * math.Sqrt(v/n)
			varBound := 5 * math.Sqrt((m4-s2*s2)/n)
			t.Logf("theoretical var %.4f sd %.4f | mean err %.4f (bound %.4f) | sample var %.4f (bound ±%.4f, %.2f%%)",
				v, rs[0].StdDev, mean, meanBound, s2, varBound, 100*varBound/v)
			if math.Abs(mean) > meanBound {
				t.Errorf("mean of noise = %.4f, want |mean| ≤ %.4f (biased noise?)", mean, meanBound)
			}
			if math.Abs(s2-v) > varBound {
				t.Errorf("sample variance %.4f, theoretical %.4f, allowed ±%.4f", s2, v, varBound)
			}
			// The library's 95% CI must cover the true value at least 95% of the time
			// (rounding outwards makes it conservative). One-sided binomial bound at 1e-5.
			cov := float64(covered) / n
			if minCov := 0.95 - dptest.ZOneSided(1e-5)*math.Sqrt(0.95*0.05/n); cov < minCov {
				t.Errorf("CI95 coverage %.4f < %.4f", cov, minCov)
			}
		})
	}
}
