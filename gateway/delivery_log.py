"""Read-only queries over the notifier's delivery log (the notifier is the only writer).

SPEC puts the delivery log behind the gateway's REST API; rather than a request/reply over the
broker for a read, the gateway reads the notifier's tables here, and only here.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from gateway.repository import Conn


async def deliveries(
    conn: Conn,
    webhook_id: str,
    *,
    status: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
    event_id: str | None = None,
    video_id: str | None = None,
    delivery_id: str | None = None,
    with_body: bool = False,
) -> list[asyncpg.Record]:
    """The endpoint's deliveries, newest first; ``with_body`` adds the event's bytes as sent."""
    conditions = ["d.webhook_id = $1"]
    args: list[object] = [webhook_id]
    filters = (
        ("d.status", status),
        ("d.event_id", event_id),
        ("e.video_id", video_id),
        ("d.id", delivery_id),
    )
    for column, value in filters:
        if value is not None:
            args.append(value)
            conditions.append(f"{column} = ${len(args)}")
    if before is not None:
        args.extend(before)
        conditions.append(f"(d.created_at, d.id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    body = ", e.body" if with_body else ""
    return list(
        await conn.fetch(
            f"""SELECT d.*, e.type AS event_type, NULLIF(e.video_id, '') AS video_id{body}
                FROM webhook_deliveries d
                JOIN notifier_events e ON e.id = d.event_id
                WHERE {" AND ".join(conditions)}
                ORDER BY d.created_at DESC, d.id DESC LIMIT ${len(args)}""",  # noqa: S608 - fixed fragments
            *args,
        )
    )


async def attempts(conn: Conn, delivery_ids: list[str]) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY delivery_id, id",
            delivery_ids,
        )
    )


async def delivery(conn: Conn, delivery_id: str, webhook_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, status FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2", delivery_id, webhook_id
    )
