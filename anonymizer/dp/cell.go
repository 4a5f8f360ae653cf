package dp

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/google/differential-privacy/go/v3/dpagg"
	"github.com/google/differential-privacy/go/v3/noise"
)

// libraryCalls counts calls into the differential-privacy library (constructors, Result,
// selection). Tests use it to prove that refused parameters never reach the library.
var libraryCalls atomic.Int64

// Kind is what a cell aggregates.
type Kind int

const (
	// KindCount counts events; a tenant contributes at most LInf events to the cell.
	KindCount Kind = iota + 1
	// KindSum sums fixed-point integers; a tenant contributes a value in [0, LInf].
	KindSum
)

// String returns "count" or "sum".
func (k Kind) String() string {
	switch k {
	case KindCount:
		return "count"
	case KindSum:
		return "sum"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

type cellState int

const (
	stateOpen cellState = iota
	stateReleased
	stateMarshalled
)

// Release is one noisy value with everything docs/DESIGN.md §4 requires next to it.
type Release struct {
	Kind string
	// Value is the noisy value. It is unbiased and therefore may be negative; it is not
	// clamped (clamping is post-processing the caller may apply, at the cost of bias).
	Value int64
	// StdDev is the standard deviation of the noise added to the integer value: for Laplace
	// the exact value for the library's Laplace sample of scale λ = L0·LInf/ε rounded to an
	// integer, for Gaussian √(σ²+1/12) with σ = noise.SigmaForGaussian (the +1/12 is the
	// rounding to an integer). See noiseStdDev.
	StdDev float64
	// CI95Low, CI95High: the library's 95% confidence interval for the true value
	// (ComputeConfidenceInterval(0.05)); the library clamps it at 0 because the true value
	// of a non-negative aggregate cannot be negative.
	CI95Low, CI95High float64
	Epsilon, Delta    float64
	L0, LInf          int64
	Mechanism         string
}

// Cell is one value to be released, over contributions that the caller has already bounded
// per tenant (≤ LInf per cell, ≤ L0 cells per tenant). Not safe for concurrent use.
//
// A Cell whose existence comes from the data (e.g. a (feature, version) pair seen in the
// events) may only be released if SelectPartition said so; a cell from configuration may
// always be released.
type Cell struct {
	p     Params
	kind  Kind
	count *dpagg.Count           // KindCount with LInf == 1
	sum   *dpagg.BoundedSumInt64 // KindSum, and KindCount with LInf > 1
	state cellState
}

// NewCount returns a count cell. Each Add is one tenant's number of events in the cell,
// clamped to [0, LInf]. With LInf == 1 it is the library's dpagg.Count; with LInf > 1 it is
// dpagg.BoundedSumInt64 over [0, LInf], because dpagg.Count's per-partition contribution
// bound is unexported (CountOptions.maxContributionsPerPartition) — the noise is the same.
func NewCount(p Params) (*Cell, error) { return newCell(p, KindCount) }

// NewSum returns an integer (fixed-point) sum cell: each Add is one tenant's total in the
// cell, clamped to [0, LInf]. It uses dpagg.BoundedSumInt64, never the float sum, whose
// result depends on summation order and can leak through it.
func NewSum(p Params) (*Cell, error) { return newCell(p, KindSum) }

func newCell(p Params, k Kind) (*Cell, error) {
	if err := p.validateCell(); err != nil {
		return nil, err
	}
	c := &Cell{p: p, kind: k}
	if err := c.initLibrary(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cell) usesCount() bool { return c.kind == KindCount && c.p.LInf == 1 }

func libNoise(m Mechanism) noise.Noise {
	if m == Gaussian {
		return noise.Gaussian()
	}
	return noise.Laplace()
}

// initLibrary creates the library aggregate; p must have been validated.
func (c *Cell) initLibrary() error {
	libraryCalls.Add(1)
	var err error
	if c.usesCount() {
		c.count, err = dpagg.NewCount(&dpagg.CountOptions{
			Epsilon:                  c.p.Epsilon,
			Delta:                    c.p.Delta,
			MaxPartitionsContributed: c.p.L0,
			Noise:                    libNoise(c.p.Mechanism),
		})
	} else {
		c.sum, err = dpagg.NewBoundedSumInt64(&dpagg.BoundedSumInt64Options{
			Epsilon:                  c.p.Epsilon,
			Delta:                    c.p.Delta,
			MaxPartitionsContributed: c.p.L0,
			Lower:                    0,
			Upper:                    c.p.LInf,
			Noise:                    libNoise(c.p.Mechanism),
		})
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLibrary, err)
	}
	return nil
}

func (c *Cell) checkOpen() error {
	switch {
	case c == nil || (c.count == nil && c.sum == nil):
		return ErrNotConfigured
	case c.state == stateReleased:
		return fmt.Errorf("%w: a cell is released once; re-releasing with fresh noise would let the noise be averaged away — return the stored release instead", ErrReleased)
	case c.state == stateMarshalled:
		return fmt.Errorf("%w: a marshalled partial must be merged into another cell (MergePartial), not reused", ErrMarshalled)
	}
	return nil
}

// Add adds one tenant's contribution, clamped again to [0, LInf] in case the caller did not.
func (c *Cell) Add(v int64) error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	v = max(0, min(v, c.p.LInf))
	var err error
	if c.count != nil {
		err = c.count.IncrementBy(v)
	} else {
		err = c.sum.Add(v)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLibrary, err)
	}
	return nil
}

// Result adds noise and returns the release. It may be called once: the cell is spent even
// if the library fails, so that no second noisy draw of the same value can ever exist.
func (c *Cell) Result() (Release, error) {
	if err := c.checkOpen(); err != nil {
		return Release{}, err
	}
	c.state = stateReleased
	libraryCalls.Add(1)
	var (
		v   int64
		ci  noise.ConfidenceInterval
		err error
	)
	if c.count != nil {
		if v, err = c.count.Result(); err == nil {
			ci, err = c.count.ComputeConfidenceInterval(0.05)
		}
	} else {
		if v, err = c.sum.Result(); err == nil {
			ci, err = c.sum.ComputeConfidenceInterval(0.05)
		}
	}
	if err != nil {
		return Release{}, fmt.Errorf("%w: %v", ErrLibrary, err)
	}
	return Release{
		Kind:      c.kind.String(),
		Value:     v,
		StdDev:    noiseStdDev(c.p),
		CI95Low:   ci.LowerBound,
		CI95High:  ci.UpperBound,
		Epsilon:   c.p.Epsilon,
		Delta:     c.p.Delta,
		L0:        c.p.L0,
		LInf:      c.p.LInf,
		Mechanism: c.p.Mechanism.String(),
	}, nil
}

// noiseStdDev is the standard deviation of the integer noise the library adds.
//
// Laplace (noise/laplace_noise.go addLaplaceInt64): a two-sided geometric sample on a grid
// of step g = 2^⌈log2(λ/2^40)⌉ with scale (L1+g)/ε ≈ λ = L1/ε, L1 = L0·LInf, rounded to an
// integer. Up to a relative error 2^-40 that is Y = round(X), X ~ Laplace(λ), with
// P(Y = k) = sinh(1/(2λ))·r^|k| for k ≠ 0, r = e^(-1/λ), hence
// Var(Y) = 2·sinh(1/(2λ))·Σ_{k≥1} k²r^k = 2·sinh(1/(2λ))·r(1+r)/(1−r)³  (→ 2λ² for large λ).
//
// Gaussian (addGaussianInt64): a symmetric binomial of variance exactly σ² on a grid much
// finer than 1 (σ from noise.SigmaForGaussian), rounded to an integer: σ² + 1/12
// (Sheppard's correction; its error is of order e^(-2π²σ²), negligible for σ ≥ 0.5; for a
// smaller σ the value overstates the true standard deviation).
func noiseStdDev(p Params) float64 {
	if p.Mechanism == Gaussian {
		s := noise.SigmaForGaussian(p.L0, float64(p.LInf), p.Epsilon, p.Delta)
		return math.Sqrt(s*s + 1.0/12)
	}
	lambda := float64(p.L0) * float64(p.LInf) / p.Epsilon
	r := math.Exp(-1 / lambda)
	oneMinusR := -math.Expm1(-1 / lambda)
	return math.Sqrt(2 * math.Sinh(1/(2*lambda)) * r * (1 + r) / (oneMinusR * oneMinusR * oneMinusR))
}

// partial is the wire format of MarshalPartial.
type partial struct {
	Version int
	Kind    Kind
	Library []byte // the library's GobEncode of dpagg.Count or dpagg.BoundedSumInt64
}

const partialVersion = 1

// MarshalPartial serialises the un-noised partial aggregate so that another worker can
// MergePartial it, using the library's Gob encoding. The cell is spent afterwards (the
// library marks it serialised): it can be neither added to nor released.
//
// SECURITY: the bytes contain the RAW, UN-NOISED sum together with ε, δ, L0, LInf. They are
// not differentially private. They must stay inside the pipeline (worker to worker, never
// stored in a place readable by tenants or the query service, never logged, never released).
func (c *Cell) MarshalPartial() ([]byte, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	c.state = stateMarshalled
	var (
		lib []byte
		err error
	)
	if c.count != nil {
		lib, err = c.count.GobEncode()
	} else {
		lib, err = c.sum.GobEncode()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLibrary, err)
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(partial{Version: partialVersion, Kind: c.kind, Library: lib}); err != nil {
		return nil, fmt.Errorf("dp: encoding partial: %w", err)
	}
	return buf.Bytes(), nil
}

// MergePartial adds a partial produced by MarshalPartial of a cell with the same kind and
// the same Params (the library's Merge refuses different ε, δ, L0, LInf, bounds or noise).
// The bytes are raw sums: see MarshalPartial.
func (c *Cell) MergePartial(data []byte) error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	var pt partial
	if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&pt); err != nil {
		return fmt.Errorf("%w: %v; pass bytes from MarshalPartial unchanged", ErrPartial, err)
	}
	if pt.Version != partialVersion || pt.Kind != c.kind {
		return fmt.Errorf("%w: version %d kind %v, want version %d kind %v; merge only partials of the same cell", ErrPartial, pt.Version, pt.Kind, partialVersion, c.kind)
	}
	var err error
	if c.count != nil {
		other := new(dpagg.Count)
		if err = other.GobDecode(pt.Library); err == nil {
			err = c.count.Merge(other)
		}
	} else {
		other := new(dpagg.BoundedSumInt64)
		if err = other.GobDecode(pt.Library); err == nil {
			err = c.sum.Merge(other)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %v; both cells must be built with identical Params", ErrPartial, err)
	}
	return nil
}

// SelectPartition is the private decision whether a cell whose existence comes from the data
// may be released at all, from the number of distinct tenants that contributed to it (each
// tenant counted once, and each tenant in at most p.L0 cells). It uses the library's
// dpagg.PreAggSelectPartition and spends its own (p.Epsilon, p.Delta), which must be > 0 both;
// p.LInf and p.Mechanism are not used but must be valid. Never decide by comparing raw counts.
func SelectPartition(p Params, distinctTenants int64) (bool, error) {
	if err := p.validateSelection(); err != nil {
		return false, err
	}
	if distinctTenants < 0 {
		return false, fmt.Errorf("%w: %d; pass the number of distinct tenants in the cell (≥ 0)", ErrTenants, distinctTenants)
	}
	libraryCalls.Add(1)
	s, err := dpagg.NewPreAggSelectPartition(&dpagg.PreAggSelectPartitionOptions{
		Epsilon:                  p.Epsilon,
		Delta:                    p.Delta,
		MaxPartitionsContributed: p.L0,
	})
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrLibrary, err)
	}
	if err := s.IncrementBy(distinctTenants); err != nil {
		return false, fmt.Errorf("%w: %v", ErrLibrary, err)
	}
	keep, err := s.ShouldKeepPartition()
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrLibrary, err)
	}
	return keep, nil
}

// PartialValue returns the raw, un-noised value inside a MarshalPartial output. It exists for
// tests and for the aggregator's utility report, which compares released values with the
// bounded truth; like the partial itself, the value must never leave the pipeline.
func PartialValue(data []byte) (int64, error) {
	var pt partial
	if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&pt); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrPartial, err)
	}
	// The library's Gob payloads: dpagg.Count has Count, dpagg.BoundedSumInt64 has Sum.
	var lib struct{ Count, Sum int64 }
	if err := gob.NewDecoder(bytes.NewReader(pt.Library)).Decode(&lib); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrPartial, err)
	}
	return lib.Count + lib.Sum, nil
}
