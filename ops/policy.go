package ops

import (
	"errors"
	"fmt"
	"time"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/policy"
)

// MustPolicy is the embedded policy version in force now (the embedded policies are checked
// by the tests, so failing here is a build defect).
func MustPolicy() *policy.Policy {
	v, err := policy.Embedded()
	if err != nil {
		panic(err)
	}
	return v.InForce(time.Now())
}

// QueryK is the k the service applies: the policy's, or a larger configured one.
func QueryK(c config.Query) (int, error) {
	k := MustPolicy().K
	if c.K != 0 {
		if c.K < k {
			return 0, fmt.Errorf("query.k=%d is below the policy's k=%d", c.K, k)
		}
		k = c.K
	}
	return k, nil
}

// AggregatorBudget is external_aggregate's monthly budget: the configuration's if set, else
// the policy's.
func AggregatorBudget(c config.Aggregator, p *policy.Policy) (ledger.Budget, error) {
	b := ledger.Budget{Epsilon: c.BudgetEpsilon, Delta: c.BudgetDelta}
	if rule, ok := p.Purposes[policy.ExternalAggregate]; ok && rule.Budget != nil {
		if b.Epsilon == 0 {
			b.Epsilon = rule.Budget.EpsilonPerMonth
		}
		if b.Delta == 0 {
			b.Delta = rule.Budget.DeltaPerMonth
		}
	}
	if b.Epsilon == 0 {
		return b, errors.New("external_aggregate has no privacy budget: set aggregator.budget_epsilon or the policy's budget")
	}
	return b, nil
}

// YearBudgetOf is external_aggregate's rolling-year budget under configuration c, given its
// monthly budget: the configured one, or twelve months' worth.
func YearBudgetOf(c config.Aggregator, month ledger.Budget) ledger.Budget {
	return YearBudget(month, ledger.Budget{Epsilon: c.BudgetEpsilonYear, Delta: c.BudgetDeltaYear})
}

// YearBudget is year with each bound it leaves unset (0) twelve times month's.
func YearBudget(month, year ledger.Budget) ledger.Budget {
	if year.Epsilon == 0 {
		year.Epsilon = 12 * month.Epsilon
	}
	if year.Delta == 0 {
		year.Delta = 12 * month.Delta
	}
	return year
}
