package registry

// TenantOfToken looks an ingest token's hash up in the current snapshot, so the collector sees
// tokens issued or revoked within one refresh.
func (c *Cache) TenantOfToken(hash string) (string, bool) {
	return c.Snapshot().TenantOfToken(hash)
}
