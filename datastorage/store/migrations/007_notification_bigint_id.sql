-- Notification records get an int64 key (SPEC §15: clients of the reference contract decode
-- the `id` of a 201 as an integer). The server-chosen uuid stays, renamed `record_id`: it is
-- what a record queued in the DLQ carries, so a replay stays idempotent across this change.
-- Existing rows keep everything and get ids 1..n in the order they were created.
ALTER TABLE notification_audit RENAME COLUMN id TO record_id;
ALTER TABLE notification_audit DROP CONSTRAINT notification_audit_pkey;
ALTER TABLE notification_audit
    ADD CONSTRAINT notification_audit_record_id_key UNIQUE (record_id);

ALTER TABLE notification_audit ADD COLUMN id bigint;
UPDATE notification_audit AS n
   SET id = o.position
  FROM (SELECT record_id, row_number() OVER (ORDER BY created_at, record_id) AS position
          FROM notification_audit) AS o
 WHERE n.record_id = o.record_id;
ALTER TABLE notification_audit ALTER COLUMN id SET NOT NULL;
ALTER TABLE notification_audit ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('notification_audit', 'id'), coalesce(max(id), 0) + 1, false)
  FROM notification_audit;
ALTER TABLE notification_audit ADD CONSTRAINT notification_audit_pkey PRIMARY KEY (id);
