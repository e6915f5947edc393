-- What a client sees of a rendition's wait and work (gateway/videos.py): its place in its rung's
-- queue (`queued_at` orders the rung's waiting renditions, as its queue holds their messages),
-- when its encode is expected to end, from the encoder's last reported speed (`eta_at`), and the
-- wall time of the ffmpeg run that made it (`encode_seconds`). A constant default adds the column
-- without rewriting the table; only waiting renditions need their real queueing time.
ALTER TABLE renditions
    ADD COLUMN queued_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN eta_at timestamptz,
    ADD COLUMN encode_seconds double precision;
UPDATE renditions SET queued_at = updated_at WHERE status = 'queued';
-- A deleted video that had failed kept its waiting renditions open; they end with it (as a
-- deletion now ends them), so no queue counts them.
UPDATE renditions SET status = 'canceled', updated_at = now()
 WHERE status IN ('queued', 'processing')
   AND video_id IN (SELECT id FROM videos WHERE deleted_at IS NOT NULL);
CREATE INDEX renditions_waiting ON renditions (quality, queued_at, video_id) WHERE status = 'queued';
