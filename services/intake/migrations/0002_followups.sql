-- intake: customer follow-up messages and satisfaction feedback, and ticket numbers
-- handed out in blocks.

-- Each intake process reserves 100 ticket numbers with one nextval() and numbers its
-- complaints from that block, so accepting a complaint is a single INSERT statement.
ALTER SEQUENCE ticket_seq INCREMENT BY 100;

-- Idempotency-Key is optional on these endpoints: NULL keys never conflict (NULLs are
-- distinct in a UNIQUE constraint), a given key is used once per tenant and endpoint.
CREATE TABLE complaint_messages (
    id               uuid PRIMARY KEY,
    complaint_id     uuid        NOT NULL REFERENCES complaints (id),
    tenant_id        uuid        NOT NULL REFERENCES tenants (id),
    idempotency_key  text,
    request_hash     bytea       NOT NULL,
    text             text        NOT NULL,
    evidence         jsonb       NOT NULL DEFAULT '[]',
    received_at      timestamptz NOT NULL,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX complaint_messages_complaint ON complaint_messages (complaint_id, received_at);

CREATE TABLE complaint_feedback (
    id               uuid PRIMARY KEY,
    complaint_id     uuid        NOT NULL REFERENCES complaints (id),
    tenant_id        uuid        NOT NULL REFERENCES tenants (id),
    idempotency_key  text,
    request_hash     bytea       NOT NULL,
    score            smallint    NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment          text,
    reopened         boolean     NOT NULL,
    status_after     text        NOT NULL,   -- what the answer said, so a replay says it again
    received_at      timestamptz NOT NULL,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX complaint_feedback_complaint ON complaint_feedback (complaint_id, received_at);
