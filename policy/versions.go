package policy

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Tenant is what tagging needs to know about a tenant: a row of the tenant
// registry, as of the time of tagging.
type Tenant struct {
	ID     string
	Status Status
	// Edition and SizeBand are the tenant's marketing segments (3(1)-3). They do
	// not change which purposes an event serves; they travel with it.
	Edition  string
	SizeBand string
	// ContractEnd is when the contract (or trial) ends or ended; zero while
	// open-ended. From then on the tenant counts as terminated (2(3)).
	ContractEnd time.Time
	Consents    []Consent
}

// Consent is one consent the tenant recorded.
type Consent struct {
	Version int // the policy version the consent refers to
	// Policy: consent to policy version Version as a whole, for a version that
	// requires it (clause 4).
	Policy bool
	// Purposes the tenant consented to under policy version Version, for
	// purposes that require it (3(2)-1). Consent to a version does not imply
	// consent to any purpose, nor the other way round.
	Purposes Set
	// At is when the consent was recorded. It counts for data collected at or
	// after At only: a consent never widens the purposes of data collected
	// before it. A zero At counts as no consent.
	At time.Time
	// Withdrawn is when the tenant withdrew the consent; zero while in force.
	Withdrawn time.Time
}

func (c *Consent) inForce(at time.Time) bool {
	return !c.At.IsZero() && !c.At.After(at) && (c.Withdrawn.IsZero() || at.Before(c.Withdrawn))
}

// statusAt is the status that decides purposes for data collected at at.
func (t *Tenant) statusAt(at time.Time) Status {
	if !t.Status.Valid() {
		return StatusUnknown
	}
	if t.Status == Terminated || !t.ContractEnd.IsZero() && !at.Before(t.ContractEnd) {
		return Terminated
	}
	return t.Status
}

// consentedTo reports whether a consent to policy version v is in force at at.
func (t *Tenant) consentedTo(v int, at time.Time) bool {
	for i := range t.Consents {
		c := &t.Consents[i]
		if c.Policy && c.Version == v && c.inForce(at) {
			return true
		}
	}
	return false
}

// consentedPurposes returns the purposes of want that the tenant consented to
// under policy version v, in force at at.
func (t *Tenant) consentedPurposes(v int, want Set, at time.Time) Set {
	var got Set
	for i := range t.Consents {
		c := &t.Consents[i]
		if c.Version == v && c.Purposes&want != 0 && c.inForce(at) {
			got |= c.Purposes & want
		}
	}
	return got
}

// Decision is which purposes an event may serve.
type Decision struct {
	Version  int // the policy version the event was tagged under
	Purposes Set // the tag; empty: keep the event for no purpose
	// Refused says, for each purpose not in Purposes, which rule refused it.
	// Tag leaves it nil (it allocates nothing); Explain fills it.
	Refused map[Purpose]Refusal
}

// Versions is the sequence of policy versions 1..n with their activation
// times. Tag and Explain are safe for concurrent use with each other and with
// Activate.
type Versions struct {
	mu  sync.Mutex // serialises Activate
	cur atomic.Pointer[snapshot]
}

// snapshot is immutable; Activate replaces it.
type snapshot struct {
	vs     []compiled  // index i holds version i+1
	from   []time.Time // activation time of each version; from[0] is unused (v1 is in force from the beginning)
	active int         // versions 1..active are activated (activation is in version order)
}

// compiled is one version, precomputed for Tag.
type compiled struct {
	p *Policy
	// grants[category][status] is the set of purposes whose cell is not none
	// and whose rule applies to the status, before purpose consent.
	grants [numCategories + 1][numStatuses]Set
	// needConsent is the set of purposes that need the tenant's consent.
	needConsent Set
}

func compile(p *Policy) compiled {
	c := compiled{p: p}
	for pur, r := range p.Purposes {
		if r.Consent {
			c.needConsent = c.needConsent.Add(pur)
		}
	}
	for _, cat := range Categories() {
		for _, st := range []Status{Trial, Beta, Contracted} {
			for _, pur := range Purposes() {
				if p.Cell(cat, pur) != None && p.Purposes[pur].Applies(st) {
					c.grants[cat][st] = c.grants[cat][st].Add(pur)
				}
			}
		}
	}
	return c
}

// grant is the tag of an event of category cat from a tenant of effective
// status st under this version.
func (c *compiled) grant(cat Category, st Status, t *Tenant, at time.Time) Set {
	if cat > numCategories || st >= numStatuses {
		return 0
	}
	set := c.grants[cat][st]
	if need := set & c.needConsent; need != 0 {
		set = set&^need | t.consentedPurposes(c.p.Version, need, at)
	}
	return set
}

// NewVersions returns the versions ps, which must be exactly versions 1..n
// (in any order), each valid. Version 1 is in force from the beginning; later
// versions are in force once activated (Activate).
func NewVersions(ps ...*Policy) (*Versions, error) {
	if len(ps) == 0 {
		return nil, fmt.Errorf("%w: no policy versions", ErrInvalid)
	}
	if slices.Contains(ps, nil) {
		return nil, fmt.Errorf("%w: nil policy", ErrInvalid)
	}
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b *Policy) int { return a.Version - b.Version })
	s := &snapshot{vs: make([]compiled, len(ps)), from: make([]time.Time, len(ps)), active: 1}
	for i, p := range ps {
		if p.Version != i+1 {
			return nil, fmt.Errorf("%w: versions must be 1..%d without gaps or repeats, found v%d where v%d belongs", ErrInvalid, len(ps), p.Version, i+1)
		}
		if err := p.Validate(); err != nil {
			return nil, err
		}
		s.vs[i] = compile(p)
	}
	if err := checkConsentCarryOver(ps); err != nil {
		return nil, err
	}
	v := &Versions{}
	v.cur.Store(s)
	return v, nil
}

// checkConsentCarryOver rejects a version that needs no consent but grants
// every tenant something that an earlier version granted only with consent: a
// tenant who never consented would get it by a mere notice (clause 4).
func checkConsentCarryOver(ps []*Policy) error {
	level := func(p *Policy, cat Category, pur Purpose, st Status) Granularity {
		if !p.Purposes[pur].Applies(st) {
			return None
		}
		return p.Cell(cat, pur)
	}
	var probs problems
	for n, pn := range ps {
		if n == 0 || pn.RequiresConsent {
			continue
		}
		b := n - 1 // the newest earlier version that applies to every tenant
		for ps[b].RequiresConsent {
			b--
		}
		for _, cat := range Categories() {
			for _, pur := range Purposes() {
				for m := b + 1; m < n; m++ {
					widened := false
					for _, st := range []Status{Trial, Beta, Contracted} {
						ln, lb, lm := level(pn, cat, pur, st), level(ps[b], cat, pur, st), level(ps[m], cat, pur, st)
						widened = widened || ln > lb && lm > lb
					}
					if widened {
						probs.add(fmt.Sprintf("v%d: matrix.%s.%s", pn.Version, cat, pur),
							"v%d needs no consent but widens the cell beyond v%d, as v%d did only with consent (4); set requires_consent: true or keep the cell as in v%d",
							pn.Version, ps[b].Version, ps[m].Version, ps[b].Version)
						break
					}
				}
			}
		}
	}
	if len(probs) > 0 {
		return &ValidationError{Problems: probs}
	}
	return nil
}

// Activate puts version in force from at. Version 1 is in force from the
// beginning; each later version must be activated in order, no earlier than
// its predecessor. Activation times are history (events were tagged by them),
// so activating a version again is allowed only with the same time.
func (v *Versions) Activate(version int, at time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.cur.Load()
	switch {
	case version == 1:
		return fmt.Errorf("policy v1 is in force from the beginning; nothing to activate")
	case version < 1 || version > len(s.vs):
		return fmt.Errorf("no policy v%d (known: v1..v%d)", version, len(s.vs))
	case at.IsZero():
		return fmt.Errorf("activate policy v%d: no activation time", version)
	case version <= s.active:
		if s.from[version-1].Equal(at) {
			return nil
		}
		return fmt.Errorf("policy v%d was activated at %s; an activation time cannot move (events were tagged by it)", version, s.from[version-1].Format(time.RFC3339))
	case version > s.active+1:
		return fmt.Errorf("activate policy v%d first: versions are activated in order", s.active+1)
	case version > 2 && at.Before(s.from[version-2]):
		return fmt.Errorf("policy v%d cannot be activated at %s, before v%d (%s)", version, at.Format(time.RFC3339), version-1, s.from[version-2].Format(time.RFC3339))
	}
	n := &snapshot{vs: s.vs, from: slices.Clone(s.from), active: version}
	n.from[version-1] = at
	v.cur.Store(n)
	return nil
}

// Len returns the number of versions, n.
func (v *Versions) Len() int { return len(v.cur.Load().vs) }

// Policy returns version n, or nil if there is none.
func (v *Versions) Policy(n int) *Policy {
	s := v.cur.Load()
	if n < 1 || n > len(s.vs) {
		return nil
	}
	return s.vs[n-1].p
}

// Activation returns when version n was activated: the zero time and true for
// version 1, false for a version not activated (or unknown).
func (v *Versions) Activation(n int) (time.Time, bool) {
	s := v.cur.Load()
	if n < 1 || n > s.active {
		return time.Time{}, false
	}
	return s.from[n-1], true
}

// InForce returns the newest version activated at or before at, whether or not
// it applies to a given tenant: the version the vendor publishes at that time.
func (v *Versions) InForce(at time.Time) *Policy {
	s := v.cur.Load()
	for i := s.active - 1; i > 0; i-- {
		if !at.Before(s.from[i]) {
			return s.vs[i].p
		}
	}
	return s.vs[0].p
}

// Tag decides which purposes an event of category cat from tenant t, collected
// at at, may serve. It picks the newest version in force at at that applies to
// the tenant (one that requires consent applies only if the tenant's consent
// to it was in force at at), then grants the purposes whose cell is not none,
// whose rule applies to the tenant's status, and whose consent (if any) the
// tenant gave under that version, in force at at.
//
// at is when the data was collected (the event's occurred_at, no later than the
// processing time), so that a consent given later never widens the purposes
// of data collected before it. Tag allocates nothing; Decision.Refused is nil.
func (v *Versions) Tag(cat Category, t Tenant, at time.Time) Decision {
	s := v.cur.Load()
	st := t.statusAt(at)
	for i := s.active - 1; i >= 0; i-- {
		if i > 0 && at.Before(s.from[i]) {
			continue
		}
		c := &s.vs[i]
		if c.p.RequiresConsent && !t.consentedTo(c.p.Version, at) {
			continue
		}
		return Decision{Version: c.p.Version, Purposes: c.grant(cat, st, &t, at)}
	}
	return Decision{Version: 1} // unreachable: v1 needs no consent and is always in force
}

//go:embed v*.yaml
var embedded embed.FS

// Embedded returns the policy versions built into this binary (v1.yaml, ...),
// with only version 1 in force: activate later versions from configuration.
func Embedded() (*Versions, error) {
	names, err := fs.Glob(embedded, "v*.yaml")
	if err != nil {
		return nil, err
	}
	ps := make([]*Policy, 0, len(names))
	for _, name := range names {
		b, err := embedded.ReadFile(name)
		if err != nil {
			return nil, err
		}
		p, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("embedded %s: %w", name, err)
		}
		if want := fmt.Sprintf("v%d.yaml", p.Version); name != want {
			return nil, fmt.Errorf("%w: embedded %s holds version %d; name it %s", ErrInvalid, name, p.Version, want)
		}
		ps = append(ps, p)
	}
	return NewVersions(ps...)
}
