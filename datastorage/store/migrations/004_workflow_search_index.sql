-- The search index of 003 carried component, environment and priority as INCLUDE columns.
-- A btree entry must fit in about 2.7 kB: signal_type, component and environment at their
-- limit of 255 four-byte characters each (3 kB together) made a valid create fail. The key
-- columns alone fit (at most about 1 kB); the wildcard labels are filtered on the heap rows
-- the index finds, which are few.
DROP INDEX IF EXISTS remediation_workflow_catalog_search_idx;
CREATE INDEX IF NOT EXISTS remediation_workflow_catalog_search_idx
    ON remediation_workflow_catalog (signal_type, severity, status)
    WHERE is_latest_version;
