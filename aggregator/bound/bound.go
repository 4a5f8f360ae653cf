// Package bound limits what one tenant can contribute to a release, before any noise: the DP
// library has no notion of a tenant, so Shukei bounds contributions itself (docs/DESIGN.md §4).
// Each tenant's contributions are pre-aggregated per cell, then the tenant keeps at most L0
// cells (chosen uniformly at random when it has more) and adds at most Linf to each (clamped).
// With the tenant as the privacy unit, these two numbers are the sensitivities the noise is
// calibrated to.
package bound

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
)

// Cell names one released value: a metric and its dimensions, e.g.
// "feature_adoption|edition=standard|feature=app.record.create".
type Cell string

// ErrBounds means L0 or Linf is not a positive number.
var ErrBounds = errors.New("contribution bounds must be positive")

// Bounder collects per-tenant, per-cell totals for one release window.
type Bounder struct {
	l0, linf int64
	sums     map[string]map[Cell]int64
	rng      *rand.Rand
	rngFor   func(tenant string) *rand.Rand
	rank     func(Cell) int
}

// Prefer makes a tenant over L0 keep its cells of lowest rank first; among cells of equal rank
// that do not all fit, a uniform sample. rank must be public (a function of the cell alone,
// e.g. its feature's place in the published catalogue, the features the vendor most wants
// measured first): the kept cells then depend only on the tenant's own cells and its
// generator, as without it. It returns b.
func (b *Bounder) Prefer(rank func(Cell) int) *Bounder {
	b.rank = rank
	return b
}

// NewPerTenant is New with one generator per tenant: a tenant's sample then depends only on
// its own cells and its generator, not on which other tenants are in the window (or in the
// same Kafka partition), so neighbouring datasets differ only in that tenant's cells.
func NewPerTenant(l0, linf int64, rngFor func(tenant string) *rand.Rand) (*Bounder, error) {
	if l0 < 1 || linf < 1 {
		return nil, fmt.Errorf("%w: L0=%d Linf=%d", ErrBounds, l0, linf)
	}
	return &Bounder{l0: l0, linf: linf, sums: map[string]map[Cell]int64{}, rngFor: rngFor}, nil
}

// New returns a bounder with L0 cells a tenant and Linf a cell. rng may be nil: the sampling
// then draws from a generator seeded by crypto/rand, so which cells a tenant keeps cannot be
// predicted from the data.
func New(l0, linf int64, rng *rand.Rand) (*Bounder, error) {
	if l0 < 1 || linf < 1 {
		return nil, fmt.Errorf("%w: L0=%d Linf=%d", ErrBounds, l0, linf)
	}
	if rng == nil {
		var seed [32]byte
		if _, err := crand.Read(seed[:]); err != nil {
			return nil, err
		}
		rng = rand.New(rand.NewChaCha8(seed))
	}
	return &Bounder{l0: l0, linf: linf, sums: map[string]map[Cell]int64{}, rng: rng}, nil
}

// Add adds v (≥ 0) to the tenant's total in the cell. Totals saturate instead of
// overflowing: a tenant sending a flood cannot wrap its own total around.
func (b *Bounder) Add(tenant string, cell Cell, v int64) {
	if v <= 0 {
		return
	}
	cells := b.sums[tenant]
	if cells == nil {
		cells = map[Cell]int64{}
		b.sums[tenant] = cells
	}
	cur := cells[cell]
	if cur > b.linf { // already past the clamp: no need to grow further
		return
	}
	cells[cell] = cur + min(v, b.linf+1)
}

// Tenants is the number of tenants seen.
func (b *Bounder) Tenants() int { return len(b.sums) }

// Contribution is one tenant's bounded contribution to one cell.
type Contribution struct {
	Tenant string
	Value  int64 // in [1, Linf]
}

// Bounded returns, per cell, each contributing tenant's bounded value: at most L0 cells per
// tenant (a uniform sample without replacement when it touched more) and at most Linf each.
// Tenants and cells are visited in sorted order so that, for a given generator state, the
// result does not depend on map iteration.
func (b *Bounder) Bounded() map[Cell][]Contribution {
	out := map[Cell][]Contribution{}
	tenants := make([]string, 0, len(b.sums))
	for t := range b.sums {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	for _, t := range tenants {
		cells := make([]Cell, 0, len(b.sums[t]))
		for c := range b.sums[t] {
			cells = append(cells, c)
		}
		slices.Sort(cells)
		if int64(len(cells)) > b.l0 {
			rng := b.rng
			if b.rngFor != nil {
				rng = b.rngFor(t)
			}
			if b.rank == nil {
				// Partial Fisher-Yates: the first L0 are a uniform sample.
				for i := range int(b.l0) {
					j := i + rng.IntN(len(cells)-i)
					cells[i], cells[j] = cells[j], cells[i]
				}
			} else {
				// A uniform permutation, then a stable sort by rank: the lowest ranks first,
				// a uniform order among equal ranks.
				rng.Shuffle(len(cells), func(i, j int) { cells[i], cells[j] = cells[j], cells[i] })
				slices.SortStableFunc(cells, func(x, y Cell) int { return b.rank(x) - b.rank(y) })
			}
			cells = cells[:b.l0]
		}
		for _, c := range cells {
			out[c] = append(out[c], Contribution{Tenant: t, Value: min(b.sums[t][c], b.linf)})
		}
	}
	return out
}

// SeedFrom is a helper for deterministic tests and replays: a generator from a 64-bit seed.
func SeedFrom(seed uint64) *rand.Rand {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.New(rand.NewChaCha8(s))
}
