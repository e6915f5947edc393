-- What the request under an Idempotency-Key was (a SHA-256 of the file, its name and the text
-- fields): a later request with the same key and a different fingerprint is refused (422)
-- instead of answered with the first request's result. NULL on rows kept from before.
ALTER TABLE idempotency_keys ADD COLUMN fingerprint text;
