package registry

import (
	"context"
	"fmt"
	"time"
)

// TenantOfToken looks an ingest token's hash up in the current snapshot, so the collector sees
// tokens issued or revoked within one refresh.
func (c *Cache) TenantOfToken(hash string) (string, bool) {
	return c.Snapshot().TenantOfToken(hash)
}

// DestroyKeys deletes a tenant's pseudonymisation root (crypto-shredding): pseudonyms already
// stored can no longer be linked to anything, and no new ones can be made. Running stages
// drop the key from memory at their next refresh.
func (r *Registry) DestroyKeys(ctx context.Context, tenant string) error {
	if err := r.conn.Exec(ctx, "ALTER TABLE "+r.db+"_keys.pseudonym_roots DELETE WHERE tenant_id = ?", tenant); err != nil {
		return fmt.Errorf("destroy pseudonymisation root of %s: %w", tenant, err)
	}
	// Mutations are asynchronous; wait until the root is gone so the caller can rely on it.
	for range 100 {
		var n uint64
		if err := r.conn.QueryRow(ctx, "SELECT count() FROM "+r.db+"_keys.pseudonym_roots WHERE tenant_id = ?", tenant).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the pseudonymisation root of %s is still present after 10s", tenant)
}

// Silent reports whether the registry holds tenant as terminated (by status, or past its
// contract end): a collector then refuses even the tokens configured for it by hand.
func (c *Cache) Silent(tenant string) bool {
	t, ok := c.Snapshot().Lookup(tenant)
	return ok && t.Silent(time.Now())
}
