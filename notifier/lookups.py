"""Read-only queries over the gateway's tables (the gateway is their only writer).

The notifier needs to know who owns a video, where its callback goes and who to email, and
which subscriptions match; reading them here keeps every event small and the gateway the single
source of truth for subscriptions (an endpoint disabled a second ago gets nothing more).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.events import pattern_matches

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class VideoTarget:
    client_id: str
    callback_url: str | None
    notify_email: str | None
    client_emails: tuple[str, ...] = ()

    @property
    def recipients(self) -> list[str]:
        """The video's own address first, then the client's defaults, each once."""
        own = [self.notify_email] if self.notify_email else []
        return list(dict.fromkeys([*own, *self.client_emails]))


@dataclass(frozen=True, slots=True)
class Subscription:
    webhook_id: str
    client_id: str
    url: str
    events: list[str]

    def wants(self, event_type: str) -> bool:
        return any(pattern_matches(p, event_type) for p in self.events)


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: str
    type: str
    video_id: str
    occurred_at: datetime
    body: bytes


#: At most this many events per replay request (ask again with a later ``since`` for more).
REPLAY_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Listener:
    """One enabled endpoint of a client, with its secret and those that rotations retired."""

    webhook_id: str
    url: str
    events: tuple[str, ...]
    secret: str
    #: (secret, signs until), newest first: the secrets that rotations retired, in their grace.
    retired: tuple[tuple[str, datetime], ...] = ()

    def wants(self, event_type: str) -> bool:
        return _wants(self.events, event_type)

    def secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets that sign now: the current one, then each retired one until its grace ends."""
        if not self.retired:
            return (self.secret,)
        return (self.secret, *(secret for secret, until in self.retired if now < until))


@functools.lru_cache(maxsize=4096)
def _wants(patterns: tuple[str, ...], event_type: str) -> bool:
    return any(pattern_matches(p, event_type) for p in patterns)


@dataclass(frozen=True, slots=True)
class Audience:
    """Who hears of an event of a video: its owner's endpoints and the video's callback_url."""

    client_id: str
    callback_url: str | None
    callback_secret: str
    listeners: tuple[Listener, ...]

    def endpoints(self, event_type: str) -> list[Listener]:
        return [listener for listener in self.listeners if listener.wants(event_type)]


async def audiences(conn: Conn, video_ids: Sequence[str]) -> dict[str, Audience]:
    """The audience of each video (unknown videos are left out), in one round trip.

    Read with the secrets, so the deliveries of a whole batch of events are signed without
    another query; an endpoint disabled or deleted is not among them.
    """
    rows = await conn.fetch(
        """SELECT v.id AS video_id, v.client_id, v.callback_url, c.callback_secret, w.id AS webhook_id,
                  w.url, w.events, w.secret, w.retired_secrets, w.retired_until
           FROM videos v JOIN clients c ON c.id = v.client_id
           LEFT JOIN webhooks w ON w.client_id = v.client_id AND w.enabled AND w.deleted_at IS NULL
           WHERE v.id = ANY($1::text[])
           ORDER BY v.id, w.id""",
        list(video_ids),
    )
    found: dict[str, Audience] = {}
    for video_id, group in itertools.groupby(rows, key=lambda r: r["video_id"]):
        members = list(group)
        first = members[0]
        listeners = tuple(
            Listener(
                r["webhook_id"],
                r["url"],
                tuple(r["events"]),
                r["secret"],
                tuple(zip(r["retired_secrets"], r["retired_until"], strict=True)),
            )
            for r in members
            if r["webhook_id"] is not None
        )
        found[video_id] = Audience(
            first["client_id"], first["callback_url"], first["callback_secret"], listeners
        )
    return found


#: The secrets that sign a delivery ``d`` (a ``webhook_deliveries`` row), as a SQL expression:
#: the endpoint's current secret, then each one a rotation retired while its grace lasts; the
#: client's ``callback_secret`` for a video's own callback_url. NULL when the endpoint is
#: disabled or deleted. Embedded in the notifier's lease query, so one round trip both holds the
#: delivery and reads how to sign it.
SIGNING_SECRETS_SQL = """
CASE WHEN d.webhook_id IS NULL THEN
    (SELECT ARRAY[c.callback_secret] FROM clients c WHERE c.id = d.client_id)
ELSE
    (SELECT ARRAY[w.secret] || ARRAY(
                SELECT r.secret FROM unnest(w.retired_secrets, w.retired_until)
                                     WITH ORDINALITY AS r(secret, until, n)
                WHERE r.until > now() ORDER BY r.n)
     FROM webhooks w WHERE w.id = d.webhook_id AND w.enabled AND w.deleted_at IS NULL)
END"""


async def video_target(pool: asyncpg.Pool, video_id: str) -> VideoTarget | None:
    row = await pool.fetchrow(
        """SELECT v.client_id, v.callback_url, v.notify_email, c.notify_emails FROM videos v
           JOIN clients c ON c.id = v.client_id WHERE v.id = $1""",
        video_id,
    )
    if row is None:
        return None
    return VideoTarget(
        row["client_id"], row["callback_url"], row["notify_email"], tuple(row["notify_emails"])
    )


async def client_emails(pool: asyncpg.Pool, client_id: str) -> list[str]:
    value = await pool.fetchval("SELECT notify_emails FROM clients WHERE id = $1", client_id)
    return list(value or [])


async def subscription(pool: asyncpg.Pool, webhook_id: str) -> Subscription | None:
    """An enabled, not deleted subscription."""
    row = await pool.fetchrow(
        "SELECT id, client_id, url, events FROM webhooks WHERE id = $1 AND enabled AND deleted_at IS NULL",
        webhook_id,
    )
    return Subscription(row["id"], row["client_id"], row["url"], list(row["events"])) if row else None


async def client_events(
    pool: asyncpg.Pool, client_id: str, since: datetime, until: datetime | None
) -> list[LoggedEvent]:
    """The client's events in ``[since, until)`` from the gateway's event log, oldest first."""
    rows = await pool.fetch(
        """SELECT e.id, e.type, e.video_id, e.occurred_at, e.body FROM video_events e
           JOIN videos v ON v.id = e.video_id
           WHERE v.client_id = $1 AND e.occurred_at >= $2 AND ($3::timestamptz IS NULL OR e.occurred_at < $3)
           ORDER BY e.occurred_at, e.sequence LIMIT $4""",
        client_id,
        since,
        until,
        REPLAY_LIMIT,
    )
    return [
        LoggedEvent(r["id"], r["type"], r["video_id"], r["occurred_at"], json.dumps(r["body"]).encode())
        for r in rows
    ]
