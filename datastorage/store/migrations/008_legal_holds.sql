-- Legal holds (docs/compliance.md): a held correlation's events survive retention until the hold is
-- released. One row per held correlation id; releasing deletes the row (the placement and the
-- release are both recorded as self-audit events, so the history is in the audit trail itself).
CREATE TABLE IF NOT EXISTS legal_holds (
    correlation_id text        PRIMARY KEY CHECK (char_length(correlation_id) BETWEEN 1 AND 255),
    reason         text        NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 1000),
    case_id        text        CHECK (char_length(case_id) <= 255),
    placed_by      text,
    placed_at      timestamptz NOT NULL DEFAULT now()
);
