-- notifier: where each complaint's notifications go, and the delivery queue.

CREATE TABLE recipients (
    complaint_id  uuid PRIMARY KEY,
    tenant_id     uuid        NOT NULL,
    ticket_no     text        NOT NULL,
    webhook_url   text        NOT NULL,
    locale        text        NOT NULL,
    email         text,                   -- customer contact: never logged
    received_at   timestamptz NOT NULL
);

-- One row per notification per channel. `body` is rendered at the first attempt (the
-- recipient's locale may arrive after the event that caused it) and kept with its
-- outcome: a retry resends the same bytes and the same event_id.
CREATE TABLE deliveries (
    id               bigserial PRIMARY KEY,
    event_id         uuid        NOT NULL UNIQUE,
    complaint_id     uuid        NOT NULL,
    tenant_id        uuid        NOT NULL,
    ticket_no        text        NOT NULL,
    correlation_id   uuid        NOT NULL,
    type             text        NOT NULL,
    template         text        NOT NULL,
    data             jsonb       NOT NULL,
    occurred_at      timestamptz NOT NULL,
    channel          text        NOT NULL DEFAULT 'webhook',
    body             bytea,
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_per_complaint ON deliveries (complaint_id, id);

CREATE FUNCTION deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('notifier_deliveries', '');
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_inserted AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_notify();
