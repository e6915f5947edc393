"""The transactional outbox: write messages with the state change, relay them with confirms.

Use cases call :func:`append_event` / :func:`enqueue` inside the transaction that changes a
video, so a message exists if and only if the change committed. :class:`OutboxRelay` publishes
unsent rows with publisher confirms and marks them sent; it wakes on ``NOTIFY vidq_outbox``
(a trigger on insert) and also polls, in case a notification is missed. A crash between publish
and mark publishes a row twice; consumers deduplicate on the message id.

Rows of one video are published in order, one after the other; different videos in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from gateway import repository as repo
from gateway.metrics import OUTBOX_LAG, OUTBOX_OLDEST, OUTBOX_PENDING
from gateway.repository import Conn
from shared.db import TRANSIENT_DB_ERRORS
from shared.errors import TransientError
from shared.events import EVENT_CLASSES, Event, to_message
from shared.ids import new_id
from shared.messaging.codec import OutgoingMessage
from shared.messaging.publisher import Publisher
from shared.messaging.topology import EVENTS, UPLOADS
from shared.resources import Rendition, Video

log = logging.getLogger(__name__)

CHANNEL = "vidq_outbox"


async def enqueue(conn: Conn, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
    """Queue ``message`` for publishing when the current transaction commits."""
    await repo.insert_outbox(
        conn,
        exchange=exchange,
        routing_key=routing_key,
        message_id=message.message_id,
        type_=message.type,
        correlation_id=message.correlation_id,
        body=message.body,
        headers=dict(message.headers),
    )


async def append_event(
    conn: Conn,
    *,
    video_id: str,
    type_: str,
    data: Video | Rendition,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> Event:
    """Number, record and queue a public event of ``video_id`` (the video row is locked)."""
    sequence = await repo.next_sequence(conn, video_id)
    event = EVENT_CLASSES[type_].model_validate(
        {
            "id": event_id or new_id("evt"),
            "type": type_,
            "timestamp": occurred_at or datetime.now(UTC),
            "sequence": sequence,
            "data": data,
        }
    )
    await repo.insert_event(
        conn,
        event_id=event.id,
        video_id=video_id,
        sequence=sequence,
        type_=type_,
        occurred_at=event.timestamp,
        body=event.model_dump(mode="json"),
    )
    message = to_message(event)
    await enqueue(conn, EVENTS, type_, message)
    if type_ == "video.uploaded":
        await enqueue(conn, UPLOADS, type_, message)
    return event


def _message(row: asyncpg.Record) -> OutgoingMessage:
    return OutgoingMessage(
        body=bytes(row["body"]),
        message_id=row["message_id"],
        type=row["type"],
        correlation_id=row["correlation_id"],
        app_id="gateway",
        headers=row["headers"] or {},
    )


class OutboxRelay:
    """Publishes the outbox. Several gateways may run one each (rows are claimed SKIP LOCKED)."""

    def __init__(
        self, pool: asyncpg.Pool, publisher: Publisher, *, batch: int = 200, poll_s: float = 2.0
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.batch = batch
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._measured_at = float("-inf")

    async def run(self) -> None:
        """Relay until cancelled, surviving database and broker outages.

        The gateway also runs it :func:`~shared.runtime.supervised`, for the failures nobody foresaw.
        """
        while True:
            try:
                await self._listen_and_drain()
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("outbox relay lost the database (%r); retrying", exc)
                await asyncio.sleep(1.0)

    async def _listen_and_drain(self) -> None:
        async with self.pool.acquire() as listener:
            await listener.add_listener(CHANNEL, self._on_notify)
            try:
                while True:
                    self._wake.clear()
                    published, claimed = await self.drain_once(listener)
                    await self._measure(listener)
                    if claimed >= self.batch and published:
                        continue  # more rows are waiting
                    if claimed and not published:
                        await asyncio.sleep(1.0)  # the broker is away; do not spin
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_s)
            finally:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(CHANNEL, self._on_notify)

    async def _measure(self, conn: Conn) -> None:
        """Export the backlog (rows and the oldest's age), at most once a second.

        Every replica exports the whole table's, so ``max()`` over replicas is right and none
        is left with an old figure.
        """
        now = asyncio.get_running_loop().time()
        if now - self._measured_at < 1.0:
            return
        self._measured_at = now
        pending, oldest = await repo.outbox_backlog(conn)
        OUTBOX_PENDING.set(pending)
        OUTBOX_OLDEST.set(oldest)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def drain_once(self, conn: Conn | None = None) -> tuple[int, int]:
        """Publish one batch on ``conn`` (else a pooled one); returns (rows published, rows claimed).

        The relay drains on the connection it listens on, its own: under a burst of uploads
        every pooled connection has a queue of requests waiting for it, and a relay waiting in
        that queue would hold back every message until the burst is over.
        """
        if conn is None:
            async with self.pool.acquire() as pooled:
                return await self._drain(pooled)
        return await self._drain(conn)

    async def _drain(self, conn: Conn) -> tuple[int, int]:
        async with conn.transaction():
            rows = await repo.claim_outbox(conn, self.batch)
            if not rows:
                return 0, 0
            per_video: dict[str | None, list[asyncpg.Record]] = defaultdict(list)
            for row in rows:
                per_video[row["correlation_id"]].append(row)
            outcomes = await asyncio.gather(*(self._publish_in_order(group) for group in per_video.values()))
            published = [row for ok, _ in outcomes for row in ok]
            failed = [row for _, bad in outcomes for row in bad]
            if published:
                await repo.mark_outbox_published(conn, [row["id"] for row in published])
            if failed:
                await repo.mark_outbox_failed(conn, [row["id"] for row in failed], "broker did not confirm")
        now = datetime.now(UTC)
        for row in published:
            OUTBOX_LAG.observe((now - row["created_at"]).total_seconds())
        return len(published), len(rows)

    async def _publish_in_order(
        self, rows: Sequence[asyncpg.Record]
    ) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        for index, row in enumerate(rows):
            try:
                await self.publisher.publish(row["exchange"], row["routing_key"], _message(row))
            except TransientError as exc:
                log.warning("outbox publish failed (%s); will retry", exc)
                # Later rows of the same video wait, so its events keep their order.
                return list(rows[:index]), list(rows[index:])
        return list(rows), []
