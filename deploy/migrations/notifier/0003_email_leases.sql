-- A send holds its email (event, recipient) until it settles or its lease runs out, so two copies
-- of one event handled at once never send it twice; a send cut short by a crash is retried once
-- the lease has expired.
ALTER TABLE email_log ADD COLUMN lease_until timestamptz;
