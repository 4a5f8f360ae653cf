-- Tenants being deleted (docs/promises.md 8 and 16). A deletion names the tenant in no statement
-- it sends: ClickHouse 18.16 keeps every mutation's text in ZooKeeper, and system.zookeeper
-- shows it to any user, so ALTER … DELETE WHERE tenant_id = '<tenant>' would name a deleted
-- tenant on every node. Deletions run ALTER … DELETE WHERE tenant_id IN (SELECT id FROM this
-- table) instead, each replica reading its own copy when it applies the mutation; a row lives
-- here from the start of a deletion until the deletion is verified on every replica, and is then
-- removed by its ticket (a random token). The column is id, not tenant_id: the deletion's own
-- scan of the tables holding a tenant's rows does not count it.
CREATE TABLE IF NOT EXISTS ${db}_registry.deleting (
    id     String,
    ticket String,
    since  DateTime
) ENGINE = ReplacingMergeTree
ORDER BY (ticket, id);
