package decision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/pipeline/guard"
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

// ExplainTo writes ('shukei policy explain') the purposes ev gets, and the clause refusing
// each other, as tenant (ev's own when empty) with its registry entry, for data collected at
// at, under the policy versions with the activations recorded in the registry.
func ExplainTo(ctx context.Context, w io.Writer, reg *registry.Registry, ev event.Event, tenant string, at time.Time) error {
	if tenant == "" {
		tenant = ev.TenantID
	}
	t, err := reg.Get(ctx, tenant)
	if err != nil {
		if errors.Is(err, registry.ErrUnknownTenant) {
			return fmt.Errorf("%w: the event gets no purposes until the tenant is registered (shukei tenants add)", err)
		}
		return err
	}
	v, err := reg.Versions(ctx)
	if err != nil {
		return err
	}
	x, err := NewPolicyTagger(v).Explain(Category(ev.Schema), &t, at)
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(w, x.String())
	return err
}
