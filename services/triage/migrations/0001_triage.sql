-- triage: one row per triaged complaint; the facts duplicate and incident detection need.

CREATE TABLE triaged_complaints (
    complaint_id     uuid PRIMARY KEY,
    tenant_id        uuid        NOT NULL,
    ticket_no        text        NOT NULL,
    customer_id      text        NOT NULL,
    transaction_ref  text,
    merchant         text,
    category         text        NOT NULL,
    priority         text        NOT NULL,
    received_at      timestamptz NOT NULL,
    duplicate_of     uuid,
    incident_id      uuid,
    triaged_at       timestamptz NOT NULL DEFAULT now()
);
-- Duplicate lookup: same tenant, customer and transaction, most recent first.
CREATE INDEX triaged_duplicate_lookup
    ON triaged_complaints (tenant_id, customer_id, transaction_ref, received_at)
    WHERE transaction_ref IS NOT NULL;
