// Package aggregator releases differentially private cross-tenant aggregates for the
// external_aggregate purpose (docs/DESIGN.md §2, §4): event-time windows, per-tenant contribution
// bounding, un-noised partial aggregates per Kafka partition, and one release step that merges
// them, selects data-derived cells privately, adds the noise once and charges the budget ledger.
//
// The privacy unit is the tenant. Each metric of a window is one release: a tenant touches at
// most L0 of its cells and adds at most LInf to each, and the metric's ε covers all its cells.
package aggregator

import (
	"slices"
	"strings"

	"github.com/shukei/shukei/aggregator/bound"
	"github.com/shukei/shukei/anonymizer/dp"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/registry"
)

// Unit is what one tenant contributes to a cell before clamping.
type Unit int

const (
	// UnitTenant: 1 if the tenant has any event in the cell (distinct tenants).
	UnitTenant Unit = iota + 1
	// UnitUsers: the tenant's distinct (pseudonymous) users in the cell.
	UnitUsers
	// UnitEvents: the tenant's events in the cell.
	UnitEvents
)

func (u Unit) String() string {
	switch u {
	case UnitTenant:
		return "tenants"
	case UnitUsers:
		return "users"
	case UnitEvents:
		return "events"
	}
	return "unknown"
}

// Other is the released value of a dimension outside its configured domain (an edition not
// in the list).
const Other = "other"

// Dimension of a metric. A dimension whose values are all known in advance (an enumeration,
// or a configured catalogue) gives configured cells; one whose values come from the events
// (a feature id outside the catalogue) gives data-derived cells, released only if private
// partition selection keeps them.
type Dimension struct {
	Name string
	// Domain is the configured values. For a closed dimension every value is in it; for an
	// open one (Open) values outside it are data-derived.
	Domain []string
	Open   bool
	// Priority: a tenant over L0 keeps its cells in the order of this (first) dimension's
	// domain — the published catalogue, most wanted first — and a uniform sample of the rest
	// (bound.Prefer). The order is public, so the bound and the guarantee are unchanged; the
	// cells that lose contributions to bounding are then the catalogue's last ones, not the
	// most read ones.
	Priority bool
}

// Metric is one released aggregate of a window.
type Metric struct {
	Name     string
	Doc      string
	Schema   event.Schema
	Unit     Unit
	Dims     []Dimension
	L0, LInf int64
	// key returns the cell's dimension values for an accepted event, or false if the event
	// does not count for this metric.
	key func(t *decision.Tagged, edition string) ([]string, bool)
}

// DataDerived reports whether some cells of m can come from the data.
func (m *Metric) DataDerived() bool {
	return slices.ContainsFunc(m.Dims, func(d Dimension) bool { return d.Open })
}

// Plan is the metrics of every window with their privacy parameters. It is fixed for the
// life of a deployment's windows: its hash is part of every partial, release and ledger entry,
// and a partial made under another plan is never merged.
type Plan struct {
	Metrics        []*Metric
	Epsilon        float64 // per metric release
	SelectionShare float64
	SelectionDelta float64
	Mechanism      dp.Mechanism
	GaussianDelta  float64
	Editions       []string
	PolicyVersion  int
	// MaxTenantCells bounds the cells one tenant opens in one metric of one window (not part
	// of the plan's hash: it changes what is accumulated, never how it is bounded or noised).
	MaxTenantCells int
}

// statuses are the contract statuses a release splits by. Terminated is not one of them: the
// policy admits no event of a terminated tenant to external_aggregate (2(3)), so its cells
// would be structural zeros — pure noise, known to be zero by anyone who reads the policy.
var statuses = []string{registry.StatusTrial, registry.StatusBeta, registry.StatusContracted}

func enumOS() []string {
	return []string{string(event.OSWindows), string(event.OSMacOS), string(event.OSLinux), string(event.OSIOS), string(event.OSAndroid), string(event.OSChromeOS), string(event.OSOther)}
}

func enumDevice() []string {
	return []string{string(event.DeviceDesktop), string(event.DeviceMobile), string(event.DeviceTablet), string(event.DeviceOther)}
}

func enumActions() []string {
	return []string{string(event.ActionOpen), string(event.ActionView), string(event.ActionCreate), string(event.ActionUpdate), string(event.ActionDelete),
		string(event.ActionExport), string(event.ActionImport), string(event.ActionSearch), string(event.ActionShare)}
}

// NewPlan builds the metric catalogue from the configuration. The bounds (L0, LInf) are part
// of the catalogue because they are part of what a metric means: "distinct users per tenant,
// counted up to 20".
func NewPlan(c config.Aggregator, policyVersion int) (*Plan, error) {
	mech := dp.Laplace
	if c.Mechanism == "gaussian" {
		mech = dp.Gaussian
	}
	editions := append(slices.Clone(c.Editions), Other)
	features := Dimension{Name: "feature", Domain: slices.Clone(c.Features), Open: true, Priority: true}
	settings := Dimension{Name: "setting", Domain: slices.Clone(c.Settings), Open: true}
	// closed maps an id outside a closed catalogue to Other, as editions are: no cell comes
	// from the data, so no partition selection and the metric's whole ε goes to the noise.
	closed := func(d *Dimension) func(string) string {
		if !c.ClosedCatalogues || len(d.Domain) == 0 {
			return func(id string) string { return id }
		}
		d.Domain, d.Open = append(d.Domain, Other), false
		known := map[string]bool{}
		for _, v := range d.Domain {
			known[v] = true
		}
		return func(id string) string {
			if known[id] {
				return id
			}
			return Other
		}
	}
	featureID, settingKey := closed(&features), closed(&settings)
	status := Dimension{Name: "status", Domain: statuses}
	edition := Dimension{Name: "edition", Domain: editions}
	// Feature cells are split by one segment each, not by status × edition: every split
	// divides the tenants of a cell, and data-derived cells need hundreds of tenants to pass
	// private selection.
	featureBy := func(segment func(t *decision.Tagged, ed string) string) func(*decision.Tagged, string) ([]string, bool) {
		return func(t *decision.Tagged, ed string) ([]string, bool) {
			f, ok := t.Event.Data.(*event.FeatureUse)
			if !ok {
				return nil, false
			}
			return []string{featureID(f.FeatureID), segment(t, ed)}, true
		}
	}
	byStatus := func(t *decision.Tagged, _ string) string { return t.Tenant.Status }
	byEdition := func(_ *decision.Tagged, ed string) string { return ed }
	p := &Plan{
		Epsilon: c.Epsilon, SelectionShare: c.SelectionShare, SelectionDelta: c.SelectionDelta,
		Mechanism: mech, GaussianDelta: c.GaussianDelta, Editions: editions, PolicyVersion: policyVersion,
		MaxTenantCells: c.MaxTenantCells,
		Metrics: []*Metric{
			{
				Name: "feature_adoption", Doc: "distinct tenants using the feature",
				Schema: event.SchemaFeatureUseV1, Unit: UnitTenant, L0: 12, LInf: 1,
				Dims: []Dimension{features, status}, key: featureBy(byStatus),
			},
			{
				Name: "feature_active_users", Doc: "active users of the feature, each tenant's distinct users counted up to 10",
				Schema: event.SchemaFeatureUseV1, Unit: UnitUsers, L0: 12, LInf: 10,
				Dims: []Dimension{features, edition}, key: featureBy(byEdition),
			},
			{
				Name: "client_users", Doc: "users by OS and device kind (OS and device share), each tenant's distinct users counted up to 50",
				Schema: event.SchemaClientEnvV1, Unit: UnitUsers, L0: 4, LInf: 50,
				Dims: []Dimension{{Name: "os", Domain: enumOS()}, {Name: "device_kind", Domain: enumDevice()}},
				key: func(t *decision.Tagged, _ string) ([]string, bool) {
					c := t.Event.Client
					if c.OS == "" {
						return nil, false
					}
					return []string{string(c.OS), string(c.DeviceKind)}, true
				},
			},
			{
				Name: "setting_customisation", Doc: "distinct tenants reporting the setting, with and without customisation (adoption and customisation rate)",
				Schema: event.SchemaSettingsV1, Unit: UnitTenant, L0: 8, LInf: 1,
				Dims: []Dimension{settings, {Name: "customised", Domain: []string{"yes", "no"}}},
				key: func(t *decision.Tagged, _ string) ([]string, bool) {
					s, ok := t.Event.Data.(*event.Settings)
					if !ok {
						return nil, false
					}
					cust := "no"
					if s.CustomizationPresent {
						cust = "yes"
					}
					return []string{settingKey(s.SettingKey), cust}, true
				},
			},
			{
				Name: "app_access", Doc: "application accesses by action and contract status, each tenant's counted up to 10",
				Schema: event.SchemaAppAccessV1, Unit: UnitEvents, L0: 9, LInf: 10,
				Dims: []Dimension{{Name: "action", Domain: enumActions()}, status},
				key: func(t *decision.Tagged, _ string) ([]string, bool) {
					a, ok := t.Event.Data.(*event.AppAccess)
					if !ok {
						return nil, false
					}
					return []string{string(a.Action), t.Tenant.Status}, true
				},
			},
		},
	}
	if p.Epsilon == 0 {
		return p, nil // accumulation only: base windows are not released (releases use WithEpsilon)
	}
	for _, m := range p.Metrics {
		if err := p.params(m).Validate(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// edition generalises an edition outside the configured list to Other.
func (p *Plan) edition(e string) string {
	if slices.Contains(p.Editions, e) {
		return e
	}
	return Other
}

// params are the noise parameters of m's cells.
func (p *Plan) params(m *Metric) dp.Params {
	eps := p.Epsilon
	if m.DataDerived() {
		eps *= 1 - p.SelectionShare
	}
	q := dp.Params{Epsilon: eps, L0: m.L0, LInf: m.LInf, Mechanism: p.Mechanism}
	if p.Mechanism == dp.Gaussian {
		q.Delta = p.GaussianDelta
	}
	return q
}

// selection are the partition-selection parameters of m (data-derived metrics only).
func (p *Plan) selection(m *Metric) dp.Params {
	return dp.Params{Epsilon: p.Epsilon * p.SelectionShare, Delta: p.SelectionDelta, L0: m.L0, LInf: 1}
}

// Cost is what one window's release charges to the budget: the sum over its metrics
// (sequential composition: a tenant can be in every metric).
func (p *Plan) Cost() (eps, delta float64) {
	for _, m := range p.Metrics {
		eps += p.Epsilon
		if m.DataDerived() {
			delta += p.SelectionDelta
		}
		if p.Mechanism == dp.Gaussian {
			delta += p.GaussianDelta
		}
	}
	return eps, delta
}

// catalogueRank ranks a cell by its first dimension's place in the domain; values outside
// it rank after every catalogued one.
func (m *Metric) catalogueRank() func(bound.Cell) int {
	rank := map[string]int{}
	for i, v := range m.Dims[0].Domain {
		rank[v] = i
	}
	n := len(m.Dims[0].Domain)
	return func(c bound.Cell) int {
		v, _, _ := strings.Cut(string(c), "|")
		if r, ok := rank[v]; ok {
			return r
		}
		return n
	}
}

// maxBounds are the largest L0 and LInf of the plan, recorded in the ledger entry.
func (p *Plan) maxBounds() (l0, linf int64) {
	for _, m := range p.Metrics {
		l0, linf = max(l0, m.L0), max(linf, m.LInf)
	}
	return l0, linf
}

// cellKey joins dimension values; ids never contain '|' (identifier pattern).
func cellKey(vals []string) string { return strings.Join(vals, "|") }

// configured reports whether every value of the cell is in its dimension's domain, and lists
// every configured cell of m.
func (m *Metric) configured(vals []string) bool {
	for i, d := range m.Dims {
		if !slices.Contains(d.Domain, vals[i]) {
			return false
		}
	}
	return true
}

func (m *Metric) configuredCells() []string {
	cells := []string{""}
	for i, d := range m.Dims {
		var next []string
		for _, c := range cells {
			for _, v := range d.Domain {
				if i == 0 {
					next = append(next, v)
				} else {
					next = append(next, c+"|"+v)
				}
			}
		}
		cells = next
	}
	if len(m.Dims) == 0 {
		return nil
	}
	return cells
}
