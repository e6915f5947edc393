-- Who hears about a client's videos (video.ready / video.failed) besides a video's own
-- notify_email, and about its webhook endpoints being disabled.
ALTER TABLE clients ADD COLUMN notify_emails text[] NOT NULL DEFAULT '{}';
