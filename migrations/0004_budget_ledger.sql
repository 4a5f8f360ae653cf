-- The privacy-budget ledger (DESIGN.md §4): every differentially private release draws its
-- (epsilon, delta) from the budget of its purpose and period. Append-only; each entry holds
-- the hash of the previous one, so an edited or deleted entry breaks the chain. It lives in
-- the external_aggregate database, whose read-only user reports the budget left.
CREATE TABLE IF NOT EXISTS ${db}_external_aggregate.budget_ledger (
    release_id       String,
    purpose          String,
    period           String,
    epsilon          Float64,
    delta            Float64,
    l0               Int64,
    linf             Int64,
    window_start     DateTime,
    window_end       DateTime,
    query_hash       String,
    policy_version   UInt16,
    at               DateTime,
    seq              UInt64,
    prev_hash        String,
    hash             String
) ENGINE = MergeTree
ORDER BY (purpose, seq);
