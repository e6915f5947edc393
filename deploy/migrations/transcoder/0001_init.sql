-- The transcoder's job claims. A transcoder acknowledges a TranscodeRendition only after it has
-- claimed the job here with a lease, and renews the lease while ffmpeg runs; a job whose lease
-- ran out (its transcoder died) is dispatched again by any live transcoder.

CREATE TABLE transcode_jobs (
    job_id           text PRIMARY KEY,
    video_id         text NOT NULL,
    quality          text NOT NULL,
    state            text NOT NULL CHECK (state IN ('claimed','retrying','done','failed','canceled')),
    attempt          integer NOT NULL DEFAULT 1,
    lease_owner      text,
    lease_expires_at timestamptz,
    command          jsonb NOT NULL,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transcode_jobs_leases ON transcode_jobs (lease_expires_at) WHERE state = 'claimed';
CREATE INDEX transcode_jobs_by_video ON transcode_jobs (video_id);
