-- resolution: duplicates that arrive before their original.
--
-- complaint.triaged of a duplicate can be handled before its original's (another key, so
-- another partition). It waits here, opening nothing, until the original's case opens;
-- that transaction links it. Keyed by the duplicate; looked up by its original.
CREATE TABLE pending_links (
    complaint_id           uuid PRIMARY KEY,
    original_complaint_id  uuid        NOT NULL,
    triaged_event          jsonb       NOT NULL,   -- the duplicate's envelope, to answer it later
    waiting_since          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_links_original ON pending_links (original_complaint_id);
CREATE INDEX pending_links_waiting ON pending_links (waiting_since);

-- A duplicate whose original never arrived opens a case of its own after a grace period;
-- it then stands in for the original, and the original, if it arrives after all, is
-- linked to it: still one case per duplicate group.
ALTER TABLE cases ADD COLUMN stands_in_for uuid;
CREATE UNIQUE INDEX cases_stands_in_for ON cases (stands_in_for) WHERE stands_in_for IS NOT NULL;
