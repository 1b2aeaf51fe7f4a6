-- The leaf hash of a pending event, computed by the writer from the event it stored
-- (docs/tamper-evident-log.md): the sequencer appends it without reading the row back. NULL
-- (the log was off, the event holds a float, or it was queued before this migration): the
-- sequencer hashes the stored row.
ALTER TABLE log_pending ADD COLUMN IF NOT EXISTS leaf_hash bytea
    CHECK (leaf_hash IS NULL OR octet_length(leaf_hash) = 32);
