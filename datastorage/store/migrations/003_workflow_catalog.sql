-- Remediation workflow catalog (docs/api.md). One row per (workflow_name, version).
-- Column lengths state the same contract as openapi.yaml (CreateWorkflowRequest), so a
-- too-long value is a 400 from validation, never a database error.
CREATE TABLE IF NOT EXISTS remediation_workflow_catalog (
    workflow_id           uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_name         varchar(255)  NOT NULL,
    version               varchar(50)   NOT NULL,
    name                  varchar(255)  NOT NULL,
    description           text,
    content               text          NOT NULL,
    content_hash          char(64)      NOT NULL,
    labels                jsonb         NOT NULL,
    custom_labels         jsonb         NOT NULL DEFAULT '{}',
    detected_labels       jsonb         NOT NULL DEFAULT '{}',
    parameters            jsonb         NOT NULL DEFAULT '{}',
    execution_engine      varchar(50),
    container_image       varchar(500),
    container_digest      varchar(255),
    owner                 varchar(255),
    maintainer            varchar(255),
    status                varchar(20)   NOT NULL DEFAULT 'active',
    status_reason         text,
    disabled_at           timestamptz,
    disabled_by           varchar(255),
    disabled_reason       text,
    deprecation_notice    text,
    approved_by           varchar(255),
    approved_at           timestamptz,
    version_notes         text,
    is_latest_version     boolean       NOT NULL DEFAULT false,
    total_executions      bigint        NOT NULL DEFAULT 0,
    successful_executions bigint        NOT NULL DEFAULT 0,
    success_rate          numeric(5, 4),
    created_at            timestamptz   NOT NULL DEFAULT now(),
    updated_at            timestamptz   NOT NULL DEFAULT now(),
    created_by            varchar(255),
    updated_by            varchar(255),
    -- Insertion order of the versions of a name: the tie-break of "latest" for versions that
    -- are not semantic (created_at is the transaction start, which can invert the order of two
    -- creates that waited for the same per-name lock). Internal, never shown by the API.
    creation_order        bigint        GENERATED ALWAYS AS IDENTITY,
    -- The mandatory labels as plain columns, so search candidates and list filters are
    -- selected by ordinary btree indexes instead of jsonb operators.
    signal_type           text GENERATED ALWAYS AS (labels ->> 'signal_type') STORED,
    severity              text GENERATED ALWAYS AS (labels ->> 'severity') STORED,
    component             text GENERATED ALWAYS AS (labels ->> 'component') STORED,
    environment           text GENERATED ALWAYS AS (labels ->> 'environment') STORED,
    priority              text GENERATED ALWAYS AS (labels ->> 'priority') STORED,
    CONSTRAINT remediation_workflow_catalog_name_version_key UNIQUE (workflow_name, version),
    CONSTRAINT remediation_workflow_catalog_status_check
        CHECK (status IN ('active', 'disabled', 'deprecated', 'archived')),
    CONSTRAINT remediation_workflow_catalog_hash_check CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    CONSTRAINT remediation_workflow_catalog_labels_check CHECK (
        jsonb_typeof(labels) = 'object'
        AND labels ?& ARRAY['signal_type', 'severity', 'component', 'environment', 'priority']
    ),
    CONSTRAINT remediation_workflow_catalog_counters_check
        CHECK (total_executions >= 0 AND successful_executions BETWEEN 0 AND total_executions),
    CONSTRAINT remediation_workflow_catalog_success_rate_check
        CHECK (success_rate IS NULL OR success_rate BETWEEN 0 AND 1)
);

-- At most one latest version per name, whatever the application does (the catalog keeps it
-- exactly one under a per-name advisory lock).
CREATE UNIQUE INDEX IF NOT EXISTS remediation_workflow_catalog_one_latest_idx
    ON remediation_workflow_catalog (workflow_name) WHERE is_latest_version;

-- Search candidates: latest versions by signal type, severity and status; the wildcard labels
-- (component, environment, priority) are filtered on the few rows this leaves.
CREATE INDEX IF NOT EXISTS remediation_workflow_catalog_search_idx
    ON remediation_workflow_catalog (signal_type, severity, status)
    INCLUDE (component, environment, priority)
    WHERE is_latest_version;

-- The list endpoint's order (newest first) and its most common filter.
CREATE INDEX IF NOT EXISTS remediation_workflow_catalog_created_idx
    ON remediation_workflow_catalog (created_at DESC, workflow_id);
CREATE INDEX IF NOT EXISTS remediation_workflow_catalog_status_idx
    ON remediation_workflow_catalog (status, created_at DESC);
