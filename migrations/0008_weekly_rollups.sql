-- Weekly rollups for the query service's reports (DESIGN.md §5). The daily marts of 0003 hold
-- one row per tenant, day and item; a report over four weeks would merge a million of them.
-- These tables hold one row per ISO week (Monday) and tenant — per feature for the aggregate
-- purposes, per tenant for the per-tenant ones — or per week and cell, filled by materialised
-- views from the event store like the daily marts, with the same purpose bits and columns. A tenant's
-- edition and contract status in a week are its latest (argMax by event time), so each tenant
-- lies in exactly one segment of a report: what the k-tenants threshold relies on.
--
-- Each view is created before its backfill from the event store; events stored during the
-- migration's own second may be counted twice in a rollup. Run it with the processor stopped
-- to be exact.

-- service_improvement. Two rollups: which tenants used a feature in a week, with the tenant's
-- latest edition (the segments the k-threshold counts), and per feature and edition of the
-- event, the users (HyperLogLog, 2.5 KiB a state whatever the count) and uses. Reading user
-- sketches per tenant would cost a state per tenant and feature; per cell it is a few hundred.
CREATE TABLE IF NOT EXISTS ${db}_service_improvement.feature_weekly (
    week             Date,
    category         String,
    feature          String,
    tenant_id        String,
    edition          AggregateFunction(argMax, String, DateTime)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(week)
ORDER BY (week, category, feature, tenant_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_service_improvement.feature_weekly_mv TO ${db}_service_improvement.feature_weekly AS
SELECT toMonday(occurred_at) AS week, toString(category) AS category,
       if(category = 'feature_use', feature_id, app_id) AS feature, tenant_id,
       argMaxState(edition, occurred_at) AS edition
FROM ${db}.events
WHERE bitAnd(purposes, 2) != 0 AND category IN ('feature_use', 'app_access')
GROUP BY week, category, feature, tenant_id;

INSERT INTO ${db}_service_improvement.feature_weekly (week, category, feature, tenant_id, edition)
SELECT toMonday(occurred_at) AS week, toString(category) AS category,
       if(category = 'feature_use', feature_id, app_id) AS feature, tenant_id, argMaxState(edition, occurred_at)
FROM ${db}.events
WHERE bitAnd(purposes, 2) != 0 AND category IN ('feature_use', 'app_access') AND ingested_at < now()
GROUP BY week, category, feature, tenant_id;

CREATE TABLE IF NOT EXISTS ${db}_service_improvement.feature_cells_weekly (
    week             Date,
    category         String,
    feature          String,
    edition          String,
    users            AggregateFunction(uniqHLL12, FixedString(16)),
    uses             AggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(week)
ORDER BY (week, category, feature, edition);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_service_improvement.feature_cells_weekly_mv TO ${db}_service_improvement.feature_cells_weekly AS
SELECT toMonday(occurred_at) AS week, toString(category) AS category,
       if(category = 'feature_use', feature_id, app_id) AS feature, edition,
       uniqHLL12State(user_pseudonym) AS users,
       sumState(toUInt64(if(category = 'feature_use', use_count, 1))) AS uses
FROM ${db}.events
WHERE bitAnd(purposes, 2) != 0 AND category IN ('feature_use', 'app_access')
GROUP BY week, category, feature, edition;

INSERT INTO ${db}_service_improvement.feature_cells_weekly (week, category, feature, edition, users, uses)
SELECT toMonday(occurred_at) AS week, toString(category) AS category,
       if(category = 'feature_use', feature_id, app_id) AS feature, edition,
       uniqHLL12State(user_pseudonym), sumState(toUInt64(if(category = 'feature_use', use_count, 1)))
FROM ${db}.events
WHERE bitAnd(purposes, 2) != 0 AND category IN ('feature_use', 'app_access') AND ingested_at < now()
GROUP BY week, category, feature, edition;

-- marketing: the same two rollups, with the contract status next to the edition. Feature ''
-- is a tenant_profile report (activity without a feature).
CREATE TABLE IF NOT EXISTS ${db}_marketing.activity_weekly (
    week             Date,
    category         String,
    feature          String,
    tenant_id        String,
    contract_status  AggregateFunction(argMax, String, DateTime),
    edition          AggregateFunction(argMax, String, DateTime)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(week)
ORDER BY (week, category, feature, tenant_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_marketing.activity_weekly_mv TO ${db}_marketing.activity_weekly AS
SELECT toMonday(occurred_at) AS week, toString(category) AS category,
       multiIf(category = 'feature_use', feature_id, category = 'app_access', app_id, '') AS feature, tenant_id,
       argMaxState(toString(contract_status), occurred_at) AS contract_status,
       argMaxState(edition, occurred_at) AS edition
FROM ${db}.events
WHERE bitAnd(purposes, 4) != 0 AND category IN ('feature_use', 'app_access', 'tenant_profile')
GROUP BY week, category, feature, tenant_id;

INSERT INTO ${db}_marketing.activity_weekly (week, category, feature, tenant_id, contract_status, edition)
SELECT toMonday(occurred_at) AS week, toString(category) AS category,
       multiIf(category = 'feature_use', feature_id, category = 'app_access', app_id, '') AS feature, tenant_id,
       argMaxState(toString(contract_status), occurred_at), argMaxState(edition, occurred_at)
FROM ${db}.events
WHERE bitAnd(purposes, 4) != 0 AND category IN ('feature_use', 'app_access', 'tenant_profile') AND ingested_at < now()
GROUP BY week, category, feature, tenant_id;

CREATE TABLE IF NOT EXISTS ${db}_marketing.activity_cells_weekly (
    week             Date,
    category         String,
    feature          String,
    contract_status  String,
    edition          String,
    users            AggregateFunction(uniqHLL12, FixedString(16)),
    uses             AggregateFunction(sum, UInt64),
    events           AggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(week)
ORDER BY (week, category, feature, contract_status, edition);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_marketing.activity_cells_weekly_mv TO ${db}_marketing.activity_cells_weekly AS
SELECT toMonday(occurred_at) AS week, toString(category) AS category,
       multiIf(category = 'feature_use', feature_id, category = 'app_access', app_id, '') AS feature,
       toString(contract_status) AS contract_status, edition,
       uniqHLL12State(user_pseudonym) AS users,
       sumState(toUInt64(if(category = 'feature_use', use_count, 1))) AS uses,
       sumState(toUInt64(1)) AS events
FROM ${db}.events
WHERE bitAnd(purposes, 4) != 0 AND category IN ('feature_use', 'app_access', 'tenant_profile')
GROUP BY week, category, feature, contract_status, edition;

INSERT INTO ${db}_marketing.activity_cells_weekly (week, category, feature, contract_status, edition, users, uses, events)
SELECT toMonday(occurred_at) AS week, toString(category) AS category,
       multiIf(category = 'feature_use', feature_id, category = 'app_access', app_id, '') AS feature,
       toString(contract_status) AS contract_status, edition,
       uniqHLL12State(user_pseudonym), sumState(toUInt64(if(category = 'feature_use', use_count, 1))), sumState(toUInt64(1))
FROM ${db}.events
WHERE bitAnd(purposes, 4) != 0 AND category IN ('feature_use', 'app_access', 'tenant_profile') AND ingested_at < now()
GROUP BY week, category, feature, contract_status, edition;

-- follow_up and interview_selection: one row per tenant and week.
CREATE TABLE IF NOT EXISTS ${db}_follow_up.tenant_weekly (
    week             Date,
    tenant_id        String,
    contract_status  AggregateFunction(argMax, String, DateTime),
    edition          AggregateFunction(argMax, String, DateTime),
    size_band        AggregateFunction(argMax, String, DateTime),
    users            AggregateFunction(uniq, FixedString(16)),
    events           AggregateFunction(sum, UInt64),
    last_seen        AggregateFunction(max, DateTime),
    active_days      AggregateFunction(uniqExact, Date),
    features         AggregateFunction(groupUniqArray, String),
    customizations   AggregateFunction(max, UInt32)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(week)
ORDER BY (tenant_id, week);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_follow_up.tenant_weekly_mv TO ${db}_follow_up.tenant_weekly AS
SELECT toMonday(occurred_at) AS week, tenant_id,
       argMaxState(toString(contract_status), occurred_at) AS contract_status,
       argMaxState(edition, occurred_at) AS edition,
       argMaxState(size_band, occurred_at) AS size_band,
       uniqState(user_pseudonym) AS users,
       sumState(toUInt64(1)) AS events,
       maxState(occurred_at) AS last_seen,
       uniqExactState(toDate(occurred_at)) AS active_days,
       groupUniqArrayState(if(category = 'feature_use', feature_id, '')) AS features,
       maxState(customization_count) AS customizations
FROM ${db}.events
WHERE bitAnd(purposes, 8) != 0
GROUP BY week, tenant_id;

INSERT INTO ${db}_follow_up.tenant_weekly (week, tenant_id, contract_status, edition, size_band, users, events, last_seen, active_days, features, customizations)
SELECT toMonday(occurred_at) AS week, tenant_id,
       argMaxState(toString(contract_status), occurred_at), argMaxState(edition, occurred_at), argMaxState(size_band, occurred_at),
       uniqState(user_pseudonym), sumState(toUInt64(1)), maxState(occurred_at), uniqExactState(toDate(occurred_at)),
       groupUniqArrayState(if(category = 'feature_use', feature_id, '')), maxState(customization_count)
FROM ${db}.events
WHERE bitAnd(purposes, 8) != 0 AND ingested_at < now()
GROUP BY week, tenant_id;

CREATE TABLE IF NOT EXISTS ${db}_interview_selection.tenant_weekly (
    week             Date,
    tenant_id        String,
    contract_status  AggregateFunction(argMax, String, DateTime),
    edition          AggregateFunction(argMax, String, DateTime),
    size_band        AggregateFunction(argMax, String, DateTime),
    users            AggregateFunction(uniq, FixedString(16)),
    events           AggregateFunction(sum, UInt64),
    last_seen        AggregateFunction(max, DateTime),
    active_days      AggregateFunction(uniqExact, Date),
    features         AggregateFunction(groupUniqArray, String),
    customizations   AggregateFunction(max, UInt32)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(week)
ORDER BY (tenant_id, week);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}_interview_selection.tenant_weekly_mv TO ${db}_interview_selection.tenant_weekly AS
SELECT toMonday(occurred_at) AS week, tenant_id,
       argMaxState(toString(contract_status), occurred_at) AS contract_status,
       argMaxState(edition, occurred_at) AS edition,
       argMaxState(size_band, occurred_at) AS size_band,
       uniqState(user_pseudonym) AS users,
       sumState(toUInt64(1)) AS events,
       maxState(occurred_at) AS last_seen,
       uniqExactState(toDate(occurred_at)) AS active_days,
       groupUniqArrayState(if(category = 'feature_use', feature_id, '')) AS features,
       maxState(customization_count) AS customizations
FROM ${db}.events
WHERE bitAnd(purposes, 16) != 0
GROUP BY week, tenant_id;

INSERT INTO ${db}_interview_selection.tenant_weekly (week, tenant_id, contract_status, edition, size_band, users, events, last_seen, active_days, features, customizations)
SELECT toMonday(occurred_at) AS week, tenant_id,
       argMaxState(toString(contract_status), occurred_at), argMaxState(edition, occurred_at), argMaxState(size_band, occurred_at),
       uniqState(user_pseudonym), sumState(toUInt64(1)), maxState(occurred_at), uniqExactState(toDate(occurred_at)),
       groupUniqArrayState(if(category = 'feature_use', feature_id, '')), maxState(customization_count)
FROM ${db}.events
WHERE bitAnd(purposes, 16) != 0 AND ingested_at < now()
GROUP BY week, tenant_id;
