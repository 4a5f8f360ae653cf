package aggregator

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/shukei/shukei/anonymizer/dp"
)

// Released is one noisy cell of a window's release, with everything a reader needs to judge
// it (docs/DESIGN.md §4). The number of tenants behind it is never part of it.
type Released struct {
	Metric    string
	Unit      string
	DimNames  []string
	DimValues []string
	// Selected is true for a data-derived cell that private partition selection kept (with
	// SelectionEpsilon, SelectionDelta); false for a configured cell, always released.
	Selected                         bool
	SelectionEpsilon, SelectionDelta float64
	dp.Release
}

// Dims renders the dimensions as "name=value|name=value".
func (r Released) Dims() string {
	parts := make([]string, len(r.DimNames))
	for i := range r.DimNames {
		parts[i] = r.DimNames[i] + "=" + r.DimValues[i]
	}
	return strings.Join(parts, "|")
}

// Outcome summarises a window's release step.
type Outcome struct {
	Released   int
	Suppressed int // data-derived cells partition selection did not keep
}

// Hash identifies the plan: the metrics with their bounds and dimensions, the privacy
// parameters, the catalogues and the policy version. The ledger and every stored partial
// carry it; partials of another plan are never merged.
func (p *Plan) Hash() string {
	h := sha256.New()
	w := func(s string) { h.Write([]byte(s)); h.Write([]byte{0}) }
	w("shukei-aggregator-plan/1")
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	w(f(p.Epsilon))
	w(f(p.SelectionShare))
	w(f(p.SelectionDelta))
	w(p.Mechanism.String())
	w(f(p.GaussianDelta))
	w(strconv.Itoa(p.PolicyVersion))
	for _, m := range p.Metrics {
		w(m.Name)
		w(string(m.Schema))
		w(m.Unit.String())
		w(strconv.FormatInt(m.L0, 10))
		w(strconv.FormatInt(m.LInf, 10))
		for _, d := range m.Dims {
			w(d.Name + "/" + strconv.FormatBool(d.Open) + "/" + strconv.FormatBool(d.Priority) + "/" + strings.Join(d.Domain, ","))
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// Release merges the partials of one window (from every partition), privately selects the
// data-derived cells, adds the noise once per cell and returns the released cells. Every
// configured cell is released, with or without data. partials must hold at most one partial
// per (partition, metric, cell); the caller dedupes re-emitted ones.
func (p *Plan) Release(partials []Partial) ([]Released, Outcome, error) {
	type merged struct {
		tenants int64
		states  [][]byte
	}
	byMetric := map[string]map[string]*merged{}
	for _, pt := range partials {
		cells := byMetric[pt.Metric]
		if cells == nil {
			cells = map[string]*merged{}
			byMetric[pt.Metric] = cells
		}
		c := cells[pt.Cell]
		if c == nil {
			c = &merged{}
			cells[pt.Cell] = c
		}
		c.tenants += pt.Tenants
		c.states = append(c.states, pt.State)
	}
	var out []Released
	var oc Outcome
	for _, m := range p.Metrics {
		data := byMetric[m.Name]
		keys := m.configuredCells()
		for k := range data {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		names := make([]string, len(m.Dims))
		for i, d := range m.Dims {
			names[i] = d.Name
		}
		for _, k := range keys {
			vals := strings.Split(k, "|")
			if len(vals) != len(m.Dims) {
				return nil, oc, fmt.Errorf("aggregator: partial cell %q of %s has %d dimensions, want %d", k, m.Name, len(vals), len(m.Dims))
			}
			c := data[k]
			r := Released{Metric: m.Name, Unit: m.Unit.String(), DimNames: names, DimValues: vals}
			if !m.configured(vals) {
				var tenants int64
				if c != nil {
					tenants = c.tenants
				}
				sel := p.selection(m)
				keep, err := dp.SelectPartition(sel, tenants)
				if err != nil {
					return nil, oc, err
				}
				if !keep {
					oc.Suppressed++
					continue
				}
				r.Selected, r.SelectionEpsilon, r.SelectionDelta = true, sel.Epsilon, sel.Delta
			}
			var states [][]byte
			if c != nil {
				states = c.states
			}
			var err error
			if r.Release, err = p.releaseCell(m, states); err != nil {
				return nil, oc, fmt.Errorf("aggregator: %s %s: %w", m.Name, k, err)
			}
			out = append(out, r)
			oc.Released++
		}
	}
	return out, oc, nil
}

// releaseCell merges one cell's partials and adds the noise, once.
func (p *Plan) releaseCell(m *Metric, states [][]byte) (dp.Release, error) {
	cell, err := dp.NewCount(p.params(m))
	if err != nil {
		return dp.Release{}, err
	}
	for _, s := range states {
		if err := cell.MergePartial(s); err != nil {
			return dp.Release{}, err
		}
	}
	r, err := cell.Result()
	if err != nil {
		return r, err
	}
	return nonNegative(r), nil
}

// nonNegative is the release's post-processing (it reads only the noisy output, so the
// guarantee is unchanged): a count of tenants, users or events is never negative, so a noisy
// value below 0 is released as 0 and the 95% interval is clamped at 0 too. The interval still
// covers the truth whenever the unclamped one did (the truth is ≥ 0). The value is then
// biased upwards, by E[max(0, t+N)] − t: for Laplace noise of scale b and truth t ≥ 0 that is
// (b/2)·e^(−t/b), i.e. b/2 for an empty cell and under 0.5% of b once t ≥ 5b — negligible for
// every cell large enough to be read (TestNonNegativeBias measures it). Sums over many small
// cells inherit the bias; readers that need unbiased sums should sum cells ≥ 5b only.
func nonNegative(r dp.Release) dp.Release {
	r.Value = max(0, r.Value)
	r.CI95Low = max(0, r.CI95Low)
	r.CI95High = max(0, r.CI95High)
	return r
}
