-- notifier: deliveries kept behind an open circuit are parked (delivery.py: _PARK), so
-- that the claim, which runs several times a second, no longer reads every one of them:
-- with a dead endpoint holding 20,000 deliveries each claim took 180 ms and PostgreSQL a
-- third of a core with no load at all. A parked row's next_attempt_at lies in the
-- future; the circuit's probe may still take it, and its closing resumes it (circuit.py).
ALTER TABLE deliveries ADD COLUMN parked boolean NOT NULL DEFAULT false;

-- The give-up scan (delivery.py: _EXPIRED) runs every second: by age, not the whole set.
CREATE INDEX deliveries_open_by_age ON deliveries (created_at)
    WHERE state IN ('pending', 'retrying');
