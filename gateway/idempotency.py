"""``Idempotency-Key`` on uploads: a retried request gets the first answer back.

The key is taken (per client) before the upload is read. A request that finds its key taken gets
the stored answer (the same status and body, ``Idempotent-Replayed: true``), or 409 while the
first request is still running, as the IETF draft "The Idempotency-Key HTTP Header Field" and
Stripe do. Answers are kept for ``VIDQ_IDEMPOTENCY_TTL_S`` (24 h).

Only an accepted upload is kept, with the video in one transaction. A refused one (4xx: not a
video, a bad field, too large), a 5xx or a crash releases the key, so the client can fix the
request and send it again under the same key. A request is known by its fingerprint (a SHA-256
of the file, its name and the text fields): the same key with a different request is refused
with 422 rather than answered with the first request's video, which would hide the client's bug.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway import repository as repo
from gateway.errors import ApiError, Conflict
from gateway.repository import Client, Conn
from shared.resources import Video


class KeyReused(ApiError):
    status, slug, title = 422, "idempotency-key-reused", "Idempotency-Key reused"


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    body: dict[str, Any]
    video_id: str | None
    fingerprint: str | None  # None: kept from before fingerprints

    def check(self, fingerprint: str) -> None:
        """Raise :class:`KeyReused` unless the request is the one this answer was for."""
        if self.fingerprint is not None and self.fingerprint != fingerprint:
            raise KeyReused(
                "this Idempotency-Key was used for a different request (another file or URL, or "
                "other fields); use a new key for a new request"
            )


async def claim(conn: Conn, client: Client, key: str, ttl_s: int) -> Replay | None:
    """Take ``key``; returns the earlier answer when there is one."""
    row = await repo.claim_idempotency_key(conn, client.id, key, ttl_s)
    if row is None:
        return None
    if row["status_code"] is None:
        raise Conflict("a request with this Idempotency-Key is still being processed; retry shortly")
    return Replay(row["status_code"], row["response"], row["video_id"], row["fingerprint"])


def remembering(client: Client, key: str, fingerprint: str) -> Callable[[Conn, Video], Awaitable[None]]:
    """Keep the ``202`` for ``key``, in the transaction that records the video.

    The key's answer and the video commit together: a request that fails after the commit
    (cancelled, a connection lost) leaves the answer for its retry, never a key released to make a
    second video nor one held "in progress" until it expires.
    """

    async def remember(conn: Conn, video: Video) -> None:
        body = video.model_dump(mode="json")
        await repo.store_idempotent_response(conn, client.id, key, 202, body, video.id, fingerprint)

    return remember


async def forget(pool: asyncpg.Pool, client: Client, key: str) -> None:
    async with pool.acquire() as conn:
        await repo.release_idempotency_key(conn, client.id, key)
