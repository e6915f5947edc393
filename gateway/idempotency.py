"""``Idempotency-Key`` on uploads: a retried request gets the first answer back.

The key is taken (per client) before the upload is read. A request that finds its key taken gets
the stored answer (the same status and body, ``Idempotent-Replayed: true``), or 409 while the
first request is still running. Answers are kept for ``VIDQ_IDEMPOTENCY_TTL_S`` (24 h). A 4xx
answer is kept too (the same request would fail the same way); a 5xx or a crash releases the key
so the client can retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway import repository as repo
from gateway.errors import Conflict
from gateway.repository import Client, Conn


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    body: dict[str, Any]
    video_id: str | None


async def claim(conn: Conn, client: Client, key: str, ttl_s: int) -> Replay | None:
    """Take ``key``; returns the earlier answer when there is one."""
    row = await repo.claim_idempotency_key(conn, client.id, key, ttl_s)
    if row is None:
        return None
    if row["status_code"] is None:
        raise Conflict("a request with this Idempotency-Key is still being processed; retry shortly")
    return Replay(row["status_code"], row["response"], row["video_id"])


async def remember(
    pool: asyncpg.Pool, client: Client, key: str, status: int, body: dict[str, Any], video_id: str | None
) -> None:
    async with pool.acquire() as conn:
        await repo.store_idempotent_response(conn, client.id, key, status, body, video_id)


async def forget(pool: asyncpg.Pool, client: Client, key: str) -> None:
    async with pool.acquire() as conn:
        await repo.release_idempotency_key(conn, client.id, key)
