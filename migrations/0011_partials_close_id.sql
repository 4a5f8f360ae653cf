-- One close of a window by a partition is one unit (DESIGN.md §4): every partial row of a close
-- carries the close's id, and the release step merges the partials of one close per
-- (window, partition) only — the first (earliest, then smallest id). A partition that closed a
-- window twice (a replay after the registry changed a tenant's status) can then never bring a
-- tenant into more than L0 cells, nor more than LInf into one. Rows written before this
-- migration have close_id '' and count as one close.
ALTER TABLE ${db}.aggregate_state ADD COLUMN close_id String DEFAULT '';
