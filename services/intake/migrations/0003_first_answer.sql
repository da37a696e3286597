-- intake: the first_response_due the 202 answer promised, kept as answered.
-- complaints.first_response_due is the read model's and moves when triage sets the real
-- due time; an idempotent replay of POST /v1/complaints must answer exactly what the
-- first request was answered (CONTRACT section 3).
ALTER TABLE complaints ADD COLUMN ack_first_response_due timestamptz;

-- Not yet triaged: the read model still holds the provisional due time that was answered.
-- Triaged before this migration: the answered value is gone; a replay of those falls back
-- to the read model's value (what replays answered until now).
UPDATE complaints SET ack_first_response_due = first_response_due
WHERE category IS NULL AND status = 'received';
