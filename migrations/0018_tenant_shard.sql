-- A tenant's shard on a ClickHouse cluster (clickhouse.cluster): the shard_num of
-- system.clusters its events, marts and deletion live on, chosen once when the tenant is
-- registered (cityHash64 of its id over the shards the cluster had then), so adding a shard
-- moves no tenant: new tenants spread over every shard, existing ones stay where their rows
-- are. 0 on one server (and for a tenant registered before the cluster layout), where the
-- processor places by cityHash64 over today's shards. ClickHouse 18.16 has no
-- ADD COLUMN IF NOT EXISTS: this is the only statement.
ALTER TABLE ${db}_registry.tenants ADD COLUMN shard UInt16 DEFAULT 0;
