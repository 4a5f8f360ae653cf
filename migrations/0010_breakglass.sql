-- Break-glass access (DESIGN.md §1, clause 3(2)-5..7): time-boxed access to one tenant's event
-- trace outside the normal grants — a customer's violation of the terms endangering others
-- (3(2)-5), protection of life, body or property (3(2)-6), a legal requirement (3(2)-7). A
-- request carries a written justification; it opens only when a second principal approves it,
-- and only for its time box. One row per change; the newest (updated_at, FINAL) is the state.
-- Every request, approval, revocation and use is also in the audit log.
CREATE TABLE IF NOT EXISTS ${db}.breakglass (
    id               String,
    principal_id     String,
    purpose          String,
    tenant_id        String,
    clause           String,
    justification    String,
    ttl_seconds      UInt32,
    requested_at     DateTime,
    approved_by      String,
    approved_at      DateTime,
    expires_at       DateTime,
    revoked_at       DateTime,
    updated_at       DateTime
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY id;
