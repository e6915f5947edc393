"""Who listens to a video's events, read once and kept until a webhook of its owner changes.

Every event needs its video's audience (the owner's enabled endpoints with their secrets, and
the video's callback_url). Read per event, it is a query on the hot path of every delivery;
kept here, a burst of events of one video, or of one client's videos, reads it once. The
gateway's ``webhooks_changed`` trigger notifies ``vidq_webhooks`` whenever an endpoint is
created, edited, disabled, rotated or deleted, and this cache forgets everything it holds on
each notification (such changes are rare), so an endpoint disabled a moment ago gets nothing
more. Entries also expire after ``ttl_s``. Nothing is kept while the listening connection is
down (a notification could be missed), and a read that a notification overtook is not kept.
Written for vidq: no cache library knows PostgreSQL's notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import asyncpg

from notifier import lookups
from shared.db import TRANSIENT_DB_ERRORS

log = logging.getLogger(__name__)

CHANNEL = "vidq_webhooks"


class AudienceCache:
    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float = 60.0, max_videos: int = 10_000) -> None:
        self.pool = pool
        self.ttl_s = ttl_s
        self.max_videos = max_videos
        self._entries: dict[str, tuple[float, lookups.Audience]] = {}
        self._generation = 0
        self.listening = False

    async def get(self, video_ids: Sequence[str]) -> dict[str, lookups.Audience]:
        """The audience of each video (unknown videos are left out)."""
        now = time.monotonic()
        found: dict[str, lookups.Audience] = {}
        missing: list[str] = []
        for video_id in video_ids:
            entry = self._entries.get(video_id)
            if entry is not None and now - entry[0] < self.ttl_s:
                found[video_id] = entry[1]
            else:
                missing.append(video_id)
        if missing:
            generation = self._generation
            async with self.pool.acquire() as conn:
                read = await lookups.audiences(conn, missing)
            if self.listening and generation == self._generation:
                if len(self._entries) + len(read) > self.max_videos:
                    self._entries.clear()
                for video_id, audience in read.items():
                    self._entries[video_id] = (now, audience)
            found.update(read)
        return found

    def forget(self, *_: object) -> None:
        """Drop everything (an endpoint changed, or notifications may have been missed)."""
        self._generation += 1
        self._entries.clear()

    async def listen(self) -> None:
        """Follow the gateway's notifications until cancelled, reconnecting when the database returns."""
        while True:
            try:
                await self._listen_once()
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("not following webhook changes (%r); audiences are read per event", exc)
            await asyncio.sleep(1.0)

    async def _listen_once(self) -> None:
        lost = asyncio.Event()

        def on_lost(_: object) -> None:
            lost.set()

        async with self.pool.acquire() as conn:
            conn.add_termination_listener(on_lost)
            try:
                await conn.add_listener(CHANNEL, self.forget)
                self.forget()
                self.listening = True
                await lost.wait()
            finally:
                self.listening = False
                self.forget()
                conn.remove_termination_listener(on_lost)
                with contextlib.suppress(Exception):
                    await conn.remove_listener(CHANNEL, self.forget)
