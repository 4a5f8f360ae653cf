-- Purpose marts (DESIGN.md §2, §5): one database per purpose, holding only what the policy's
-- matrix lets that purpose see (schemas/policy/v1.yaml), filled from the event store by
-- materialised views as each batch is inserted. Each view selects the rows whose purpose bit
-- is set (support=1, service_improvement=2, marketing=4, follow_up=8, interview_selection=16,
-- external_consented=64) and only the columns the granularity allows: event level for
-- support (pseudonymous users), per-tenant daily summaries with user counts as uniq sketches
-- for the others (no per-user rows). The k-tenants threshold is applied by the query service
-- on every read. The marts are tables, not views over the internal database, so a purpose's
-- read-only user limited to its own database can read them.

-- support: event-level traces of operations, client environment and app access.
CREATE TABLE IF NOT EXISTS ${db}_support.trace (
    occurred_at      DateTime,
    tenant_id        String,
    category         String,
    user_pseudonym   FixedString(16),
    os               String,
    os_major         UInt16,
    device_kind      String,
    app_id           String,
    action           String,
    operation_id     String,
    result_code      String,
    request_id       String,
    client_kind      String,
    browser          String,
    event_id         UUID
) ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, occurred_at);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_support.trace_mv TO ${db}_support.trace AS
SELECT occurred_at, tenant_id, toString(category) AS category, user_pseudonym, os, os_major, device_kind,
       app_id, action, operation_id, result_code, request_id, client_kind, browser, event_id
FROM ${db}.events
WHERE bitAnd(purposes, 1) != 0;

-- service_improvement: feature and app use per day, edition and tenant.
CREATE TABLE IF NOT EXISTS ${db}_service_improvement.feature_daily (
    day              Date,
    edition          String,
    category         String,
    feature          String,
    tenant_id        String,
    users            AggregateFunction(uniq, FixedString(16)),
    uses             AggregateFunction(sum, UInt64),
    events           AggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, edition, category, feature, tenant_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_service_improvement.feature_daily_mv TO ${db}_service_improvement.feature_daily AS
SELECT toDate(occurred_at) AS day, edition, toString(category) AS category,
       if(category = 'feature_use', feature_id, app_id) AS feature, tenant_id,
       uniqState(user_pseudonym) AS users,
       sumState(toUInt64(if(category = 'feature_use', use_count, 1))) AS uses,
       sumState(toUInt64(1)) AS events
FROM ${db}.events
WHERE bitAnd(purposes, 2) != 0 AND category IN ('feature_use', 'app_access')
GROUP BY day, edition, category, feature, tenant_id;

-- marketing: activity by segment (contract status, edition, size band) per day and tenant.
CREATE TABLE IF NOT EXISTS ${db}_marketing.activity_daily (
    day              Date,
    contract_status  String,
    edition          String,
    size_band        String,
    category         String,
    feature          String,
    tenant_id        String,
    users            AggregateFunction(uniq, FixedString(16)),
    uses             AggregateFunction(sum, UInt64),
    events           AggregateFunction(sum, UInt64),
    user_count       AggregateFunction(max, UInt32)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, contract_status, edition, size_band, category, feature, tenant_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_marketing.activity_daily_mv TO ${db}_marketing.activity_daily AS
SELECT toDate(occurred_at) AS day, toString(contract_status) AS contract_status, edition, size_band,
       toString(category) AS category,
       multiIf(category = 'feature_use', feature_id, category = 'app_access', app_id, '') AS feature, tenant_id,
       uniqState(user_pseudonym) AS users,
       sumState(toUInt64(if(category = 'feature_use', use_count, 1))) AS uses,
       sumState(toUInt64(1)) AS events,
       maxState(user_count) AS user_count
FROM ${db}.events
WHERE bitAnd(purposes, 4) != 0 AND category IN ('feature_use', 'app_access', 'tenant_profile')
GROUP BY day, contract_status, edition, size_band, category, feature, tenant_id;

-- follow_up, interview_selection, external_consented: per-tenant daily summaries.
CREATE TABLE IF NOT EXISTS ${db}_follow_up.tenant_daily (
    day              Date,
    tenant_id        String,
    contract_status  String,
    edition          String,
    size_band        String,
    category         String,
    item             String,
    users            AggregateFunction(uniq, FixedString(16)),
    uses             AggregateFunction(sum, UInt64),
    events           AggregateFunction(sum, UInt64),
    last_seen        AggregateFunction(max, DateTime),
    user_count       AggregateFunction(max, UInt32),
    customizations   AggregateFunction(max, UInt32)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, category, item);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_follow_up.tenant_daily_mv TO ${db}_follow_up.tenant_daily AS
SELECT toDate(occurred_at) AS day, tenant_id, toString(contract_status) AS contract_status, edition, size_band,
       toString(category) AS category,
       multiIf(category = 'feature_use', feature_id, category = 'app_access', app_id, category = 'settings', setting_key, '') AS item,
       uniqState(user_pseudonym) AS users,
       sumState(toUInt64(if(category = 'feature_use', use_count, 1))) AS uses,
       sumState(toUInt64(1)) AS events,
       maxState(occurred_at) AS last_seen,
       maxState(user_count) AS user_count,
       maxState(customization_count) AS customizations
FROM ${db}.events
WHERE bitAnd(purposes, 8) != 0
GROUP BY day, tenant_id, contract_status, edition, size_band, category, item;

CREATE TABLE IF NOT EXISTS ${db}_interview_selection.tenant_daily (
    day              Date,
    tenant_id        String,
    contract_status  String,
    edition          String,
    size_band        String,
    category         String,
    item             String,
    users            AggregateFunction(uniq, FixedString(16)),
    uses             AggregateFunction(sum, UInt64),
    events           AggregateFunction(sum, UInt64),
    last_seen        AggregateFunction(max, DateTime),
    user_count       AggregateFunction(max, UInt32),
    customizations   AggregateFunction(max, UInt32)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, category, item);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_interview_selection.tenant_daily_mv TO ${db}_interview_selection.tenant_daily AS
SELECT toDate(occurred_at) AS day, tenant_id, toString(contract_status) AS contract_status, edition, size_band,
       toString(category) AS category,
       multiIf(category = 'feature_use', feature_id, category = 'app_access', app_id, category = 'settings', setting_key, '') AS item,
       uniqState(user_pseudonym) AS users,
       sumState(toUInt64(if(category = 'feature_use', use_count, 1))) AS uses,
       sumState(toUInt64(1)) AS events,
       maxState(occurred_at) AS last_seen,
       maxState(user_count) AS user_count,
       maxState(customization_count) AS customizations
FROM ${db}.events
WHERE bitAnd(purposes, 16) != 0
GROUP BY day, tenant_id, contract_status, edition, size_band, category, item;

CREATE TABLE IF NOT EXISTS ${db}_external_consented.tenant_daily (
    day              Date,
    tenant_id        String,
    category         String,
    item             String,
    users            AggregateFunction(uniq, FixedString(16)),
    uses             AggregateFunction(sum, UInt64),
    events           AggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, category, item);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_external_consented.tenant_daily_mv TO ${db}_external_consented.tenant_daily AS
SELECT toDate(occurred_at) AS day, tenant_id, toString(category) AS category,
       multiIf(category = 'feature_use', feature_id, category = 'app_access', app_id, category = 'settings', setting_key, category = 'client_env', concat(os, ' ', toString(os_major)), '') AS item,
       uniqState(user_pseudonym) AS users,
       sumState(toUInt64(if(category = 'feature_use', use_count, 1))) AS uses,
       sumState(toUInt64(1)) AS events
FROM ${db}.events
WHERE bitAnd(purposes, 64) != 0
GROUP BY day, tenant_id, category, item;
