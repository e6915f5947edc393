-- Resumable uploads (tus 1.0, gateway/resumable.py): a file sent in pieces, each PATCH appended
-- to a partial file in storage. `received` is the offset the next PATCH must start at; it only
-- moves once the bytes before it are on disk (fsync). One request writes at a time: `writer`
-- holds a lease until `writer_until`, renewed while the body streams. `direct_upload_id`: made
-- through a direct upload's signed URL (a browser, without the API key), which it settles.
CREATE TABLE resumable_uploads (
    id              text PRIMARY KEY,
    client_id       text NOT NULL REFERENCES clients (id),
    direct_upload_id text,
    video_id        text NOT NULL UNIQUE,
    length          bigint NOT NULL CHECK (length > 0),
    received        bigint NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= length),
    filename        text NOT NULL,
    fields          jsonb NOT NULL,
    upload_metadata text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'receiving'
                    CHECK (status IN ('receiving', 'complete', 'failed', 'terminated', 'expired')),
    error           text,
    writer          text,
    writer_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX resumable_uploads_open ON resumable_uploads (client_id) WHERE status = 'receiving';
CREATE INDEX resumable_uploads_by_expiry ON resumable_uploads (expires_at);
