-- Keys the gateway signs with (signed media links: gateway/links.py). The first gateway to start
-- makes one; `python -m gateway links rotate` adds a newer one (and can revoke the others). Every
-- gateway signs with the newest and accepts those whose links may still be unexpired.
CREATE TABLE signing_keys (
    id         bigserial PRIMARY KEY,
    purpose    text NOT NULL,
    secret     bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at timestamptz
);
CREATE INDEX signing_keys_by_purpose ON signing_keys (purpose, created_at DESC) WHERE revoked_at IS NULL;
