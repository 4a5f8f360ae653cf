-- Gated atoms (promise 9, gate/gate.go): the one place the k-threshold lives. The aggregate
-- reports of service_improvement and marketing, and the dashboards, read only these: one row
-- per segment and ISO week holding at least k distinct tenants, computed once when the week is
-- sealed and never changed afterwards. A gated database holds no tenant id, so the dashboards'
-- ClickHouse user may read it where it may not read the purpose's own database. Rows are
-- written from the first seal the release log published; a second materialiser writes the
-- same rows, which ReplacingMergeTree collapses (read with FINAL).
CREATE DATABASE IF NOT EXISTS ${db}_service_improvement_gated;
CREATE DATABASE IF NOT EXISTS ${db}_marketing_gated;

CREATE TABLE IF NOT EXISTS ${db}_service_improvement_gated.atoms (
    week      Date,
    category  String,
    feature   String,
    status    String,
    edition   String,
    tenants   UInt64,
    users     UInt64,
    uses      UInt64,
    k         UInt16,
    seal_id   String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(week)
ORDER BY (week, category, feature, status, edition);

-- One row per sealed week, written after its atoms: a week is readable once it is here.
CREATE TABLE IF NOT EXISTS ${db}_service_improvement_gated.seals (
    week      Date,
    seal_id   String,
    sealed_at DateTime,
    k         UInt16,
    atoms     UInt32
) ENGINE = ReplacingMergeTree
ORDER BY week;

CREATE TABLE IF NOT EXISTS ${db}_marketing_gated.atoms (
    week      Date,
    category  String,
    feature   String,
    status    String,
    edition   String,
    tenants   UInt64,
    users     UInt64,
    uses      UInt64,
    k         UInt16,
    seal_id   String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(week)
ORDER BY (week, category, feature, status, edition);

CREATE TABLE IF NOT EXISTS ${db}_marketing_gated.seals (
    week      Date,
    seal_id   String,
    sealed_at DateTime,
    k         UInt16,
    atoms     UInt32
) ENGINE = ReplacingMergeTree
ORDER BY week;

-- The weekly rollups of service_improvement and marketing (0008) served only the reports that
-- now read the atoms; the atoms are computed from the daily marts. Their views are dropped
-- first (so no insert feeds a dropped table), then the tables: four fewer views over every
-- stored event.
DROP TABLE IF EXISTS ${db}_service_improvement.feature_weekly_mv;
DROP TABLE IF EXISTS ${db}_service_improvement.feature_cells_weekly_mv;
DROP TABLE IF EXISTS ${db}_marketing.activity_weekly_mv;
DROP TABLE IF EXISTS ${db}_marketing.activity_cells_weekly_mv;
DROP TABLE IF EXISTS ${db}_service_improvement.feature_weekly;
DROP TABLE IF EXISTS ${db}_service_improvement.feature_cells_weekly;
DROP TABLE IF EXISTS ${db}_marketing.activity_weekly;
DROP TABLE IF EXISTS ${db}_marketing.activity_cells_weekly;
