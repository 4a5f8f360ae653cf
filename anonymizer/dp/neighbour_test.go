package dp

import (
	"math"
	"testing"

	"github.com/shukei/shukei/internal/dptest"
)

// TestNeighbouringDatasets: dataset B has no tenant in the cell, dataset A has one tenant
// contributing LInf (= 1, a count). The real Laplace (ε = 1) and Gaussian (ε = 1, δ = 1e-5)
// cells must give δ′ ≤ δ + slack; a cell whose noise is scaled for 10·ε while we claim ε must
// give δ′ > δ + slack with the same estimator — so the test can fail, and does for a
// mechanism that is under-noised by a factor the real one would be accused of.
func TestNeighbouringDatasets(t *testing.T) {
	if raceDetector {
		t.Skip("statistical, draws noise only: make test runs it without -race")
	}
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
			est, slack := dptest.DeltaPrime(a, b, claimed.Epsilon, lo, hi)
			t.Logf("real: δ′ = %.5f, allowed δ + slack = %.5f", est, claimed.Delta+slack)
			if est > claimed.Delta+slack {
				t.Errorf("real %v mechanism: δ′ = %.5f > δ + slack = %.5f: not (ε=%v, δ=%v)-DP", claimed.Mechanism, est, claimed.Delta+slack, claimed.Epsilon, claimed.Delta)
			}

			// Under-noised mechanism: noise for 10·ε, claimed ε.
			under := claimed
			under.Epsilon = 10 * claimed.Epsilon
			ua := values(draw(t, template(t, NewCount, under, []int64{under.LInf}), nUnder))
			ub := values(draw(t, template(t, NewCount, under, nil), nUnder))
			uest, uslack := dptest.DeltaPrime(ua, ub, claimed.Epsilon, lo, hi)
			t.Logf("under-noised (ε×10): δ′ = %.5f, allowed δ + slack = %.5f", uest, claimed.Delta+uslack)
			if uest <= claimed.Delta+uslack {
				t.Errorf("estimator did not flag noise scaled for ε=%v claimed as ε=%v: δ′ = %.5f ≤ %.5f", under.Epsilon, claimed.Epsilon, uest, claimed.Delta+uslack)
			}
		})
	}
}
