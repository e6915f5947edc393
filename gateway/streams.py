"""Live event streams (SSE), pushed from the broker.

Each gateway process has its own exclusive queue on ``vidq.events`` (``vidq.gateway.live.<host>-
<pid>``) and fans each event out to the streams watching that video. The queue is bound (``#``)
only while the process has streams to feed, and for ``unbind_after_s`` after the last one ends:
a gateway nobody watches costs the broker and itself nothing per event. A stream waits for the
binding, then replays what the video already went through from the event log (once, not by
polling; resuming after ``Last-Event-ID`` works the same way), then forwards live events,
filling any gap from the log, and ends after a terminal event (a DELETE in flight writes
``video.canceled`` and then ``video.deleted``: both are sent). The SSE ``id`` is the event's
``sequence``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from gateway import repository as repo
from gateway.metrics import SSE_CLIENTS
from shared.events import TERMINAL_EVENT_TYPES
from shared.messaging.topology import EVENTS, GATEWAY_LIVE_PREFIX, broadcast_queue, declare_queue
from shared.resources import TERMINAL_STATUSES
from shared.runtime import instance_name

log = logging.getLogger(__name__)

_INBOX_SIZE = 1000


@dataclass(frozen=True, slots=True)
class LiveEvent:
    sequence: int
    type: str
    body: str


class LiveHub:
    """Routes events from this process's broadcast queue to the streams that want them."""

    def __init__(self, *, unbind_after_s: float = 5.0) -> None:
        self.unbind_after_s = unbind_after_s
        self._watchers: dict[str, set[asyncio.Queue[LiveEvent]]] = defaultdict(set)
        self._queue: AbstractQueue | None = None
        self._bound = False
        self._binding = asyncio.Lock()
        self._unbinding: asyncio.Task[None] | None = None

    async def start(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel()
        self._queue = await declare_queue(channel, broadcast_queue(GATEWAY_LIVE_PREFIX))
        # At-most-once is right for a live view: a stream that misses an event fills the gap
        # from the event log when the next one arrives.
        tag = f"{instance_name('gateway')}/{self._queue.name}/1"  # as every consumer is named
        await self._queue.consume(self._on_message, no_ack=True, consumer_tag=tag)

    @property
    def bound(self) -> bool:
        """Whether events reach this process now (a stream is watching, or did a moment ago)."""
        return self._bound

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        video_id = message.correlation_id
        if not video_id or video_id not in self._watchers:
            return
        try:
            body = message.body.decode()
            parsed = json.loads(body)
            event = LiveEvent(int(parsed["sequence"]), str(parsed["type"]), body)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable event on the live feed; skipped")
            return
        self.dispatch(video_id, event)

    def dispatch(self, video_id: str, event: LiveEvent) -> None:
        for inbox in list(self._watchers.get(video_id, ())):
            with contextlib.suppress(asyncio.QueueFull):  # a gap, filled from the log later
                inbox.put_nowait(event)

    @contextlib.asynccontextmanager
    async def watch(self, video_id: str) -> AsyncIterator[asyncio.Queue[LiveEvent]]:
        """An inbox of the video's live events, from the moment this returns."""
        inbox: asyncio.Queue[LiveEvent] = asyncio.Queue(_INBOX_SIZE)
        self._watchers[video_id].add(inbox)
        SSE_CLIENTS.inc()
        try:
            await self._bind()
            yield inbox
        finally:
            SSE_CLIENTS.dec()
            self._watchers[video_id].discard(inbox)
            if not self._watchers[video_id]:
                del self._watchers[video_id]
            if not self._watchers and self._unbinding is None:
                self._unbinding = asyncio.create_task(self._unbind_when_idle())

    async def _bind(self) -> None:
        if self._unbinding is not None:
            self._unbinding.cancel()
            self._unbinding = None
        async with self._binding:  # an unbind under way ends first
            if not self._bound and self._queue is not None:
                await self._queue.bind(EVENTS, routing_key="#")
                self._bound = True

    async def _unbind_when_idle(self) -> None:
        await asyncio.sleep(self.unbind_after_s)
        async with self._binding:
            # From here on nobody cancels this task: a new watcher waits for the lock, then binds.
            self._unbinding = None
            if self._watchers or not self._bound or self._queue is None:
                return
            try:
                await self._queue.unbind(EVENTS, routing_key="#")
            except Exception:
                log.warning("could not unbind the live queue; it stays bound", exc_info=True)
                return
            self._bound = False


def _sse(sequence: int, type_: str, body: str) -> dict[str, str]:
    return {"id": str(sequence), "event": type_, "data": body}


async def _logged(
    pool: asyncpg.Pool, video_id: str, after: int, before: int | None = None
) -> list[LiveEvent]:
    async with pool.acquire() as conn:
        rows = await repo.events_after(conn, video_id, after, before)
    return [LiveEvent(r["sequence"], r["type"], json.dumps(r["body"], separators=(",", ":"))) for r in rows]


async def _video_state(pool: asyncpg.Pool, video_id: str) -> tuple[bool, bool]:
    """Whether the video is finished (a terminal status, or deleted), and whether it is deleted."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, deleted_at FROM videos WHERE id = $1", video_id)
    if row is None:
        return True, True
    deleted = row["deleted_at"] is not None
    return deleted or row["status"] in TERMINAL_STATUSES, deleted


async def event_stream(
    pool: asyncpg.Pool, hub: LiveHub, video_id: str, *, after: int
) -> AsyncIterator[dict[str, str]]:
    """The SSE events of one video after sequence ``after``, ending after a terminal event.

    A video's events may go on after its terminal event: when one rendition fails for good the
    video is ``failed`` at once, while its other renditions finish encoding (so that a retry of
    the failed one can make the video ready) and report progress and completion. Those come
    after ``video.failed``; the stream ends at the terminal event all the same, and the video
    resource has them.
    """
    async with hub.watch(video_id) as inbox:
        last = after
        # The state first, then the log: a video finished by then has its terminal event there.
        finished, _ = await _video_state(pool, video_id)
        history = await _logged(pool, video_id, last)
        if finished:
            # up to its last terminal event (a failed video may have been retried and become
            # ready since: an earlier terminal event does not end the replay); nothing left
            # when the client has seen it already (Last-Event-ID)
            ends = [i for i, event in enumerate(history) if event.type in TERMINAL_EVENT_TYPES]
            for event in history[: ends[-1] + 1] if ends else []:
                yield _sse(event.sequence, event.type, event.body)
            return
        for event in history:
            yield _sse(event.sequence, event.type, event.body)
            last = event.sequence
        if any(e.type in TERMINAL_EVENT_TYPES for e in history) and (await _video_state(pool, video_id))[0]:
            return  # it finished while the log was read
        while True:
            event = await inbox.get()
            if event.sequence <= last:
                continue
            backlog = await _logged(pool, video_id, last, event.sequence) if event.sequence > last + 1 else []
            for item in [*backlog, event]:
                yield _sse(item.sequence, item.type, item.body)
                last = item.sequence
                if item.type in TERMINAL_EVENT_TYPES and not await _deleting(pool, video_id, item.type):
                    return


async def stream_over(pool: asyncpg.Pool, video_id: str, after: int) -> bool:
    """Whether a stream from ``after`` would send nothing.

    So it is when the video is finished and none of its terminal events comes after ``after``
    (what :func:`event_stream` replays of a finished video ends at one).
    """
    finished, _ = await _video_state(pool, video_id)
    if not finished:
        return False
    async with pool.acquire() as conn:
        return not await repo.terminal_event_after(conn, video_id, after, sorted(TERMINAL_EVENT_TYPES))


async def _deleting(pool: asyncpg.Pool, video_id: str, event_type: str) -> bool:
    """Whether ``video.deleted`` follows this ``video.canceled`` (a DELETE in flight writes both)."""
    if event_type != "video.canceled":
        return False
    return (await _video_state(pool, video_id))[1]
