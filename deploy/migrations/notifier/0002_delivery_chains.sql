-- A replay restarts a delivery's retry schedule: automatic attempts are counted from here.
ALTER TABLE webhook_deliveries ADD COLUMN chain_started_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
