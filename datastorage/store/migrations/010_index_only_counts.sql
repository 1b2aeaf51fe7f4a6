-- Lists at tens of millions of events (docs/scaling.md): the capped `total` of a filtered list
-- counts up to DATASTORAGE_COUNT_LIMIT matches. Its WHERE clause also names event_date (how a
-- time range prunes monthly partitions), so an index without event_date sends every match to the
-- heap: about 5,000 page reads for 10,000 matches. Carrying event_date in the index lets the count
-- (and the page) be an index-only scan. A category filter had no index at all.
--
-- On an existing database this rebuilds two indexes on every partition (minutes per 10M events,
-- writes to audit_events wait meanwhile): plan the upgrade for a quiet hour.
DROP INDEX IF EXISTS audit_events_type_time_idx;
CREATE INDEX IF NOT EXISTS audit_events_type_time_idx
    ON audit_events (event_type, event_timestamp, event_id) INCLUDE (event_date);
DROP INDEX IF EXISTS audit_events_time_idx;
CREATE INDEX IF NOT EXISTS audit_events_time_idx
    ON audit_events (event_timestamp, event_id) INCLUDE (event_date);
CREATE INDEX IF NOT EXISTS audit_events_category_time_idx
    ON audit_events (event_category, event_timestamp, event_id) INCLUDE (event_date);
