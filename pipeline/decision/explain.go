package decision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/pipeline/guard"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

// explainLimits are an explanation's event limits: explaining is about the policy, not the
// clock, so any past event may be explained.
var explainLimits = event.Limits{MaxAge: 100 * 365 * 24 * time.Hour, MaxSkew: 24 * time.Hour}

// InspectToExplain reads an event to be explained ('shukei policy explain') as the pipeline
// reads it — decode, validate, the input-data guard (guard.Inspect) — whatever its age. An
// event the pipeline would reject is an error: the policy never sees it.
func InspectToExplain(raw []byte, now time.Time) (event.Event, error) {
	ev, rej := guard.Inspect(raw, now, explainLimits)
	if rej != nil {
		return ev, fmt.Errorf("the event is rejected before the policy sees it: %w", rej)
	}
	return ev, nil
}

// ExplainEvent explains the purposes ev gets, and the clause refusing each other, as tenant
// (ev's own when empty) with its registry entry, for data collected at at, under the policy
// versions with the activations recorded in the registry.
func ExplainEvent(ctx context.Context, reg *registry.Registry, ev event.Event, tenant string, at time.Time) (policy.Explanation, error) {
	if tenant == "" {
		tenant = ev.TenantID
	}
	t, err := reg.Get(ctx, tenant)
	if err != nil {
		if errors.Is(err, registry.ErrUnknownTenant) {
			return policy.Explanation{}, fmt.Errorf("%w: the event gets no purposes until the tenant is registered (shukei tenants add)", err)
		}
		return policy.Explanation{}, err
	}
	v, err := reg.Versions(ctx)
	if err != nil {
		return policy.Explanation{}, err
	}
	return NewPolicyTagger(v).Explain(Category(ev.Schema), &t, at)
}
