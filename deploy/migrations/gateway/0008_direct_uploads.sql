-- Direct uploads: a signed URL a client hands to a browser, which uploads one file to it without
-- the API key (gateway/api/uploads.py). The video's options are the client's, set here.
CREATE TABLE direct_uploads (
    id          text PRIMARY KEY,
    client_id   text NOT NULL REFERENCES clients (id),
    fields      jsonb NOT NULL,
    cors_origin text,
    status      text NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'asset_created', 'cancelled')),
    video_id    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX direct_uploads_by_client ON direct_uploads (client_id, created_at DESC, id DESC);
