"""The local job runner: encode slots, lease heartbeats, cancellation and hand-back.

Claimed work waits here as *batches* — jobs of one video encoded together from one decode of the
source (often a single job) — lowest rung first (the first playable rendition matters most), and
runs in tasks the service owns, not in the broker client's callback tasks, so a channel that
closes does not cancel an encode. A batch takes one encode slot. When running and waiting batches
reach the concurrency limit the runner pauses the consumers (no message is held unacknowledged
while we are busy) and resumes them when a slot frees. Pausing and resuming take broker round
trips (a consumer per queue); they run one at a time, each to the state the load asks for when
it starts, so a slot that frees during a pause is followed by a resume, never overtaken by it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from shared.errors import TransientError
from shared.ladder import Quality
from transcoder.claims import Claims, Job

log = logging.getLogger(__name__)

Batch = tuple[Job, ...]
Work = Callable[[Batch], Awaitable[None]]
HandBack = Callable[[Job], Awaitable[None]]
Flow = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


def _lowest_rung(batch: Batch) -> int:
    return min(Quality(job.command.quality).short_side for job in batch)


class JobRunner:
    def __init__(self, *, slots: int, claims: Claims, heartbeat_s: float) -> None:
        self.slots = slots
        self.claims = claims
        self.heartbeat_s = heartbeat_s
        self.work: Work | None = None
        self.pause: Flow = _nothing
        self.resume: Flow = _nothing
        self.waiting: list[Batch] = []
        self.running: dict[str, tuple[Batch, asyncio.Task[None]]] = {}
        self._paused = False
        self._stopping = False
        self._flow = asyncio.Lock()

    @property
    def busy(self) -> int:
        return len(self.waiting) + len(self.running)

    def held(self) -> list[str]:
        """Every job id this process holds a claim on."""
        return [job.id for batch in [*self.waiting, *(b for b, _ in self.running.values())] for job in batch]

    async def submit(self, work: Job | Sequence[Job]) -> None:
        """Take claimed work (a job, or a batch of one video's jobs); pause intake when full."""
        await self.submit_all([(work,) if isinstance(work, Job) else tuple(work)])

    async def submit_all(self, batches: Sequence[Sequence[Job]]) -> None:
        """Take several batches at once, so the lowest rung among them starts first."""
        self.waiting.extend(tuple(batch) for batch in batches if batch)
        self.waiting.sort(key=_lowest_rung)
        self._start_waiting()
        await self._follow_load()

    async def _follow_load(self) -> None:
        """Pause or resume intake, one change at a time, to the state the load asks for now."""
        async with self._flow:
            while not self._stopping:
                full = self.busy >= self.slots
                if full == self._paused:
                    return
                self._paused = full
                await (self.pause() if full else self.resume())

    def _start_waiting(self) -> None:
        while self.waiting and len(self.running) < self.slots:
            batch = self.waiting.pop(0)
            key = batch[0].id
            self.running[key] = (batch, asyncio.create_task(self._run(key, batch), name=f"encode {key}"))

    async def _run(self, key: str, batch: Batch) -> None:
        assert self.work is not None  # noqa: S101 - set by the app before consuming
        try:
            await self.work(batch)
        finally:
            self.running.pop(key, None)
            if not self._stopping:
                self._start_waiting()
                await self._follow_load()

    def cancel_video(self, video_id: str) -> int:
        """Stop everything for ``video_id`` (its ffmpeg is killed); returns how many jobs."""
        dropped = [job for batch in self.waiting for job in batch if job.video_id == video_id]
        self.waiting = [batch for batch in self.waiting if batch[0].video_id != video_id]
        running = [(batch, task) for batch, task in self.running.values() if batch[0].video_id == video_id]
        for _, task in running:
            task.cancel()
        return len(dropped) + sum(len(batch) for batch, _ in running)

    async def heartbeat(self) -> None:
        """Renew our leases forever; a batch with a job whose lease was taken from us is stopped."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            held = self.held()
            try:
                kept = await self.claims.renew(held)
            except TransientError as exc:
                log.warning("could not renew leases (%s); will retry", exc)
                continue
            except Exception:  # never stop renewing (and the encodes with us) over one bad round
                log.exception("could not renew leases; will retry")
                continue
            lost = set(held) - kept
            if not lost:
                continue
            log.warning("leases of %s were lost; stopping their encodes", ", ".join(sorted(lost)))
            self.waiting = [batch for batch in self.waiting if not lost & {job.id for job in batch}]
            for batch, task in list(self.running.values()):
                if lost & {job.id for job in batch}:
                    task.cancel()

    async def drain(self, grace: float, hand_back: HandBack) -> None:
        """On shutdown: stop intake, let running encodes finish within ``grace``, hand back the rest."""
        async with self._flow:  # after a pause or resume under way, never overtaken by one
            self._stopping = True
            if not self._paused:
                self._paused = True
                await self.pause()
        waiting, self.waiting = self.waiting, []
        if self.running:
            log.info("waiting up to %.0f s for %d encode(s)", grace, len(self.running))
            await asyncio.wait([task for _, task in self.running.values()], timeout=grace)
        unfinished = list(self.running.values())
        for _, task in unfinished:
            task.cancel()
        await asyncio.gather(*(task for _, task in unfinished), return_exceptions=True)
        for job in [job for batch in [*waiting, *(b for b, _ in unfinished)] for job in batch]:
            try:
                await hand_back(job)
            except TransientError:
                log.warning("could not hand back job %s; its lease will expire and it will be redone", job.id)
