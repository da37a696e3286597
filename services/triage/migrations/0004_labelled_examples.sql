-- triage: what it classified, and the agents' corrections of it as labelled examples.
--
-- The text and facts the classifier read, kept with the decision, so a correction can be
-- turned into a training example without asking intake. Nullable: rows triaged before
-- this migration have none (their corrections are not recorded, see corrections.py).
ALTER TABLE triaged_complaints
    ADD COLUMN description text,
    ADD COLUMN channel     text,
    ADD COLUMN amount      numeric(19, 4),
    ADD COLUMN currency    text;

-- One example per complaint: a redelivered correction, or a second one, updates it.
-- `previous_category`/`previous_priority` are triage's own decision (triaged_complaints),
-- whatever corrections came between; `category`/`priority` the agent's latest label.
CREATE TABLE labelled_examples (
    complaint_id       uuid PRIMARY KEY,
    tenant_id          uuid        NOT NULL,
    ticket_no          text        NOT NULL,
    description        text        NOT NULL,
    channel            text,
    amount             numeric(19, 4),
    currency           text,
    category           text        NOT NULL,
    priority           text        NOT NULL,
    previous_category  text        NOT NULL,
    previous_priority  text        NOT NULL,
    corrected_by       text        NOT NULL,
    event_id           uuid        NOT NULL,  -- the complaint.recategorised it came from
    recorded_at        timestamptz NOT NULL   -- when the agent corrected it (the event's time)
);
CREATE INDEX labelled_examples_in_order ON labelled_examples (recorded_at, complaint_id);
