-- Notification records get an int64 number, which the API shows as `id` (docs/compatibility.md:
-- clients of
-- the reference contract decode it as an integer). The uuid key stays as it is: a DLQ record
-- carries it, so replays stay idempotent, and the previous version of the server (still
-- serving during a rolling upgrade, or again after a rollback) keeps writing through it.
-- Existing rows keep everything and are numbered 1..n in the order they were created.
ALTER TABLE notification_audit ADD COLUMN seq bigint;
UPDATE notification_audit AS n
   SET seq = o.position
  FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS position
          FROM notification_audit) AS o
 WHERE n.id = o.id;
ALTER TABLE notification_audit ALTER COLUMN seq SET NOT NULL;
ALTER TABLE notification_audit ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('notification_audit', 'seq'), coalesce(max(seq), 0) + 1, false)
  FROM notification_audit;
ALTER TABLE notification_audit ADD CONSTRAINT notification_audit_seq_key UNIQUE (seq);
