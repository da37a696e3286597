-- triage: incidents, clusters of complaints with one cause (a merchant, a category spike).

CREATE TABLE incidents (
    id               uuid PRIMARY KEY,
    tenant_id        uuid        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('merchant', 'category')),
    cause            text        NOT NULL,     -- the merchant (normalised) or the category
    category         text        NOT NULL,
    opened_at        timestamptz NOT NULL,
    last_seen_at     timestamptz NOT NULL,
    complaint_count  integer     NOT NULL
);
CREATE INDEX incidents_open_lookup ON incidents (tenant_id, kind, cause, last_seen_at DESC);

ALTER TABLE triaged_complaints ADD COLUMN merchant_key text;
CREATE INDEX triaged_by_merchant ON triaged_complaints (tenant_id, merchant_key, received_at)
    WHERE merchant_key IS NOT NULL;
CREATE INDEX triaged_by_category ON triaged_complaints (tenant_id, category, received_at);
