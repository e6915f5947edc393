-- A failed poster can be made again (POST /v1/videos/{id}/thumbnail/retry). Each run after the
-- upload's own has an id (`thumbnail_run`, NULL for the upload's run); the thumbnailer's reports
-- carry it, so a late report of an earlier run is told apart from the current one's and ignored.
ALTER TABLE videos ADD COLUMN thumbnail_run text;
