-- Deleted tenants (docs/promises.md 8): only a keyed hash of the id (decision.TenantTombstone),
-- never the id, so that a deleted tenant's events still in Kafka are refused and keep nothing —
-- no payload, no tenant id — and the deletion stays whole. No tenant_id column: retention's
-- table scan rightly finds nothing of the tenant here.
CREATE TABLE IF NOT EXISTS ${db}.deleted_tenants (
    tombstone  String,
    deleted_at DateTime
) ENGINE = ReplacingMergeTree
ORDER BY tombstone;
