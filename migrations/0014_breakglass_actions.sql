-- Break-glass with real authorisation (issue #16).

-- Break-glass state as an append-only log of actions instead of one row overwritten by
-- updated_at (second precision: an approval and a revocation in the same second could replace
-- each other). seq is the audit record's sequence of the step (each step is appended to the
-- audit log before it is stored here), so actions are ordered by a monotonic sequence, never by
-- the wall clock. A grant's state is a fold over its actions in seq order: revoked if any
-- revoke exists (final: no approval, before, after or concurrent with it, opens the grant
-- again), open only after the first approval, for its time box from that approval. tenant_id
-- is on every action, so a deleted tenant's grants go whole. The request row carries the
-- clause, justification and time box.
CREATE TABLE IF NOT EXISTS ${db}.breakglass_actions (
    grant_id       String,
    seq            UInt64,
    action         Enum8('request' = 1, 'approve' = 2, 'revoke' = 3),
    principal_id   String,
    at             DateTime,
    tenant_id      String,
    purpose        String,
    clause         String,
    justification  String,
    ttl_seconds    UInt32
) ENGINE = MergeTree
ORDER BY (grant_id, seq);

-- Grants made before this migration keep their state: each row of breakglass (its newest
-- version, FINAL) becomes its request, its approval and its revocation, in that order (seq 1, 2,
-- 3: before any later step, whose seq is an audit sequence past them). Who revoked was not
-- kept; the revoke action names no principal. Each insert skips grants already carried over,
-- so a migration cut short and run again does not copy them twice. The old table is kept.
INSERT INTO ${db}.breakglass_actions (grant_id, seq, action, principal_id, at, tenant_id, purpose, clause, justification, ttl_seconds)
SELECT id, toUInt64(1), 'request', principal_id, requested_at, tenant_id, purpose, clause, justification, ttl_seconds
FROM ${db}.breakglass FINAL
WHERE id NOT IN (SELECT grant_id FROM ${db}.breakglass_actions WHERE action = 'request');

INSERT INTO ${db}.breakglass_actions (grant_id, seq, action, principal_id, at, tenant_id, purpose, clause, justification, ttl_seconds)
SELECT id, toUInt64(2), 'approve', approved_by, approved_at, tenant_id, purpose, '', '', toUInt32(0)
FROM ${db}.breakglass FINAL
WHERE toUnixTimestamp(approved_at) > 0
  AND id NOT IN (SELECT grant_id FROM ${db}.breakglass_actions WHERE action = 'approve');

INSERT INTO ${db}.breakglass_actions (grant_id, seq, action, principal_id, at, tenant_id, purpose, clause, justification, ttl_seconds)
SELECT id, toUInt64(3), 'revoke', '', revoked_at, tenant_id, purpose, '', '', toUInt32(0)
FROM ${db}.breakglass FINAL
WHERE toUnixTimestamp(revoked_at) > 0
  AND id NOT IN (SELECT grant_id FROM ${db}.breakglass_actions WHERE action = 'revoke');

-- Principals get explicit roles; the one role is 'breakglass_approver' (employees and
-- affiliates only, query/principal): only its holders approve break-glass requests.
-- ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: the two ALTERs come last, after the
-- statements that are safe to run again.
ALTER TABLE ${db}.principals ADD COLUMN roles Array(String) DEFAULT emptyArrayString();

-- The audit log names the tenant a record is about (a support trace, a break-glass step). It is
-- in a record's hash only when not empty, so records written before keep verifying.
ALTER TABLE ${db}.audit_log ADD COLUMN tenant_id String DEFAULT '';
