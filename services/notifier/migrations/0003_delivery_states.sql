-- notifier: the delivery state machine (services/notifier/delivery.py).
--
--   pending ──▶ retrying ──▶ delivered | failed      (pending ──▶ delivered | failed too)
--
-- 'pending' and 'retrying' are open: claimable once next_attempt_at has passed. A claim
-- sets a fresh lease_id and pushes next_attempt_at to the lease's end; an outcome is
-- recorded only by the holder of the current lease_id. 'delivered' and 'failed' are final.

ALTER TABLE deliveries ADD COLUMN lease_id uuid;

ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('pending', 'retrying', 'delivered', 'failed'));
UPDATE deliveries SET state = 'retrying' WHERE state = 'pending' AND last_error IS NOT NULL;

DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state IN ('pending', 'retrying');
DROP INDEX deliveries_pending_by_tenant;
CREATE INDEX deliveries_open_by_tenant ON deliveries (tenant_id)
    WHERE state IN ('pending', 'retrying');

-- Never back from a final state, whatever statement tries it.
CREATE FUNCTION deliveries_final_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'delivery % is % already: a final state never changes', OLD.id, OLD.state;
END $$;
CREATE TRIGGER deliveries_final BEFORE UPDATE OF state ON deliveries
    FOR EACH ROW WHEN (OLD.state IN ('delivered', 'failed') AND NEW.state IS DISTINCT FROM OLD.state)
    EXECUTE FUNCTION deliveries_final_state();
