-- Who may read what (DESIGN.md §5): principals of the query service — employees, affiliates,
-- contractors (with their contract reference and an expiry, clause 5) and partners — with the
-- purposes each may act for. Tokens are kept only as SHA-256 hashes. ReplacingMergeTree keeps
-- the newest row per principal (read with FINAL).
CREATE TABLE IF NOT EXISTS ${db}.principals (
    principal_id   String,
    kind           Enum8('employee' = 1, 'affiliate' = 2, 'contractor' = 3, 'partner' = 4),
    purposes       Array(String),
    contract_ref   String,
    expires_at     DateTime,
    token_hashes   Array(String),
    disabled       UInt8,
    updated_at     DateTime
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY principal_id;

-- The audit log: every request to the query service, allowed or denied. Append-only; each
-- record holds the hash of the previous one, so an edited or deleted record breaks the chain
-- ('shukei audit verify').
CREATE TABLE IF NOT EXISTS ${db}.audit_log (
    seq             UInt64,
    at              DateTime,
    principal_id    String,
    principal_kind  String,
    contract_ref    String,
    purpose         String,
    ticket          String,
    report          String,
    params_hash     String,
    decision        String,
    reason          String,
    rows            UInt64,
    budget_epsilon  Float64,
    prev_hash       String,
    hash            String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY seq;
