-- The aggregator (DESIGN.md §2, §4).
--
-- aggregate_state is internal: it lives in the Shukei database, never in a purpose database,
-- because its partial rows hold the library's un-noised aggregation state. Each time a Kafka
-- partition closes windows, one insert carries their partials (kind 'partial') and the
-- partition's progress (kind 'progress'): the window end everything before which is closed,
-- the offset a restart replays from, and the offset up to which closed windows were counted.
-- One insert is one block, so partials and progress land together or not at all.
CREATE TABLE IF NOT EXISTS ${db}.aggregate_state (
    kind           Enum8('partial' = 1, 'progress' = 2),
    plan_hash      String,
    partition      UInt32,
    window_start   DateTime,
    window_end     DateTime,
    metric         String,
    cell           String,
    tenants        UInt32,
    state          String,
    closed_through DateTime,
    resume_offset  Int64,
    high_offset    Int64,
    at             DateTime
) ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (kind, plan_hash, partition, window_start, metric, cell);

-- The differentially private releases of external_aggregate: one row a released cell, with
-- the noise's standard deviation, a 95% confidence interval and the parameters that produced
-- it. The number of tenants behind a cell is never stored here.
CREATE TABLE IF NOT EXISTS ${db}_external_aggregate.releases (
    release_id        String,
    plan_hash         String,
    window_start      DateTime,
    window_end        DateTime,
    metric            String,
    unit              String,
    dims              String,
    dim_names         Array(String),
    dim_values        Array(String),
    value             Int64,
    stddev            Float64,
    ci95_low          Float64,
    ci95_high         Float64,
    epsilon           Float64,
    delta             Float64,
    selected          UInt8,
    selection_epsilon Float64,
    selection_delta   Float64,
    l0                Int64,
    linf              Int64,
    mechanism         String,
    policy_version    UInt16,
    released_at       DateTime
) ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, metric, dims);
