-- notifier: an unreachable webhook postpones all of its tenant's pending deliveries.
CREATE INDEX deliveries_pending_by_tenant ON deliveries (tenant_id) WHERE state = 'pending';
