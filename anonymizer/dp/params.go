// Package dp releases differentially private aggregates for the external_aggregate purpose
// (docs/DESIGN.md §4) on top of github.com/google/differential-privacy/go/v3 v3.0.0.
//
// The privacy unit is the tenant. The library has no notion of a tenant, so the caller (the
// aggregator) must already have bounded every tenant: at most L0 cells per release (sampled
// when over) and at most LInf per cell (clamped). This package re-clamps each contribution
// defensively, validates every parameter before the library sees it (the library spins on
// overflowed or infinite sensitivities), uses only integer (fixed-point) sums, releases each
// cell once, and exposes the library's private partition selection for cells taken from data.
package dp

import (
	"errors"
	"fmt"
	"math"
)

// Mechanism is the noise distribution. The zero value is Laplace.
type Mechanism int

const (
	// Laplace is pure ε-DP (δ must be 0). Default.
	Laplace Mechanism = iota
	// Gaussian is (ε, δ)-DP with δ > 0, calibrated on the L2 sensitivity LInf·√L0.
	Gaussian
)

// String returns "laplace" or "gaussian".
func (m Mechanism) String() string {
	switch m {
	case Laplace:
		return "laplace"
	case Gaussian:
		return "gaussian"
	}
	return fmt.Sprintf("Mechanism(%d)", int(m))
}

// Sane limits. They are far below what makes the library misbehave and far above anything a
// useful release needs.
const (
	// MinEpsilon: below it the noise drowns every value (the library itself accepts 2^-50).
	MinEpsilon = 1e-6
	// MaxEpsilon: above it the "privacy" guarantee is meaningless.
	MaxEpsilon = 10.0
	// MaxSensitivity bounds L0·LInf (the L1 sensitivity). The library computes
	// lInf*l0 in int64 without an overflow check (noise/laplace_noise.go, AddNoiseInt64).
	MaxSensitivity = int64(1e9)
)

// Errors returned by Validate and the cell operations; match them with errors.Is.
var (
	ErrEpsilon       = errors.New("dp: invalid epsilon")
	ErrDelta         = errors.New("dp: invalid delta")
	ErrL0            = errors.New("dp: invalid L0 (max cells per tenant)")
	ErrLInf          = errors.New("dp: invalid LInf (max contribution per tenant and cell)")
	ErrSensitivity   = errors.New("dp: sensitivity L0*LInf too large")
	ErrMechanism     = errors.New("dp: unknown mechanism")
	ErrReleased      = errors.New("dp: cell already released")
	ErrMarshalled    = errors.New("dp: cell already marshalled as a partial")
	ErrPartial       = errors.New("dp: incompatible or corrupt partial aggregate")
	ErrTenants       = errors.New("dp: invalid distinct tenant count")
	ErrLibrary       = errors.New("dp: differential-privacy library error")
	ErrNotConfigured = errors.New("dp: cell not created with NewCount or NewSum")
)

// Params are the privacy parameters of one released cell (or of one partition-selection
// decision, which spends its own ε and δ).
type Params struct {
	Epsilon float64
	// Delta must be 0 for Laplace cells and > 0 for Gaussian cells and partition selection.
	Delta float64
	// L0 is the maximum number of cells of the release a single tenant touches.
	L0 int64
	// LInf is the maximum contribution of a single tenant to one cell.
	LInf int64
	// Mechanism defaults to Laplace.
	Mechanism Mechanism
}

// Validate checks the parameters without calling the library. It does not check the
// mechanism-specific δ rule (δ = 0 for Laplace, δ > 0 for Gaussian); NewCount, NewSum and
// SelectPartition do, also before calling the library.
func (p Params) Validate() error {
	if math.IsNaN(p.Epsilon) || math.IsInf(p.Epsilon, 0) || p.Epsilon < MinEpsilon || p.Epsilon > MaxEpsilon {
		return fmt.Errorf("%w: ε = %v; set a finite epsilon in [%g, %g] (typically 0.1–2)", ErrEpsilon, p.Epsilon, MinEpsilon, MaxEpsilon)
	}
	if math.IsNaN(p.Delta) || p.Delta < 0 || p.Delta >= 1 {
		return fmt.Errorf("%w: δ = %v; set delta in [0, 1) — 0 for Laplace, a small value such as 1e-6 for Gaussian", ErrDelta, p.Delta)
	}
	if p.L0 < 1 {
		return fmt.Errorf("%w: L0 = %d; set L0 ≥ 1 to the number of cells a tenant may touch and sample tenants down to it", ErrL0, p.L0)
	}
	if p.LInf < 1 {
		return fmt.Errorf("%w: LInf = %d; set LInf ≥ 1 and clamp each tenant's contribution to it", ErrLInf, p.LInf)
	}
	// Division instead of multiplication: L0*LInf may overflow int64.
	if p.LInf > MaxSensitivity/p.L0 {
		return fmt.Errorf("%w: L0 = %d × LInf = %d exceeds %d; lower L0 or LInf (use a coarser fixed-point unit)", ErrSensitivity, p.L0, p.LInf, MaxSensitivity)
	}
	if p.Mechanism != Laplace && p.Mechanism != Gaussian {
		return fmt.Errorf("%w: %v; use dp.Laplace or dp.Gaussian", ErrMechanism, p.Mechanism)
	}
	return nil
}

// validateCell adds the mechanism's δ rule for a noisy cell.
func (p Params) validateCell() error {
	if err := p.Validate(); err != nil {
		return err
	}
	switch {
	case p.Mechanism == Laplace && p.Delta != 0:
		return fmt.Errorf("%w: δ = %v with Laplace; Laplace is pure ε-DP, set delta to 0 or choose dp.Gaussian", ErrDelta, p.Delta)
	case p.Mechanism == Gaussian && p.Delta == 0:
		return fmt.Errorf("%w: δ = 0 with Gaussian; set delta > 0 (e.g. 1e-6) or choose dp.Laplace", ErrDelta)
	}
	return nil
}

// validateSelection adds the δ > 0 rule of partition selection.
func (p Params) validateSelection() error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Delta == 0 {
		return fmt.Errorf("%w: δ = 0 for partition selection; set delta > 0 (e.g. 1e-6), selection cannot be pure ε-DP", ErrDelta)
	}
	return nil
}
