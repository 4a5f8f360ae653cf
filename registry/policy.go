package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/shukei/shukei/policy"
)

// Activation is one policy version put in force.
type Activation struct {
	Version    int
	At         time.Time
	By         string
	RecordedAt time.Time
}

// Activations returns the recorded activations, oldest version first. A version recorded
// twice keeps its first record: an activation time cannot move.
func (r *Registry) Activations(ctx context.Context) ([]Activation, error) {
	rows, err := r.conn.Query(ctx, "SELECT version, at, activated_by, recorded_at FROM "+r.db+"_registry.policy_activations ORDER BY version, recorded_at")
	if err != nil {
		return nil, fmt.Errorf("read policy activations: %w", err)
	}
	defer rows.Close()
	var out []Activation
	seen := map[int]bool{}
	for rows.Next() {
		var v uint16
		var a Activation
		if err := rows.Scan(&v, &a.At, &a.By, &a.RecordedAt); err != nil {
			return nil, err
		}
		a.Version = int(v)
		if !seen[a.Version] {
			seen[a.Version] = true
			out = append(out, a)
		}
	}
	return out, rows.Err()
}

// Versions returns the embedded policy versions with the recorded activations applied.
func (r *Registry) Versions(ctx context.Context) (*policy.Versions, error) {
	vs, err := policy.Embedded()
	if err != nil {
		return nil, err
	}
	acts, err := r.Activations(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range acts {
		if err := vs.Activate(a.Version, a.At); err != nil {
			return nil, fmt.Errorf("recorded activation of policy v%d: %w", a.Version, err)
		}
	}
	return vs, nil
}

// ActivatePolicy records that version is in force from at. It must be a version built into
// this binary, the next one in order, and at must not be in the past (events already tagged
// stay as they were). Activating the same version at the same time again changes nothing.
func (r *Registry) ActivatePolicy(ctx context.Context, version int, at time.Time, by string) (Activation, error) {
	vs, err := r.Versions(ctx)
	if err != nil {
		return Activation{}, err
	}
	at = at.UTC().Truncate(time.Second)
	if prev, ok := vs.Activation(version); ok && version > 1 {
		if !prev.Equal(at) {
			return Activation{}, fmt.Errorf("policy v%d was activated at %s; an activation time cannot move (events were tagged by it)", version, prev.Format(time.RFC3339))
		}
		return Activation{Version: version, At: prev}, nil
	}
	now := r.now()
	if at.Before(now.Add(-time.Minute)) {
		return Activation{}, fmt.Errorf("activation time %s is in the past: events already processed were tagged under the version then in force", at.Format(time.RFC3339))
	}
	if err := vs.Activate(version, at); err != nil {
		return Activation{}, err
	}
	b, err := r.conn.PrepareBatch(ctx, "INSERT INTO "+r.db+"_registry.policy_activations (version, at, activated_by, recorded_at)")
	if err != nil {
		return Activation{}, err
	}
	if err := b.Append(uint16(version), at, by, now); err != nil {
		return Activation{}, err
	}
	if err := b.Send(); err != nil {
		return Activation{}, fmt.Errorf("record the activation of policy v%d: %w", version, err)
	}
	return Activation{Version: version, At: at, By: by, RecordedAt: now}, nil
}
