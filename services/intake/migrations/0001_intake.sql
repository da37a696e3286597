-- intake: tenants, their API keys (hashes only), complaints and the read model.

CREATE TABLE tenants (
    id            uuid PRIMARY KEY,
    name          text        NOT NULL,
    webhook_url   text        NOT NULL,
    jurisdiction  text        NOT NULL CHECK (jurisdiction IN ('cn', 'eu', 'uk', 'us')),
    locale        text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    secret_hash  bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz            -- set on rotation: the old key's overlap window
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- Ticket numbers come from one sequence: unique without a hot counter row.
CREATE SEQUENCE ticket_seq;

CREATE TABLE complaints (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid        NOT NULL REFERENCES tenants (id),
    ticket_no           text        NOT NULL UNIQUE,
    idempotency_key     text        NOT NULL,
    request_hash        bytea       NOT NULL,
    customer_id         text        NOT NULL,
    customer            jsonb       NOT NULL,   -- locale, email, phone: never logged
    channel             text        NOT NULL,
    description         text        NOT NULL,
    amount              numeric,
    currency            text,
    transaction_ref     text,
    merchant            text,
    occurred_at         timestamptz,
    category_hint       text,
    evidence            jsonb       NOT NULL DEFAULT '[]',
    received_at         timestamptz NOT NULL,
    -- read model, kept current from the other services' events
    status              text        NOT NULL DEFAULT 'received',
    category            text,
    priority            text,
    first_response_due  timestamptz NOT NULL,
    resolution_due      timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX complaints_tenant_recent ON complaints (tenant_id, received_at DESC, id DESC);
CREATE INDEX complaints_tenant_customer ON complaints (tenant_id, customer_id, received_at DESC);

CREATE TABLE complaint_timeline (
    id            bigserial PRIMARY KEY,
    complaint_id  uuid        NOT NULL REFERENCES complaints (id),
    at            timestamptz NOT NULL,
    status        text        NOT NULL,
    detail        text        NOT NULL
);
CREATE INDEX complaint_timeline_complaint ON complaint_timeline (complaint_id, at, id);

CREATE TABLE complaint_resolutions (
    resolution_id  uuid PRIMARY KEY,
    complaint_id   uuid        NOT NULL REFERENCES complaints (id),
    kind           text        NOT NULL,
    amount         numeric,
    currency       text,
    status         text        NOT NULL,
    recorded_at    timestamptz NOT NULL
);
CREATE INDEX complaint_resolutions_complaint ON complaint_resolutions (complaint_id);
