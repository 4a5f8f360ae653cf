// Package dptest holds the statistics Shukei's differential-privacy tests share: an empirical
// estimate of how far a mechanism is from (ε, δ)-DP on one pair of neighbouring datasets.
package dptest

import "math"

// ZOneSided is the one-sided standard normal quantile: P(Z > z) = p.
func ZOneSided(p float64) float64 { return math.Sqrt2 * math.Erfcinv(2*p) }

// DeltaPrime estimates how far a mechanism is from (ε, δ)-DP on one pair of neighbouring
// datasets, from samples a (dataset A) and b (dataset B) of its integer output:
//
//	δ′ = Σ_bins max(0, P̂_A(bin) − e^ε·P̂_B(bin))
//
// with the integers lo..hi as bins plus one bin for each tail. For an (ε, δ)-DP mechanism the
// true δ′ is ≤ δ for ANY binning (binning is post-processing, and the sum over the bins where
// the difference is positive is P_A(S) − e^ε·P_B(S) for their union S).
//
// Sampling error: per bin, D̂ = P̂_A − e^ε·P̂_B has standard deviation
// sd = √(P_A(1−P_A)/n_A + e^{2ε}·P_B(1−P_B)/n_B) (independent binomial proportions; estimated by
// plugging in P̂). With k bins, a one-sided normal bound per bin at level 1e-5/k and a union
// bound give: with probability ≥ 1 − 1e-5, D̂ ≤ D + z·sd in every bin, and since
// max(0, x+y) ≤ max(0, x) + max(0, y), δ′_estimated ≤ δ′_true + Σ z·sd ≤ δ + Σ z·sd =: bound.
// The bins are chosen (±2.5 noise standard deviations around the two true values, tails
// lumped) so that every bin has ≥ ~0.5 % of the mass and the normal approximation holds.
func DeltaPrime(a, b []int64, eps float64, lo, hi int64) (est, slack float64) {
	nb := int(hi-lo) + 3
	bin := func(v int64) int {
		switch {
		case v < lo:
			return 0
		case v > hi:
			return nb - 1
		}
		return int(v-lo) + 1
	}
	ha, hb := make([]float64, nb), make([]float64, nb)
	for _, v := range a {
		ha[bin(v)]++
	}
	for _, v := range b {
		hb[bin(v)]++
	}
	na, nbSamples := float64(len(a)), float64(len(b))
	e := math.Exp(eps)
	z := ZOneSided(1e-5 / float64(nb))
	for i := range ha {
		pa, pb := ha[i]/na, hb[i]/nbSamples
		est += max(0, pa-e*pb)
		slack += z * math.Sqrt(pa*(1-pa)/na+e*e*pb*(1-pb)/nbSamples)
	}
	return est, slack
}
