-- The processor's decision time of the batch an event was inserted with, in nanoseconds
-- (0 for events stored before). ingested_at holds only its second, and a processor may insert
-- two batches of one Kafka partition in one second (batches of up to batch_timeout, decided
-- while the previous one is still being stored): when the later one is cut short after the
-- earlier one was stored whole, both lie beyond the checkpoint, and the repair of the purpose
-- marts must tell which one the marts lack (pipeline/processor/repair.go). ClickHouse 18.16 has
-- no ADD COLUMN IF NOT EXISTS: this is the only statement.
ALTER TABLE ${db}.events ADD COLUMN insert_ns UInt64 DEFAULT 0;
