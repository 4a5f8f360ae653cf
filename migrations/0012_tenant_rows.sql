-- Weekly and monthly releases (DESIGN.md §4): each close of a base window also stores each
-- tenant's raw material per cell (kind 'tenant': events, and up to LInf user keys), before any
-- bounding, in the same insert as the close's partials and progress. The release of a week or
-- a month merges them per tenant over the period and bounds each tenant once for the whole
-- period. The rows carry tenant_id, so a tenant's deletion deletes them with the rest of its
-- rows; 'shukei retention run' deletes them once every period containing their window is
-- released and aggregator.state_retention has passed.
ALTER TABLE ${db}.aggregate_state MODIFY COLUMN kind Enum8('partial' = 1, 'progress' = 2, 'tenant' = 3);
ALTER TABLE ${db}.aggregate_state ADD COLUMN tenant_id String DEFAULT '';
ALTER TABLE ${db}.aggregate_state ADD COLUMN events UInt64 DEFAULT 0;
ALTER TABLE ${db}.aggregate_state ADD COLUMN users Array(UInt64);
