-- The gateway's tables: clients and their keys, videos, renditions, the event log, the outbox,
-- idempotency keys and webhook subscriptions. The gateway is their only writer.

CREATE TABLE clients (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    -- signs the events sent to a video's own callback_url (Standard Webhooks, whsec_…)
    callback_secret text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    client_id    text NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    name         text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,   -- sha256 of the key; the key itself is never stored
    prefix       text NOT NULL,           -- first characters, to tell keys apart in listings
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE videos (
    id               text PRIMARY KEY,
    client_id        text NOT NULL REFERENCES clients (id),
    status           text NOT NULL CHECK (status IN ('queued','processing','ready','failed','canceled')),
    source           jsonb NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}',
    callback_url     text,
    notify_email     text,
    error            text,
    thumbnail_status text NOT NULL DEFAULT 'queued',
    thumbnail_widths integer[] NOT NULL DEFAULT '{}',
    thumbnail_error  text,
    last_sequence    integer NOT NULL DEFAULT 0,   -- sequence of the video's newest event
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);
CREATE INDEX videos_by_client ON videos (client_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;

CREATE TABLE renditions (
    video_id    text NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    quality     text NOT NULL,
    position    integer NOT NULL,          -- ladder order, highest rung first
    status      text NOT NULL DEFAULT 'queued',
    progress    real NOT NULL DEFAULT 0,
    width       integer NOT NULL,
    height      integer NOT NULL,
    size_bytes  bigint,
    duration_s  double precision,
    error       text,
    job_id      text NOT NULL,             -- the current dispatch; reports of older ones are stale
    attempts    integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (video_id, quality)
);

-- Every public event, as sent: the SSE replay (Last-Event-ID) and the per-video timeline.
CREATE TABLE video_events (
    id          text PRIMARY KEY,
    video_id    text NOT NULL,
    sequence    integer NOT NULL,
    type        text NOT NULL,
    occurred_at timestamptz NOT NULL,
    body        jsonb NOT NULL,
    UNIQUE (video_id, sequence)
);

-- Inbox of the projection: worker reports already applied (their ids are deterministic).
CREATE TABLE processed_reports (
    id           text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox: written with the state change, published by the relay with confirms.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    exchange       text NOT NULL,
    routing_key    text NOT NULL,
    message_id     text NOT NULL,
    type           text NOT NULL,
    correlation_id text,
    headers        jsonb NOT NULL DEFAULT '{}',
    body           bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vidq_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE idempotency_keys (
    client_id   text NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    key         text NOT NULL,
    status_code integer,           -- NULL while the first request is still being handled
    response    jsonb,
    video_id    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, key)
);

CREATE TABLE webhooks (
    id              text PRIMARY KEY,
    client_id       text NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    url             text NOT NULL,
    events          text[] NOT NULL,
    description     text NOT NULL DEFAULT '',
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    secret          text NOT NULL,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE INDEX webhooks_by_client ON webhooks (client_id) WHERE deleted_at IS NULL;
