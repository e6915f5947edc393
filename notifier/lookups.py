"""Read-only queries over the gateway's tables (the gateway is their only writer).

The notifier needs to know who owns a video, where its callback goes and who to email, and
which subscriptions match; reading them here keeps every event small and the gateway the single
source of truth for subscriptions (an endpoint disabled a second ago gets nothing more).
"""

from __future__ import annotations

import functools
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
    """One enabled endpoint of a client, with the secrets that sign for it right now."""

    webhook_id: str
    url: str
    events: tuple[str, ...]
    secrets: tuple[str, ...]

    def wants(self, event_type: str) -> bool:
        return _wants(self.events, event_type)


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
    another query; an endpoint disabled or deleted a moment ago is not among them.
    """
    rows = await conn.fetch(
        f"""SELECT v.id, v.client_id, v.callback_url, c.callback_secret,
                  (SELECT coalesce(json_agg(json_build_object(
                              'id', w.id, 'url', w.url, 'events', w.events,
                              'secrets', {_ENDPOINT_SECRETS_SQL}) ORDER BY w.id), '[]')
                   FROM webhooks w
                   WHERE w.client_id = v.client_id AND w.enabled AND w.deleted_at IS NULL) AS endpoints
           FROM videos v JOIN clients c ON c.id = v.client_id WHERE v.id = ANY($1::text[])""",  # noqa: S608 - a constant
        list(video_ids),
    )
    return {
        row["id"]: Audience(
            row["client_id"],
            row["callback_url"],
            row["callback_secret"],
            tuple(
                Listener(e["id"], e["url"], tuple(e["events"]), tuple(e["secrets"])) for e in row["endpoints"]
            ),
        )
        for row in rows
    }


#: An endpoint ``w``'s signing secrets: its current one, then the previous one while its
#: rotation grace lasts.
_ENDPOINT_SECRETS_SQL = """ARRAY[w.secret] || CASE WHEN w.previous_secret IS NOT NULL
                                      AND w.previous_secret_expires_at > now()
                                     THEN ARRAY[w.previous_secret] ELSE '{}'::text[] END"""


#: The secrets that sign a delivery ``d`` (a ``webhook_deliveries`` row), as a SQL expression:
#: the endpoint's current secret, then the previous one while its rotation grace lasts; the
#: client's ``callback_secret`` for a video's own callback_url. NULL when the endpoint is
#: disabled or deleted. Embedded in the notifier's lease query, so one round trip both holds the
#: delivery and reads how to sign it.
SIGNING_SECRETS_SQL = f"""
CASE WHEN d.webhook_id IS NULL THEN
    (SELECT ARRAY[c.callback_secret] FROM clients c WHERE c.id = d.client_id)
ELSE
    (SELECT {_ENDPOINT_SECRETS_SQL}
     FROM webhooks w WHERE w.id = d.webhook_id AND w.enabled AND w.deleted_at IS NULL)
END"""  # noqa: S608 - constants, not input


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
