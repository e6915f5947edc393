-- Tell whoever keeps a copy of the webhook subscriptions (the notifier caches who listens to a
-- video's events) that a client's endpoints changed: created, edited, disabled, rotated or
-- deleted. The payload is the client id; a listener that misses one (its connection dropped)
-- forgets its whole copy.
CREATE FUNCTION webhooks_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vidq_webhooks', COALESCE(NEW.client_id, OLD.client_id));
    RETURN NULL;
END $$;

CREATE TRIGGER webhooks_changed AFTER INSERT OR UPDATE OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION webhooks_changed();
