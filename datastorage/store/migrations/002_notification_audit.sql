-- Notification delivery audit (docs/api.md). The CHECKs state the same contract as openapi.yaml.
CREATE TABLE IF NOT EXISTS notification_audit (
    id               uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    remediation_id   varchar(255)  NOT NULL,
    notification_id  varchar(255)  NOT NULL UNIQUE,
    recipient        varchar(500)  NOT NULL,
    channel          varchar(20)   NOT NULL,
    message_summary  varchar(1000) NOT NULL,
    status           varchar(20)   NOT NULL,
    sent_at          timestamptz   NOT NULL,
    delivery_status  varchar(255),
    error_message    varchar(1000),
    escalation_level integer       NOT NULL DEFAULT 0,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    updated_at       timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT notification_audit_channel_check
        CHECK (channel IN ('email', 'slack', 'pagerduty', 'webhook', 'sms')),
    CONSTRAINT notification_audit_status_check
        CHECK (status IN ('sent', 'failed', 'pending', 'acknowledged', 'escalated')),
    CONSTRAINT notification_audit_escalation_check CHECK (escalation_level BETWEEN 0 AND 10)
);

CREATE INDEX IF NOT EXISTS notification_audit_remediation_idx
    ON notification_audit (remediation_id, created_at);
CREATE INDEX IF NOT EXISTS notification_audit_status_idx
    ON notification_audit (status, created_at);
