-- The notifier's tables: events it received, one delivery per (event, endpoint) with every
-- attempt, and the email log. The notifier is their only writer; the gateway reads the
-- delivery log to serve GET /v1/webhooks/{id}/deliveries.

CREATE TABLE notifier_events (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    video_id    text NOT NULL,
    client_id   text NOT NULL,
    occurred_at timestamptz NOT NULL,
    body        bytea NOT NULL,          -- the exact bytes every endpoint receives
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifier_events_by_client ON notifier_events (client_id, occurred_at);

CREATE TABLE webhook_deliveries (
    id               text PRIMARY KEY,
    event_id         text NOT NULL REFERENCES notifier_events (id),
    client_id        text NOT NULL,
    target           text NOT NULL,      -- a webhook id, or 'callback' for the video's callback_url
    webhook_id       text,
    url              text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending','succeeded','failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    -- held while an attempt is in flight, so two copies of a command never send at once
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    UNIQUE (event_id, target)
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at DESC);

CREATE TABLE webhook_attempts (
    id            bigserial PRIMARY KEY,
    delivery_id   text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    status_code   integer,
    latency_ms    integer NOT NULL,
    error         text,
    response_body text,
    manual        boolean NOT NULL DEFAULT false
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);

CREATE TABLE email_log (
    event_id   text NOT NULL,
    recipient  text NOT NULL,
    status     text NOT NULL CHECK (status IN ('sending','sent','failed')),
    attempts   integer NOT NULL DEFAULT 0,
    error      text,
    sent_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, recipient)
);
