-- What a client sees of a rendition's wait and work (gateway/videos.py): its place in its rung's
-- queue (`queued_at` orders the rung's waiting renditions, as its queue holds their messages),
-- when its encode is expected to end, from the encoder's last reported speed (`eta_at`), and the
-- wall time of the ffmpeg run that made it (`encode_seconds`).
ALTER TABLE renditions
    ADD COLUMN queued_at timestamptz,
    ADD COLUMN eta_at timestamptz,
    ADD COLUMN encode_seconds double precision;
UPDATE renditions SET queued_at = updated_at;
ALTER TABLE renditions ALTER COLUMN queued_at SET NOT NULL, ALTER COLUMN queued_at SET DEFAULT now();
CREATE INDEX renditions_waiting ON renditions (quality, queued_at, video_id) WHERE status = 'queued';
