-- triage: complaints per (tenant, cause) per minute, so incident thresholds are sums over
-- a few hundred small rows instead of counts over every complaint in the window.

CREATE TABLE incident_counts (
    tenant_id   uuid        NOT NULL,
    kind        text        NOT NULL,
    cause       text        NOT NULL,
    minute      timestamptz NOT NULL,
    complaints  integer     NOT NULL,
    PRIMARY KEY (tenant_id, kind, cause, minute)
);
