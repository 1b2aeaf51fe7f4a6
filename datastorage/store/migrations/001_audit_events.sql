-- Audit events, partitioned by month on the UTC day of the event (docs/api.md).
-- No default partition: it would block DETACH PARTITION ... CONCURRENTLY.
CREATE TABLE IF NOT EXISTS audit_events (
    event_id          uuid         NOT NULL,
    event_version     varchar(10)  NOT NULL,
    event_timestamp   timestamptz  NOT NULL,
    event_date        date         NOT NULL,
    event_type        varchar(100) NOT NULL,
    event_category    varchar(50)  NOT NULL,
    event_action      varchar(50)  NOT NULL,
    event_outcome     varchar(20)  NOT NULL,
    actor_type        varchar(50)  NOT NULL,
    actor_id          varchar(255) NOT NULL,
    resource_type     varchar(100) NOT NULL,
    resource_id       varchar(255) NOT NULL,
    correlation_id    varchar(255) NOT NULL,
    parent_event_id   uuid,
    parent_event_date date,
    namespace         varchar(253),
    cluster_name      varchar(255),
    severity          varchar(20)  NOT NULL DEFAULT 'info',
    duration_ms       bigint,
    error_code        varchar(50),
    error_message     text,
    trace_id          varchar(255),
    span_id           varchar(255),
    event_data        jsonb        NOT NULL,
    retention_days    integer      NOT NULL DEFAULT 2555,
    is_sensitive      boolean      NOT NULL DEFAULT false,
    created_at        timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, event_date),
    CONSTRAINT audit_events_category_check CHECK (event_category IN
        ('gateway', 'notification', 'analysis', 'signalprocessing', 'workflow', 'execution',
         'orchestration')),
    CONSTRAINT audit_events_outcome_check CHECK (event_outcome IN ('success', 'failure', 'pending')),
    CONSTRAINT audit_events_duration_check CHECK (duration_ms IS NULL OR duration_ms >= 0)
) PARTITION BY RANGE (event_date);

-- Timeline of one remediation, in either direction; keyset paging on (event_timestamp, event_id).
CREATE INDEX IF NOT EXISTS audit_events_correlation_idx
    ON audit_events (correlation_id, event_timestamp, event_id);
CREATE INDEX IF NOT EXISTS audit_events_type_time_idx
    ON audit_events (event_type, event_timestamp, event_id);
CREATE INDEX IF NOT EXISTS audit_events_time_idx
    ON audit_events (event_timestamp, event_id);
CREATE INDEX IF NOT EXISTS audit_events_resource_idx
    ON audit_events (resource_type, resource_id, event_timestamp);
CREATE INDEX IF NOT EXISTS audit_events_actor_idx
    ON audit_events (actor_type, actor_id, event_timestamp);
CREATE INDEX IF NOT EXISTS audit_events_parent_idx
    ON audit_events (parent_event_id) WHERE parent_event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_events_event_id_idx
    ON audit_events (event_id);
CREATE INDEX IF NOT EXISTS audit_events_data_gin
    ON audit_events USING gin (event_data jsonb_path_ops);
