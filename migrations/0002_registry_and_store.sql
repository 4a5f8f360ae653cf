-- The tenant registry (DESIGN.md §1, §2): contract status, edition and size band are part of
-- every event's context; consents decide which policy version and purposes apply; ingest
-- tokens are kept only as SHA-256 hashes. ReplacingMergeTree keeps the newest row per tenant
-- (read with FINAL); deletion writes a tombstone row (deleted = 1) and the lifecycle job drops
-- the rest.
CREATE TABLE IF NOT EXISTS ${db}.tenants (
    tenant_id        String,
    status           Enum8('trial' = 1, 'beta' = 2, 'contracted' = 3, 'terminated' = 4),
    edition          String,
    size_band        String,
    contract_end     Date,
    token_hashes     Array(String),
    deleted          UInt8,
    updated_at       DateTime
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY tenant_id;

-- One row per consent given (or withdrawn) by a tenant for a purpose under a policy version.
CREATE TABLE IF NOT EXISTS ${db}.consents (
    tenant_id        String,
    purpose          String,
    policy_version   UInt16,
    given            UInt8,
    at               DateTime,
    recorded_at      DateTime
) ENGINE = MergeTree
ORDER BY (tenant_id, purpose, policy_version, at);

-- Per-tenant pseudonymisation roots, encrypted under the master key (AES-256-GCM). The monthly
-- key is derived from the root; destroying the root (deleting the row) makes every pseudonym
-- of the tenant unlinkable (crypto-shredding).
CREATE TABLE IF NOT EXISTS ${db}.pseudonym_roots (
    tenant_id        String,
    root_enc         String,
    created_at       DateTime
) ENGINE = ReplacingMergeTree(created_at)
ORDER BY tenant_id;

-- The purpose-tagged event store (internal). Partitioned by the batch's ingest month: every
-- batch lands in one partition, so each insert is one atomic part, and the store's high-water
-- mark per Kafka partition (max kafka_offset) is exact after any crash.
CREATE TABLE IF NOT EXISTS ${db}.events (
    event_id            UUID,
    tenant_id           String,
    occurred_at         DateTime,
    ingested_at         DateTime,
    category            Enum8('tenant_profile' = 1, 'client_env' = 2, 'app_access' = 3, 'feature_use' = 4, 'settings' = 5, 'operation' = 6),
    schema_version      UInt8,
    source              String,
    user_pseudonym      FixedString(16),
    os                  String,
    os_major            UInt16,
    device_kind         String,
    contract_status     Enum8('trial' = 1, 'beta' = 2, 'contracted' = 3, 'terminated' = 4),
    edition             String,
    size_band           String,
    purposes            UInt16,
    policy_version      UInt16,
    app_id              String,
    action              String,
    feature_id          String,
    use_count           UInt32,
    records_registered  UInt32,
    setting_key         String,
    setting_value       String,
    customization_present UInt8,
    customization_count UInt32,
    operation_id        String,
    result_code         String,
    request_id          String,
    user_count          UInt32,
    organization_count  UInt32,
    client_kind         String,
    browser             String,
    kafka_partition     UInt16,
    kafka_offset        UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMM(ingested_at)
ORDER BY (tenant_id, occurred_at, event_id);

-- Every message of the raw topic that was not stored, with its reason: the store and this
-- table together account for every offset exactly once. Suspected input data keeps no payload,
-- only a keyed hash of it; other rejections keep the payload for replay.
-- Each processor batch ends with one insert here holding its rejections and a 'checkpoint'
-- row per Kafka partition at the batch's last offset: the events of a batch are inserted
-- first, so max(kafka_offset) here is the offset below which everything is accounted for.
CREATE TABLE IF NOT EXISTS ${db}.rejections (
    rejected_at         DateTime,
    kafka_partition     UInt16,
    kafka_offset        UInt64,
    reason              String,
    class               Enum8('input_data' = 1, 'malformed' = 2, 'policy' = 3, 'duplicate' = 4, 'checkpoint' = 5),
    field               String,
    tenant_id           String,
    schema              String,
    event_id            String,
    payload_hmac        String,
    payload             String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(rejected_at)
ORDER BY (kafka_partition, kafka_offset);
