-- Support tickets (DESIGN.md §1, clause 3(1)-1): the support purpose may read a tenant's
-- event trace only while one of that tenant's tickets is open, and only from a bounded time
-- before the ticket was opened. One row per change of a ticket; the newest row (updated_at,
-- read with FINAL) is its state. closed_at is 1970-01-01 while the ticket is open; a ticket
-- also closes by itself at expires_at, without anyone acting.
CREATE TABLE IF NOT EXISTS ${db}.tickets (
    tenant_id    String,
    ticket_id    String,
    opened_at    DateTime,
    expires_at   DateTime,
    closed_at    DateTime,
    opened_by    String,
    updated_at   DateTime
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (tenant_id, ticket_id);
