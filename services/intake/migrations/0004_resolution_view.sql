-- intake: what the wallet app sees of the case's resolution (issue 10): each ledger entry
-- with its compensation type, the entry a reversal corrects and how it was decided; the
-- outcome once resolved; the case's clocks as resolution last reported them.

ALTER TABLE complaint_resolutions
    ADD COLUMN compensation_type text,
    ADD COLUMN reverses          uuid,          -- kind reversal: the entry it corrects
    ADD COLUMN decided_by        text CHECK (decided_by IN ('agent', 'auto')),  -- never an agent id
    ADD COLUMN approved_at       timestamptz;
-- "Is this entry reversed?" is answered on read from the reversals pointing at it, so a
-- reversal arriving before its entry needs no repair.
CREATE INDEX complaint_resolutions_reverses ON complaint_resolutions (reverses)
    WHERE reverses IS NOT NULL;

ALTER TABLE complaints
    ADD COLUMN outcome           text,
    ADD COLUMN company_response  text,
    ADD COLUMN clocks            jsonb NOT NULL DEFAULT '[]',
    -- occurred_at of the event the clocks came from: an older event never overwrites them
    ADD COLUMN clocks_at         timestamptz;
