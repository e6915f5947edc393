-- The delivery log is kept for VIDQ_DELIVERY_LOG_RETENTION_S (30 days by default) and then
-- pruned, oldest events first (notifier/retention.py). These indexes let each pass find the
-- oldest rows without reading the tables.
--
-- The foreign keys dropped in 0004 stay true: a pass deletes an event together with every one
-- of its deliveries and their attempts, in one statement, and never while a delivery is pending
-- or leased (notifier/repository.py: prune_delivery_log).
CREATE INDEX IF NOT EXISTS notifier_events_by_received ON notifier_events (received_at);
CREATE INDEX IF NOT EXISTS email_log_by_created ON email_log (created_at);
