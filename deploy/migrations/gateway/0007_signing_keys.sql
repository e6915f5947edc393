-- Keys the gateway signs with (signed media links: gateway/links.py). Made at the first start by
-- whichever gateway gets there first, then shared by every replica.
CREATE TABLE signing_keys (
    name       text PRIMARY KEY,
    secret     bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
