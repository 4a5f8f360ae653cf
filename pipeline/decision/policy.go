package decision

import (
	"sync"
	"time"

	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

// ConsentToPolicy is the purpose name under which the registry records a tenant's consent to a
// policy version as a whole (clause 4), as opposed to consent to one purpose (3(2)-1).
const ConsentToPolicy = "policy"

// PolicyTagger tags with the versioned policy. Registry snapshots hand out the same *Tenant
// until the tenant changes, so each tenant is converted once and the hot path stays free of
// allocations.
type PolicyTagger struct {
	V     *policy.Versions
	cache sync.Map // *registry.Tenant → *policy.Tenant
}

// NewPolicyTagger wraps the policy versions.
func NewPolicyTagger(v *policy.Versions) *PolicyTagger { return &PolicyTagger{V: v} }

// Tag implements Tagger.
func (p *PolicyTagger) Tag(category string, t *registry.Tenant, at time.Time) (uint16, uint16) {
	cat, err := policy.ParseCategory(category)
	if err != nil {
		return 0, 0
	}
	d := p.V.Tag(cat, *p.tenant(t), at)
	return uint16(d.Purposes), uint16(d.Version)
}

// Explain is the policy's explanation for a category, tenant and time.
func (p *PolicyTagger) Explain(category string, t *registry.Tenant, at time.Time) (policy.Explanation, error) {
	cat, err := policy.ParseCategory(category)
	if err != nil {
		return policy.Explanation{}, err
	}
	return p.V.Explain(cat, *p.tenant(t), at), nil
}

func (p *PolicyTagger) tenant(t *registry.Tenant) *policy.Tenant {
	if v, ok := p.cache.Load(t); ok {
		return v.(*policy.Tenant)
	}
	pt := PolicyTenant(t)
	p.cache.Store(t, pt)
	return pt
}

// PolicyTenant converts a registry entry into the facts the policy decides on. Each consent
// row of the registry is one (purpose or whole-policy) consent under a version; a later
// withdrawal row ends it.
func PolicyTenant(t *registry.Tenant) *policy.Tenant {
	status, err := policy.ParseStatus(t.Status)
	if err != nil {
		status = policy.StatusUnknown // unknown status: the policy grants nothing
	}
	out := &policy.Tenant{ID: t.ID, Status: status, Edition: t.Edition, SizeBand: t.SizeBand, ContractEnd: t.ContractEnd}
	open := map[[2]any]int{} // (purpose, version) → index of the consent in force
	for _, c := range t.Consents {
		key := [2]any{c.Purpose, c.PolicyVersion}
		if !c.Given {
			if i, ok := open[key]; ok {
				out.Consents[i].Withdrawn = c.At
				delete(open, key)
			}
			continue
		}
		pc := policy.Consent{Version: c.PolicyVersion, At: c.At}
		if c.Purpose == ConsentToPolicy {
			pc.Policy = true
		} else if pp, err := policy.ParsePurpose(c.Purpose); err == nil {
			pc.Purposes = policy.SetOf(pp)
		} else {
			continue
		}
		open[key] = len(out.Consents)
		out.Consents = append(out.Consents, pc)
	}
	return out
}
