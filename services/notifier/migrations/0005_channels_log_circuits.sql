-- notifier: e-mail as a channel of its own, the delivery log, per-endpoint circuit
-- breakers (replacing the tenant back-off of 0002) and the contact retention.

-- The endpoint a webhook goes to: scheme://host[:port], lower case, without user info,
-- path or query. Circuits are per endpoint, so every recipient of one endpoint shares it.
ALTER TABLE recipients ADD COLUMN endpoint text GENERATED ALWAYS AS (
    regexp_replace(lower(webhook_url), '^([a-z][a-z0-9+.-]*://)([^@/?#]*@)?([^/?#]*).*$', '\1\3')
) STORED;
CREATE INDEX recipients_endpoint ON recipients (endpoint);

-- An e-mail row is the twin of a webhook row (same notification): `source_id` names it,
-- so the twin is made once whichever of the recipient and the case event comes first.
ALTER TABLE deliveries ADD COLUMN source_id bigint REFERENCES deliveries (id);
CREATE UNIQUE INDEX deliveries_one_email_per_notification ON deliveries (source_id)
    WHERE channel = 'email';
ALTER TABLE deliveries ADD CONSTRAINT deliveries_channel_check
    CHECK (channel IN ('webhook', 'email'));
DROP INDEX deliveries_per_complaint;
CREATE INDEX deliveries_per_complaint ON deliveries (complaint_id, channel, id);
DROP INDEX deliveries_open_by_tenant;

-- Every attempt, in the transaction that records its outcome. `endpoint` is the
-- webhook's scheme://host:port or the SMTP server's: never a path, query or address.
CREATE TABLE delivery_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  bigint      NOT NULL REFERENCES deliveries (id),
    attempt      integer     NOT NULL,
    at           timestamptz NOT NULL,
    channel      text        NOT NULL,
    endpoint     text        NOT NULL,
    status_code  integer,                -- HTTP status or SMTP reply code
    error        text,                   -- by type: "HTTP 503", "SMTP 451", "ConnectError"
    latency_ms   integer     NOT NULL,
    UNIQUE (delivery_id, attempt)
);

-- One breaker per endpoint, shared by every notifier instance (delivery.py: Circuit).
--   closed ──(N consecutive failures)──▶ open ──(cool-down)──▶ half_open: one probe
--   half_open ──success──▶ closed;  half_open ──failure──▶ open (longer cool-down)
CREATE TABLE circuits (
    endpoint      text PRIMARY KEY,
    channel       text        NOT NULL,
    state         text        NOT NULL DEFAULT 'closed'
                  CHECK (state IN ('closed', 'open', 'half_open')),
    failures      integer     NOT NULL DEFAULT 0,   -- consecutive, while closed
    opened        integer     NOT NULL DEFAULT 0,   -- times opened since last closed
    open_until    timestamptz,
    probe_until   timestamptz,                      -- a probe's lease, while half_open
    last_error    text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX circuits_not_closed ON circuits (open_until) WHERE state <> 'closed';

-- When the case was resolved or closed (NULL while open or reopened): the customer's
-- address is purged a retention period later. Kept apart from recipients, as the case
-- event may be handled before complaint.received.
CREATE TABLE contact_retention (
    complaint_id  uuid PRIMARY KEY,
    closed_at     timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contact_retention_closed ON contact_retention (closed_at)
    WHERE closed_at IS NOT NULL;
ALTER TABLE recipients ADD COLUMN contact_purged_at timestamptz;
