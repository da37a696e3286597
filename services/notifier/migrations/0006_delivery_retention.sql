-- notifier: finished deliveries (and their attempts) are deleted a retention period after
-- they reached a final state (services/notifier/retention.py: DeliveryRetention).

-- When the delivery became delivered or failed, set by the transition itself. Rows that
-- finished before this migration have none: their end is read from delivered_at, else
-- from next_attempt_at (the end of the lease their outcome was recorded under), so the
-- migration rewrites no row (with autovacuum off, a rewrite would double the table).
ALTER TABLE deliveries ADD COLUMN finished_at timestamptz;

CREATE FUNCTION deliveries_finished_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.finished_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER deliveries_finished BEFORE UPDATE OF state ON deliveries
    FOR EACH ROW WHEN (NEW.state IN ('delivered', 'failed')
                       AND OLD.state NOT IN ('delivered', 'failed'))
    EXECUTE FUNCTION deliveries_finished_at();

-- The retention's scan: finished rows by when they finished.
CREATE INDEX deliveries_finished ON deliveries
    ((coalesce(finished_at, delivered_at, next_attempt_at)))
    WHERE state IN ('delivered', 'failed');

-- Deleting a delivery checks that no e-mail twin names it (source_id): without an index
-- every such check would read the whole table.
CREATE INDEX deliveries_source ON deliveries (source_id) WHERE source_id IS NOT NULL;
