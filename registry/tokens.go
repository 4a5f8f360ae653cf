package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// TenantOfToken looks an ingest token's hash up in the current snapshot, so the collector sees
// tokens issued or revoked within one refresh.
func (c *Cache) TenantOfToken(hash string) (string, bool) {
	return c.Snapshot().TenantOfToken(hash)
}

// MarkDeleting records tenants as being deleted (<db>_registry.deleting) under a new random
// ticket, which Unmark removes. Deletions name the tenants they delete in no statement they send
// (DeletingTenants): ClickHouse 18.16 keeps every mutation's text in ZooKeeper, readable by any
// user through system.zookeeper. On a cluster the caller waits until every replica holds the
// marks (Marked) before deleting: each replica reads its own copy when it applies a mutation.
func (r *Registry) MarkDeleting(ctx context.Context, ids []string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	ticket := hex.EncodeToString(b[:])
	batch, err := r.conn.PrepareBatch(ctx, "INSERT INTO "+r.db+"_registry.deleting (id, ticket, since)")
	if err != nil {
		return "", fmt.Errorf("mark the tenants being deleted: %w", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for _, id := range ids {
		if err := batch.Append(id, ticket, now); err != nil {
			return "", fmt.Errorf("mark the tenants being deleted: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return "", fmt.Errorf("mark the tenants being deleted: %w", err)
	}
	return ticket, nil
}

// Marked counts, on conn (any replica), the marks of ticket.
func (r *Registry) Marked(ctx context.Context, conn driver.Conn, ticket string) (uint64, error) {
	var n uint64
	err := conn.QueryRow(ctx, "SELECT count() FROM "+r.db+"_registry.deleting WHERE ticket = ?", ticket).Scan(&n)
	return n, err
}

// Unmark removes the marks of ticket, once their deletion is verified.
func (r *Registry) Unmark(ctx context.Context, ticket string) error {
	if err := r.conn.Exec(ctx, "ALTER TABLE "+r.db+"_registry.deleting DELETE WHERE ticket = ?", ticket); err != nil {
		return fmt.Errorf("unmark the deleted tenants: %w", err)
	}
	return nil
}

// DeletingTenants is the condition of a deletion of every tenant being deleted (MarkDeleting),
// which names none of them.
func DeletingTenants(db string) string {
	return "tenant_id IN (SELECT id FROM " + db + "_registry.deleting)"
}

// DestroyKeys deletes a tenant's pseudonymisation root (crypto-shredding): pseudonyms already
// stored can no longer be linked to anything, and no new ones can be made. Running stages
// drop the key from memory at their next refresh. The tenant is marked as being deleted here
// unless the caller marked it (retention does, and waits for every replica first); the marks
// made here are removed once the root is gone.
func (r *Registry) DestroyKeys(ctx context.Context, tenant string) (err error) {
	var marked uint64
	if err := r.conn.QueryRow(ctx, "SELECT count() FROM "+r.db+"_registry.deleting WHERE id = ?", tenant).Scan(&marked); err != nil {
		return fmt.Errorf("destroy pseudonymisation root of %s: %w", tenant, err)
	}
	if marked == 0 {
		ticket, err := r.MarkDeleting(ctx, []string{tenant})
		if err != nil {
			return err
		}
		defer func() {
			// A mark left behind names the tenant: its removal failing is the call's error.
			if uerr := r.Unmark(context.WithoutCancel(ctx), ticket); uerr != nil && err == nil {
				err = uerr
			}
		}()
	}
	if err := r.conn.Exec(ctx, "ALTER TABLE "+r.db+"_keys.pseudonym_roots DELETE WHERE "+DeletingTenants(r.db)); err != nil {
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
