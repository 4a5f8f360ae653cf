-- Policy versions in force (DESIGN.md §1, clause 4): one row per activation of a policy version
-- built into the binary ('shukei policy activate'). Activation times are history — events were
-- tagged by them — so a version is activated once; every stage reads this table with the
-- tenant registry and tags events under the newest version in force for each tenant.
CREATE TABLE IF NOT EXISTS ${db}.policy_activations (
    version        UInt16,
    at             DateTime,
    activated_by   String,
    recorded_at    DateTime
) ENGINE = MergeTree
ORDER BY (version, recorded_at);
