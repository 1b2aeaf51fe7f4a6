-- Who wrote it (docs/auth.md): the username the Kubernetes API reviewed for the request that stored
-- the row, set by the server, never taken from the body. NULL when authentication is off, for
-- rows stored before this column existed, and for writes no client made (the operator).
-- Adding a nullable column without a default rewrites nothing: instant on a large table.
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS recorded_by text;
ALTER TABLE notification_audit ADD COLUMN IF NOT EXISTS recorded_by text;
