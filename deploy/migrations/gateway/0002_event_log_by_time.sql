-- Replays read a client's events by time.
CREATE INDEX video_events_by_time ON video_events (occurred_at);
