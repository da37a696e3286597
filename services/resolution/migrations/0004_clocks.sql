-- resolution: the case clocks (services/resolution/clocks.py has the rules).
--
-- One row per clock per case and round: a reopened case gets a fresh resolution clock,
-- round 2, 3, ... The earlier rounds stay as they ended.
CREATE TABLE clocks (
    complaint_id     uuid        NOT NULL REFERENCES cases (complaint_id),
    name             text        NOT NULL
        CHECK (name IN ('first_response', 'resolution', 'legal_response', 'legal_final')),
    round            int         NOT NULL DEFAULT 1 CHECK (round >= 1),
    kind             text        NOT NULL CHECK (kind IN ('internal', 'legal')),
    state            text        NOT NULL CHECK (state IN ('running', 'paused', 'met', 'breached')),
    started_at       timestamptz NOT NULL,
    due_at           timestamptz NOT NULL,
    duration         interval    NOT NULL,  -- the original promise: a new round's and a new estimate's
    paused_at        timestamptz,
    remaining        interval,              -- what was left when paused (negative: overdue)
    met_at           timestamptz,
    breached_at      timestamptz,
    new_estimate     timestamptz,           -- told to the customer after the breach
    breach_event_id  uuid        UNIQUE,    -- the one complaint.sla_breached of this clock
    extensions       int         NOT NULL DEFAULT 0 CHECK (extensions BETWEEN 0 AND 2),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (complaint_id, name, round),
    -- Legal clocks never pause; a paused clock knows what was left.
    CHECK (state <> 'paused' OR (kind = 'internal' AND paused_at IS NOT NULL AND remaining IS NOT NULL)),
    CHECK (state <> 'met' OR met_at IS NOT NULL),
    CHECK ((state = 'breached') = (breached_at IS NOT NULL AND breach_event_id IS NOT NULL)),
    CHECK (extensions = 0 OR name = 'legal_final')
);
-- The scheduler's scan: running clocks by due time.
CREATE INDEX clocks_running_due ON clocks (due_at) WHERE state = 'running';

-- A breach is final: once breached, a clock is never running, met or breached again, so
-- complaint.sla_breached (written in the transaction that breaches the row) goes out once.
CREATE FUNCTION clocks_breach_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state = 'breached' AND (NEW.state <> 'breached'
            OR NEW.breach_event_id IS DISTINCT FROM OLD.breach_event_id
            OR NEW.breached_at IS DISTINCT FROM OLD.breached_at) THEN
        RAISE EXCEPTION 'clock % of % round % is breached: a breach is final',
            OLD.name, OLD.complaint_id, OLD.round USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER clocks_breach_is_final BEFORE UPDATE ON clocks
    FOR EACH ROW EXECUTE FUNCTION clocks_breach_is_final();

-- Each approver's extension of a legal deadline (cn: 15 -> 30 -> 60 days).
CREATE TABLE clock_extensions (
    complaint_id     uuid        NOT NULL,
    name             text        NOT NULL,
    round            int         NOT NULL,
    extensions       int         NOT NULL,  -- 1 or 2: the step this row took
    previous_due_at  timestamptz NOT NULL,
    due_at           timestamptz NOT NULL,
    approved_by      uuid        NOT NULL REFERENCES agents (id),
    reason           text        NOT NULL,
    at               timestamptz NOT NULL,
    PRIMARY KEY (complaint_id, name, round, extensions),
    FOREIGN KEY (complaint_id, name, round) REFERENCES clocks (complaint_id, name, round)
);
