-- Pending events are queued one row per statement (docs/tamper-evident-log.md): `events` packs
-- the statement's events, 52 bytes each: the event id (16 bytes, as uuid_send writes it), the
-- event date (days since 2000-01-01, 4 bytes big-endian, as int4send writes it) and the leaf
-- hash the writer computed (32 bytes; all zero bytes: none, the sequencer hashes the stored
-- row). `event_count` is how many events the row holds. A row of the older kind (one event in
-- event_id, event_date and leaf_hash, `events` NULL) is still read, so API processes of the
-- previous version can keep writing while they are replaced. A sequencer of the previous version
-- would drop rows of the new kind (it finds no event id in them): upgrade every process that
-- runs the log together with this migration, as for 011.
ALTER TABLE log_pending ALTER COLUMN event_id DROP NOT NULL;
ALTER TABLE log_pending ALTER COLUMN event_date DROP NOT NULL;
ALTER TABLE log_pending ADD COLUMN IF NOT EXISTS events bytea;
ALTER TABLE log_pending ADD COLUMN IF NOT EXISTS event_count integer NOT NULL DEFAULT 1;
-- Hashes do not compress: store the packed events out of line without trying.
ALTER TABLE log_pending ALTER COLUMN events SET STORAGE EXTERNAL;
ALTER TABLE log_pending DROP CONSTRAINT IF EXISTS log_pending_one_kind;
ALTER TABLE log_pending ADD CONSTRAINT log_pending_one_kind CHECK (
    CASE WHEN events IS NULL
        THEN event_id IS NOT NULL AND event_date IS NOT NULL AND event_count = 1
        ELSE event_id IS NULL AND event_date IS NULL AND leaf_hash IS NULL
            AND event_count > 0 AND octet_length(events) = 52 * event_count
    END
);
