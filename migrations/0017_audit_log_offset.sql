-- Tamper-evident, fork-free trails (promise 17, query/audit): every writer of the audit log
-- produces its records to a one-partition Kafka topic (audit.topic) and the chain is
-- materialised from it in its order, so the record at each Kafka offset has one sequence and
-- one MAC whichever writer wrote it. log_offset is that offset (a keyed MAC covers it); -1 for
-- the records written before (the legacy prefix). Writers resume after the greatest offset
-- stored. ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: this is the only statement.
ALTER TABLE ${db}_audit.audit_log ADD COLUMN log_offset Int64 DEFAULT -1;
