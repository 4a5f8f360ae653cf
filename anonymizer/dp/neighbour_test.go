package dp

import (
	"math"
	"testing"
)

// deltaPrime estimates how far a mechanism is from (ε, δ)-DP on one pair of neighbouring
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
func deltaPrime(a, b []int64, eps float64, lo, hi int64) (est, slack float64) {
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
	z := zOneSided(1e-5 / float64(nb))
	for i := range ha {
		pa, pb := ha[i]/na, hb[i]/nbSamples
		est += max(0, pa-e*pb)
		slack += z * math.Sqrt(pa*(1-pa)/na+e*e*pb*(1-pb)/nbSamples)
	}
	return est, slack
}

// TestNeighbouringDatasets: dataset B has no tenant in the cell, dataset A has one tenant
// contributing LInf (= 1, a count). The real Laplace (ε = 1) and Gaussian (ε = 1, δ = 1e-5)
// cells must give δ′ ≤ δ + slack; a cell whose noise is scaled for 10·ε while we claim ε must
// give δ′ > δ + slack with the same estimator — so the test can fail, and does for a
// mechanism that is under-noised by a factor the real one would be accused of.
func TestNeighbouringDatasets(t *testing.T) {
	const nA = 30_000     // dataset A draws for the real mechanism (B: the cached 100,000)
	const nUnder = 10_000 // per dataset for the under-noised mechanism
	for _, claimed := range []Params{laplaceCount, gaussianCount} {
		t.Run(claimed.Mechanism.String(), func(t *testing.T) {
			t.Parallel()
			sd := noiseStdDev(claimed)
			lo := int64(math.Floor(-2.5 * sd))
			hi := claimed.LInf + int64(math.Ceil(2.5*sd))

			// Real mechanism.
			b := values(zeroCountDraws[claimed.Mechanism](t))
			a := values(draw(t, template(t, NewCount, claimed, []int64{claimed.LInf}), nA))
			est, slack := deltaPrime(a, b, claimed.Epsilon, lo, hi)
			t.Logf("real: δ′ = %.5f, allowed δ + slack = %.5f", est, claimed.Delta+slack)
			if est > claimed.Delta+slack {
				t.Errorf("real %v mechanism: δ′ = %.5f > δ + slack = %.5f: not (ε=%v, δ=%v)-DP", claimed.Mechanism, est, claimed.Delta+slack, claimed.Epsilon, claimed.Delta)
			}

			// Under-noised mechanism: noise for 10·ε, claimed ε.
			under := claimed
			under.Epsilon = 10 * claimed.Epsilon
			ua := values(draw(t, template(t, NewCount, under, []int64{under.LInf}), nUnder))
			ub := values(draw(t, template(t, NewCount, under, nil), nUnder))
			uest, uslack := deltaPrime(ua, ub, claimed.Epsilon, lo, hi)
			t.Logf("under-noised (ε×10): δ′ = %.5f, allowed δ + slack = %.5f", uest, claimed.Delta+uslack)
			if uest <= claimed.Delta+uslack {
				t.Errorf("estimator did not flag noise scaled for ε=%v claimed as ε=%v: δ′ = %.5f ≤ %.5f", under.Epsilon, claimed.Epsilon, uest, claimed.Delta+uslack)
			}
		})
	}
}
