-- No query reads the notifier's events by client: a replay reads the gateway's event log, and the
-- delivery log is read by endpoint and joined to its events by id. The index only cost every
-- event an entry on the hot path, where 0005 put the one the retention pass needs.
DROP INDEX IF EXISTS notifier_events_by_client;
