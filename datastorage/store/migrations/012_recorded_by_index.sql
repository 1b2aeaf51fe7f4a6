-- Lists filtered by who stored the events (`recorded_by=`, docs/auth.md): without an
-- index, a caller who stored a handful of events among tens of millions makes the newest-first
-- page walk the whole time index, reading every row to test it. This index answers the filter in
-- the list's order (and its capped count index-only). Partial: with authentication off every
-- event records NULL, so such writes add nothing to it.
--
-- On an existing database this builds an index on every partition (writes to audit_events wait
-- meanwhile): plan the upgrade for a quiet hour.
CREATE INDEX IF NOT EXISTS audit_events_recorded_by_time_idx
    ON audit_events (recorded_by, event_timestamp, event_id) INCLUDE (event_date)
    WHERE recorded_by IS NOT NULL;
