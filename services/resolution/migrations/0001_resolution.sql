-- resolution: agents (token hashes only), cases and their history.

CREATE TABLE agents (
    id          uuid PRIMARY KEY,
    name        text        NOT NULL,
    token_id    text        NOT NULL UNIQUE,
    token_hash  bytea       NOT NULL,
    approver    boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cases (
    complaint_id        uuid PRIMARY KEY,
    tenant_id           uuid        NOT NULL,
    ticket_no           text        NOT NULL UNIQUE,
    status              text        NOT NULL,
    category            text        NOT NULL,
    priority            text        NOT NULL,
    jurisdiction        text        NOT NULL,
    locale              text,
    channel             text,
    amount              numeric,
    currency            text,
    transaction_ref     text,
    received_at         timestamptz NOT NULL,
    first_response_due  timestamptz NOT NULL,
    resolution_due      timestamptz NOT NULL,
    opened_at           timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cases_queue ON cases (tenant_id, status, resolution_due);

-- A duplicate complaint is linked to its original's case instead of opening its own.
CREATE TABLE linked_complaints (
    complaint_id           uuid PRIMARY KEY,
    original_complaint_id  uuid        NOT NULL REFERENCES cases (complaint_id),
    ticket_no              text        NOT NULL,
    linked_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE case_history (
    id            bigserial PRIMARY KEY,
    complaint_id  uuid        NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    status        text        NOT NULL,
    actor         text        NOT NULL,     -- an agent id, or 'system'
    note          text        NOT NULL
);
CREATE INDEX case_history_complaint ON case_history (complaint_id, id);
