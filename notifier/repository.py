"""The notifier's own SQL: received events, deliveries and their attempts, the email log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from notifier.lookups import SIGNING_SECRETS_SQL
from notifier.webhook import DeliveryResult

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


async def insert_event(
    conn: Conn,
    *,
    event_id: str,
    type_: str,
    video_id: str,
    client_id: str,
    occurred_at: datetime,
    body: bytes,
) -> None:
    """Record an event if it is new; either way, hold its row until the transaction ends.

    The lock (``DO UPDATE … WHERE false`` locks the existing row and writes nothing) keeps the
    retention pass from deleting an event between this and the delivery the caller writes for it
    (``prune_delivery_log``).
    """
    await conn.execute(
        """INSERT INTO notifier_events (id, type, video_id, client_id, occurred_at, body)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id WHERE false""",
        event_id,
        type_,
        video_id,
        client_id,
        occurred_at,
        body,
    )


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    type: str
    video_id: str
    client_id: str
    occurred_at: datetime
    body: bytes


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: str
    event_id: str
    client_id: str
    target: str  # a webhook id, or 'callback'
    webhook_id: str | None
    url: str


@dataclass(frozen=True, slots=True)
class ClaimState:
    """What a claim found for one (event, target): ``claimed``, or why not."""

    delivery_id: str
    claimed: bool
    #: Not claimed: ``held`` (an attempt holds its lease right now), ``scheduled`` (a command
    #: owns it: a retry, a replay or a deferral) or ``settled`` (succeeded or failed).
    why_not: str | None = None


async def claim_deliveries(
    conn: Conn, events: Sequence[NewEvent], deliveries: Sequence[NewDelivery], lease_s: float
) -> dict[tuple[str, str], ClaimState]:
    """Record events and hold their deliveries for a first attempt, in one statement (one commit).

    A delivery is claimed if it is new, or if it exists untried and unheld (an earlier copy of
    the event recorded it and then died before its attempt). Keyed by (event id, target); the
    same key must not appear twice. Rows are written in key order, so two claims that share
    deliveries never deadlock.
    """
    ordered = sorted(deliveries, key=lambda d: (d.event_id, d.target))
    rows = await conn.fetch(
        """WITH events AS (
               INSERT INTO notifier_events (id, type, video_id, client_id, occurred_at, body)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                                    $6::bytea[])
               ON CONFLICT (id) DO NOTHING),
           wanted AS (
               SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
                   WITH ORDINALITY AS w(id, event_id, client_id, target, webhook_id, url, n)),
           claimed AS (
               INSERT INTO webhook_deliveries AS d
                   (id, event_id, client_id, target, webhook_id, url, status, lease_until)
               SELECT id, event_id, client_id, target, webhook_id, url, 'pending',
                      now() + make_interval(secs => $13)
               FROM wanted ORDER BY n
               ON CONFLICT (event_id, target) DO UPDATE
               SET lease_until = EXCLUDED.lease_until, url = EXCLUDED.url, updated_at = now()
               WHERE d.status = 'pending' AND d.attempts = 0 AND d.next_attempt_at IS NULL
                 AND (d.lease_until IS NULL OR d.lease_until < now())
               RETURNING d.id, d.event_id, d.target)
           SELECT id, event_id, target, true AS claimed, NULL AS why_not FROM claimed
           UNION ALL
           SELECT d.id, d.event_id, d.target, false,
                  CASE WHEN d.status <> 'pending' THEN 'settled'
                       WHEN d.lease_until > now() THEN 'held'
                       ELSE 'scheduled' END
           FROM webhook_deliveries d JOIN wanted w ON d.event_id = w.event_id AND d.target = w.target
           WHERE NOT EXISTS (SELECT FROM claimed c WHERE c.event_id = d.event_id AND c.target = d.target)""",
        [e.id for e in events],
        [e.type for e in events],
        [e.video_id for e in events],
        [e.client_id for e in events],
        [e.occurred_at for e in events],
        [e.body for e in events],
        [d.id for d in ordered],
        [d.event_id for d in ordered],
        [d.client_id for d in ordered],
        [d.target for d in ordered],
        [d.webhook_id for d in ordered],
        [d.url for d in ordered],
        lease_s,
    )
    found = {(r["event_id"], r["target"]): ClaimState(r["id"], r["claimed"], r["why_not"]) for r in rows}
    # A row inserted by a concurrent claim that committed after this statement began is in
    # neither half of the answer: it is held by that claim.
    return {
        (d.event_id, d.target): found.get((d.event_id, d.target), ClaimState(d.id, False, "held"))
        for d in ordered
    }


async def defer_delivery(pool: asyncpg.Pool, delivery_id: str, next_attempt_at: datetime) -> None:
    """Hand a claimed, unattempted delivery to the retry command that will make its attempt."""
    await pool.execute(
        """UPDATE webhook_deliveries SET lease_until = NULL, next_attempt_at = $2, updated_at = now()
           WHERE id = $1 AND status = 'pending'""",
        delivery_id,
        next_attempt_at,
    )


#: A delivery started again with a fresh retry schedule (a replay, a replayed dead letter).
_FRESH_CHAIN = (
    "status = 'pending', chain_started_at = now(), next_attempt_at = NULL, completed_at = NULL, "
    "updated_at = now()"
)


async def restart_delivery(
    conn: Conn,
    *,
    delivery_id: str,
    event_id: str,
    client_id: str,
    webhook_id: str,
    url: str,
    failed_only: bool,
) -> str | None:
    """A delivery of the event to the endpoint, (re)started with a fresh retry schedule.

    Returns its id, or ``None`` if it is being retried already, or (``failed_only``) did not
    fail. A pending delivery no attempt has touched is returned too: the command that would have
    started it may be lost (a redelivered request), and a duplicate command is harmless.
    """
    if failed_only:
        value = await conn.fetchval(
            f"""UPDATE webhook_deliveries
               SET {_FRESH_CHAIN}, url = $3
               WHERE event_id = $1 AND target = $2
                 AND (status = 'failed' OR (status = 'pending' AND next_attempt_at IS NULL
                                            AND (lease_until IS NULL OR lease_until < now())))
               RETURNING id""",  # noqa: S608 - a constant, not input
            event_id,
            webhook_id,
            url,
        )
    else:
        value = await conn.fetchval(
            f"""INSERT INTO webhook_deliveries (id, event_id, client_id, target, webhook_id, url, status)
               VALUES ($1, $2, $3, $4, $4, $5, 'pending')
               ON CONFLICT (event_id, target) DO UPDATE SET
                   {_FRESH_CHAIN}, url = EXCLUDED.url
               WHERE webhook_deliveries.status <> 'pending'
                  OR (webhook_deliveries.next_attempt_at IS NULL
                      AND (webhook_deliveries.lease_until IS NULL OR webhook_deliveries.lease_until < now()))
               RETURNING id""",  # noqa: S608 - a constant, not input
            delivery_id,
            event_id,
            client_id,
            webhook_id,
            url,
        )
    return None if value is None else str(value)


async def restart_failed_delivery(pool: asyncpg.Pool, delivery_id: str) -> bool:
    """A delivery given up on, pending again with a fresh retry schedule; False if it was not failed."""
    status = await pool.execute(
        f"""UPDATE webhook_deliveries
           SET {_FRESH_CHAIN}
           WHERE id = $1 AND status = 'failed'""",  # noqa: S608 - a constant, not input
        delivery_id,
    )
    return bool(status.endswith(" 1"))


async def lease_deliveries(
    conn: Conn, delivery_ids: Sequence[str], seconds: float, *, manual: bool
) -> dict[str, asyncpg.Record]:
    """Hold deliveries for one attempt each; those settled, or held by another attempt, are left out.

    Each row carries what its attempt needs: the event's body and type, the automatic attempts
    made in the current chain, and ``secrets`` to sign with (NULL when the endpoint is disabled
    or gone; see ``lookups.SIGNING_SECRETS_SQL``). A subscription's delivery goes to the
    endpoint's URL as it is now: a client that fixes its URL after a failure, then retries (or
    lets the schedule retry), reaches the fixed one (the row's ``url`` follows). Rows are locked
    in id order, so two batches that share a delivery never deadlock.
    """
    rows = await conn.fetch(
        f"""WITH held AS (
                SELECT id FROM webhook_deliveries WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE)
            UPDATE webhook_deliveries d SET lease_until = now() + make_interval(secs => $2),
              url = coalesce((SELECT w.url FROM webhooks w WHERE w.id = d.webhook_id), d.url)
            FROM held, notifier_events e
            WHERE d.id = held.id AND e.id = d.event_id AND (d.status = 'pending' OR $3)
              AND (d.lease_until IS NULL OR d.lease_until < now())
            RETURNING d.*, e.body, e.type AS event_type,
              (SELECT count(*) FROM webhook_attempts a
               WHERE a.delivery_id = d.id AND NOT a.manual
                 AND a.attempted_at >= d.chain_started_at) AS automatic_attempts,
              {SIGNING_SECRETS_SQL} AS secrets""",  # noqa: S608 - a constant, not input
        list(delivery_ids),
        seconds,
        manual,
    )
    return {row["id"]: row for row in rows}


async def failing_since(pool: asyncpg.Pool, webhook_id: str) -> datetime | None:
    """When the endpoint's current run of failed attempts began (``None`` if its last succeeded)."""
    value = await pool.fetchval(
        """WITH attempts AS (
               SELECT a.attempted_at, a.status_code FROM webhook_attempts a
               JOIN webhook_deliveries d ON d.id = a.delivery_id
               WHERE d.webhook_id = $1)
           SELECT min(attempted_at) FROM attempts
           WHERE attempted_at > coalesce(
               (SELECT max(attempted_at) FROM attempts WHERE status_code BETWEEN 200 AND 299),
               '-infinity')""",
        webhook_id,
    )
    return value if isinstance(value, datetime) else None


async def delivery_in_flight(pool: asyncpg.Pool, delivery_id: str) -> bool:
    """Whether a still pending delivery is held by an attempt's lease."""
    value = await pool.fetchval(
        "SELECT status = 'pending' AND lease_until > now() FROM webhook_deliveries WHERE id = $1", delivery_id
    )
    return bool(value)


async def release_lease(pool: asyncpg.Pool, delivery_id: str) -> None:
    await pool.execute("UPDATE webhook_deliveries SET lease_until = NULL WHERE id = $1", delivery_id)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt's outcome, and the state its delivery moves to."""

    delivery_id: str
    result: DeliveryResult
    manual: bool
    status: str  # pending (a retry is scheduled), succeeded or failed
    error: str | None
    next_attempt_at: datetime | None = None


def storable(text: str | None) -> str | None:
    """Text a receiver or a mail server wrote, as PostgreSQL's ``text`` takes it.

    A NUL character is the one thing ``text`` refuses (``invalid byte sequence … 0x00``), and a
    receiver's answer may hold one: written as is, it failed the statement that logged every
    attempt of its batch, other clients' included. It is kept as U+FFFD, as undecodable bytes
    already are.
    """
    return None if text is None else text.replace("\x00", "\ufffd")


async def record_attempts(conn: Conn, attempts: Sequence[Attempt]) -> None:
    """Log attempts and settle their deliveries, in one statement (one commit)."""
    ordered = sorted(attempts, key=lambda a: a.delivery_id)
    await conn.execute(
        """WITH a AS (
               SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::text[], $6::bool[],
                                    $7::text[], $8::text[], $9::timestamptz[])
                   AS a(delivery_id, status_code, latency_ms, error, response_body, manual,
                        status, last_error, next_attempt_at)),
           logged AS (
               INSERT INTO webhook_attempts
                   (delivery_id, status_code, latency_ms, error, response_body, manual)
               SELECT delivery_id, status_code, latency_ms, error, response_body, manual FROM a)
           UPDATE webhook_deliveries d
           SET status = a.status, attempts = d.attempts + 1, last_status_code = a.status_code,
               last_error = a.last_error, next_attempt_at = a.next_attempt_at, lease_until = NULL,
               updated_at = now(), completed_at = CASE WHEN a.status = 'pending' THEN NULL ELSE now() END
           FROM a WHERE d.id = a.delivery_id""",
        [a.delivery_id for a in ordered],
        [a.result.status_code for a in ordered],
        [a.result.latency_ms for a in ordered],
        [storable(a.result.error) for a in ordered],
        [storable(a.result.response_body) for a in ordered],
        [a.manual for a in ordered],
        [a.status for a in ordered],
        [storable(a.error) for a in ordered],
        [a.next_attempt_at for a in ordered],
    )


async def give_up_delivery(pool: asyncpg.Pool, delivery_id: str, error: str) -> None:
    await pool.execute(
        """UPDATE webhook_deliveries SET status = 'failed', last_error = $2, next_attempt_at = NULL,
                  lease_until = NULL, completed_at = now(), updated_at = now()
           WHERE id = $1 AND status = 'pending'""",
        delivery_id,
        storable(error[:2000]),
    )


async def email_status(pool: asyncpg.Pool, event_id: str, recipient: str) -> str | None:
    value = await pool.fetchval(
        "SELECT status FROM email_log WHERE event_id = $1 AND recipient = $2", event_id, recipient
    )
    return None if value is None else str(value)


async def claim_email(pool: asyncpg.Pool, event_id: str, recipient: str, seconds: float) -> bool:
    """Hold an email for one send; ``False`` if it was sent or refused, or another send holds it."""
    value = await pool.fetchval(
        """INSERT INTO email_log (event_id, recipient, status, attempts, lease_until)
           VALUES ($1, $2, 'sending', 1, now() + make_interval(secs => $3))
           ON CONFLICT (event_id, recipient) DO UPDATE
           SET attempts = email_log.attempts + 1, lease_until = EXCLUDED.lease_until
           WHERE email_log.status = 'sending'
             AND (email_log.lease_until IS NULL OR email_log.lease_until < now())
           RETURNING true""",
        event_id,
        recipient,
        seconds,
    )
    return bool(value)


async def email_settled(
    pool: asyncpg.Pool, event_id: str, recipient: str, status: str, error: str | None
) -> None:
    await pool.execute(
        """UPDATE email_log SET status = $3, error = $4, lease_until = NULL,
                  sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END
           WHERE event_id = $1 AND recipient = $2""",
        event_id,
        recipient,
        status,
        storable(error),
    )


@dataclass(frozen=True, slots=True)
class Pruned:
    events: int
    deliveries: int
    attempts: int
    emails: int = 0


async def prune_delivery_log(conn: Conn, keep_s: float, limit: int) -> Pruned:
    """Delete up to ``limit`` of the oldest events past ``keep_s`` with their deliveries and attempts.

    An event goes with all of its deliveries or not at all, and never while one of them is
    being retried or attempted (pending, or leased by a manual retry): it is kept until they
    settle. Events are taken oldest first and locked, skipping any that a replay holds; a
    replay that reaches an event this pass holds waits, then writes it anew (``insert_event``).
    A delivery leased after this statement's snapshot is re-checked under its row lock and
    kept, and then so is its event.
    """
    row = await conn.fetchrow(
        """WITH old AS (
               SELECT e.id FROM notifier_events e
               WHERE e.received_at < now() - make_interval(secs => $1)
                 AND NOT EXISTS (SELECT FROM webhook_deliveries d WHERE d.event_id = e.id
                                 AND (d.status = 'pending' OR d.lease_until > now()))
               ORDER BY e.received_at LIMIT $2
               FOR UPDATE SKIP LOCKED),
           deliveries AS (
               DELETE FROM webhook_deliveries d USING old
               WHERE d.event_id = old.id AND d.status <> 'pending'
                 AND (d.lease_until IS NULL OR d.lease_until <= now())
               RETURNING d.id, d.event_id),
           attempts AS (
               DELETE FROM webhook_attempts a USING deliveries g WHERE a.delivery_id = g.id RETURNING 1),
           events AS (
               DELETE FROM notifier_events e USING old
               WHERE e.id = old.id
                 AND (SELECT count(*) FROM webhook_deliveries d WHERE d.event_id = e.id)
                     = (SELECT count(*) FROM deliveries g WHERE g.event_id = e.id)
               RETURNING 1)
           SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM deliveries) AS deliveries,
                  (SELECT count(*) FROM attempts) AS attempts""",
        keep_s,
        limit,
    )
    assert row is not None  # noqa: S101 - an aggregate always answers one row
    return Pruned(row["events"], row["deliveries"], row["attempts"])


async def prune_email_log(conn: Conn, keep_s: float, limit: int) -> int:
    """Delete up to ``limit`` of the oldest settled email rows past ``keep_s``."""
    status = await conn.execute(
        """DELETE FROM email_log WHERE ctid IN (
               SELECT ctid FROM email_log
               WHERE created_at < now() - make_interval(secs => $1)
                 AND (status <> 'sending' OR lease_until IS NULL OR lease_until < now())
               ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)""",
        keep_s,
        limit,
    )
    return int(status.split()[-1])
