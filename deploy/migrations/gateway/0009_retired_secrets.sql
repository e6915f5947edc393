-- Every secret a rotation retired signs beside the current one until its own grace ends, not
-- only the last one (two rotations within a day used to cut the first secret off at once).
-- Parallel arrays, newest first: retired_secrets[i] signs until retired_until[i].
ALTER TABLE webhooks
    ADD COLUMN retired_secrets text[] NOT NULL DEFAULT '{}',
    ADD COLUMN retired_until timestamptz[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT webhooks_retired_pairs
        CHECK (cardinality(retired_secrets) = cardinality(retired_until));
UPDATE webhooks
   SET retired_secrets = ARRAY[previous_secret], retired_until = ARRAY[previous_secret_expires_at]
 WHERE previous_secret IS NOT NULL AND previous_secret_expires_at > now();
ALTER TABLE webhooks DROP COLUMN previous_secret, DROP COLUMN previous_secret_expires_at;
