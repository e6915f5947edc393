-- A delivery row is written once and then updated by every attempt (lease, outcome). With room
-- left on each page the update stays on the row's page (a HOT update): no new index entries and
-- less to vacuum; none of the updated columns is indexed.
ALTER TABLE webhook_deliveries SET (fillfactor = 70);
-- The unique (event_id, target) index serves lookups by event as well.
DROP INDEX IF EXISTS webhook_deliveries_by_event;
