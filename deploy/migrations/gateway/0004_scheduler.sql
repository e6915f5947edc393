-- When each periodic job last ran (across every gateway replica), and what it did.
CREATE TABLE scheduled_runs (
    name        text PRIMARY KEY,
    last_run_at timestamptz NOT NULL,
    last_result integer NOT NULL DEFAULT 0
);
