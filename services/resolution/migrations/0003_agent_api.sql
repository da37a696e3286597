-- resolution: agents of one tenant each, what the agent API keeps, and the money ledger.

-- An agent works for one tenant. Agents created before tenants existed have none and
-- see no case at all.
ALTER TABLE agents ADD COLUMN tenant_id uuid;
CREATE INDEX agents_tenant ON agents (tenant_id);

ALTER TABLE cases
    ADD COLUMN customer_id   text,
    ADD COLUMN assigned_to   uuid REFERENCES agents (id),
    ADD COLUMN outcome       text,
    ADD COLUMN needs_review  boolean     NOT NULL DEFAULT false,
    ADD COLUMN first_responded_at timestamptz,  -- the first agent action the customer saw
    ADD COLUMN resolved_at   timestamptz,
    -- Kept by the clock store whenever a clock changes: the queue orders on them.
    ADD COLUMN next_due_at   timestamptz,
    ADD COLUMN breached      boolean     NOT NULL DEFAULT false;
CREATE INDEX cases_work_queue ON cases (tenant_id, needs_review DESC, next_due_at, complaint_id);

-- What the customer wrote (the complaint itself and follow-ups) and what agents wrote
-- back. Filled from complaints.received.v1, which may arrive before the case opens:
-- no foreign key to cases.
CREATE TABLE case_messages (
    id                  uuid PRIMARY KEY,
    complaint_id        uuid        NOT NULL,
    at                  timestamptz NOT NULL DEFAULT now(),
    author              text        NOT NULL CHECK (author IN ('customer', 'agent')),
    agent_id            uuid,
    text                text        NOT NULL,
    evidence            jsonb       NOT NULL DEFAULT '[]',
    request_information boolean     NOT NULL DEFAULT false
);
CREATE INDEX case_messages_complaint ON case_messages (complaint_id, at);

-- The money: append-only. A correction is a new 'reversal' entry naming the entry it
-- reverses; an approval is a row of ledger_approvals. Neither table is ever updated.
CREATE TABLE ledger_entries (
    id                 uuid PRIMARY KEY,
    seq                bigserial   NOT NULL UNIQUE,
    complaint_id       uuid        NOT NULL REFERENCES cases (complaint_id),
    tenant_id          uuid        NOT NULL,
    kind               text        NOT NULL
        CHECK (kind IN ('refund', 'compensation', 'explanation', 'rejection', 'reversal')),
    compensation_type  text        CHECK (compensation_type IN ('cash', 'coupon', 'points')),
    amount             numeric(19, 4) CHECK (amount IS NULL OR amount > 0),
    currency           text        CHECK (currency IS NULL OR currency ~ '^[A-Z]{3}$'),
    note               text        NOT NULL,
    requires_approval  boolean     NOT NULL DEFAULT false,
    decided_by         text        NOT NULL,          -- an agent id, or 'auto'
    reverses           uuid        REFERENCES ledger_entries (id),
    reasons            jsonb       NOT NULL DEFAULT '[]',
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'reversal') = (reverses IS NOT NULL)),
    CHECK (kind <> 'compensation' OR compensation_type IS NOT NULL),
    CHECK (kind NOT IN ('refund', 'compensation') OR (amount IS NOT NULL AND currency IS NOT NULL))
);
CREATE INDEX ledger_entries_complaint ON ledger_entries (complaint_id, seq);
CREATE UNIQUE INDEX ledger_entries_one_reversal ON ledger_entries (reverses)
    WHERE reverses IS NOT NULL;

CREATE TABLE ledger_approvals (
    entry_id     uuid PRIMARY KEY REFERENCES ledger_entries (id),
    approved_by  uuid        NOT NULL REFERENCES agents (id),
    approved_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % is refused (record a reversal)',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_approvals_append_only BEFORE UPDATE OR DELETE ON ledger_approvals
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_approvals_no_truncate BEFORE TRUNCATE ON ledger_approvals
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();

-- Automatic refunds, one row per customer and refund: the "once in 30 days" rule.
CREATE TABLE auto_refunds (
    entry_id     uuid PRIMARY KEY REFERENCES ledger_entries (id),
    tenant_id    uuid        NOT NULL,
    customer_id  text        NOT NULL,
    refunded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auto_refunds_customer ON auto_refunds (tenant_id, customer_id, refunded_at);

-- Idempotency-Key of the agent API's money calls, per agent: the first answer, kept.
CREATE TABLE idempotency_keys (
    agent_id     uuid        NOT NULL REFERENCES agents (id),
    key          text        NOT NULL,
    fingerprint  text        NOT NULL,   -- sha256 of method, path and canonical body
    status_code  int         NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, key)
);
