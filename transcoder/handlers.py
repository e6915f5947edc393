"""Transcoder handlers: claim a job, encode it, report the outcome; cancel on request.

``handle_transcode_rendition`` only claims (fast); the message is then acknowledged and the
encode runs in the runner. So the ack/retry/dead-letter policy for an encode lives in
:func:`run_job`, which applies the same rules as the consumer policy, using the same helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from shared import ffmpeg
from shared.commands import Sibling, TranscodeRendition
from shared.errors import EncodeFailed, PermanentError, TransientError, WorkCanceled
from shared.events import VideoCanceled, VideoDeleted
from shared.ids import event_id, new_id
from shared.logging import log_context
from shared.messaging.codec import ATTEMPT_HEADER, OutgoingMessage, outgoing
from shared.messaging.consumer import dead_letter, replayed, schedule_retry
from shared.messaging.publisher import Publisher
from shared.messaging.topology import REQUEUE, QueueSpec, Topology
from shared.reports import (
    RenditionCompletedReport,
    RenditionFailedReport,
    RenditionProgressReport,
    Report,
    publish_report,
)
from shared.storage import Storage, rendition_key, source_in_place
from transcoder import encode
from transcoder.claims import Claims, Job
from transcoder.metrics import FFMPEG_SPEED, RENDITION_QUEUE_WAIT
from transcoder.runner import JobRunner
from transcoder.settings import TranscoderSettings

log = logging.getLogger(__name__)


class KeyedLocks:
    """One asyncio lock per key, forgotten when nobody holds or awaits it (written for vidq)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class Encoder:
    """The ffmpeg side, behind a seam so handler tests can use a fake."""

    async def run(
        self, argv: list[str], *, timeout: float, stall_timeout: float, on_progress: ffmpeg.OnProgress
    ) -> list[str]:
        """Run ffmpeg; returns what it warned about on stderr."""
        return await ffmpeg.run(argv, timeout=timeout, stall_timeout=stall_timeout, on_progress=on_progress)

    async def probe(self, path: str) -> ffmpeg.ProbeResult:
        return await ffmpeg.probe(Path(path))


@dataclass(frozen=True, slots=True)
class TranscoderDeps:
    settings: TranscoderSettings
    topology: Topology
    publisher: Publisher
    storage: Storage
    claims: Claims
    runner: JobRunner
    encoder: Encoder
    #: Serialises claiming per video (see handle_transcode_rendition).
    claiming: KeyedLocks = field(default_factory=KeyedLocks)


def command_message(command: TranscodeRendition, **headers: object) -> OutgoingMessage:
    return outgoing(
        command,
        message_id=command.job_id,
        type="transcode.rendition",
        correlation_id=command.video_id,
        app_id="transcoder",
        headers=headers,
    )


async def report(deps: TranscoderDeps, item: Report) -> None:
    await publish_report(deps.publisher, item, app_id="transcoder")


async def handle_transcode_rendition(cmd: TranscodeRendition, deps: TranscoderDeps) -> None:
    """Claim the job (and its siblings, to encode from one decode) and queue them locally.

    Idempotent on ``job_id``: a job that is done or held by a live transcoder is skipped — which
    is also what happens to a sibling's own message once its job was claimed with this one. A
    job that failed for good runs again, from its first attempt, when an operator replays its
    dead letter (``python -m shared.ops dlq replay``). The
    messages of one video arrive on several queues at once; they are claimed one video at a time,
    so the first claims the whole batch instead of each taking its own job.
    """
    async with deps.claiming.hold(cmd.video_id):
        if replayed() and await deps.claims.reopen(cmd.job_id):
            # an operator sent it back from the dead-letter queue, its cause fixed
            log.info("job %s replayed from its dead-letter queue: running it again", cmd.job_id)
        job = await _claim(cmd, deps)
        if job is None:
            log.info(
                "job %s is done, held by a live transcoder or superseded by a later job of its "
                "rendition; dropped",
                cmd.job_id,
            )
            return
        jobs = [job]
        for sibling in _batchable(cmd, deps):
            claimed = await _claim(cmd.sibling(sibling), deps)
            if claimed is not None:
                jobs.append(claimed)
    await deps.runner.submit_all(_batches(cmd, jobs, deps))


async def _claim(cmd: TranscodeRendition, deps: TranscoderDeps) -> Job | None:
    job = await deps.claims.claim(cmd)
    if job is not None and cmd.dispatched_at is not None:
        RENDITION_QUEUE_WAIT.labels(cmd.quality.value).observe(
            max(0.0, (datetime.now(UTC) - cmd.dispatched_at).total_seconds())
        )
    return job


def _batchable(cmd: TranscodeRendition, deps: TranscoderDeps) -> list[Sibling]:
    """The siblings to claim with ``cmd``: those this process serves, when decode-once is on."""
    if not deps.settings.transcoder_decode_once:
        return []
    served = set(deps.settings.transcoder_qualities)
    return [s for s in cmd.siblings if s.quality in served]


def _batches(cmd: TranscodeRendition, jobs: list[Job], deps: TranscoderDeps) -> list[list[Job]]:
    """One batch (one ffmpeg) for ``jobs``; the video's lowest rung apart when it is among them.

    The lowest rung alone finishes first (the runner starts it first), so the video is playable
    early; the other rungs share one decode. That costs a second decode of the source, spent
    as ``transcoder_lowest_alone`` says: always, never, or (``idle``) only when no other batch
    of this process is running or waiting, so that a busy transcoder encodes every video from
    one decode.
    """
    lowest = min((cmd.quality, *(s.quality for s in cmd.siblings)), key=lambda q: q.short_side)
    alone = [j for j in jobs if j.command.quality == lowest]
    apart = deps.settings.transcoder_lowest_alone
    if apart == "idle":
        apart = deps.runner.busy == 0
    if not apart or not alone or len(jobs) == 1:
        return [jobs]
    return [alone, [j for j in jobs if j.command.quality != lowest]]


async def handle_video_canceled(event: VideoCanceled | VideoDeleted, deps: TranscoderDeps) -> None:
    """Kill this process's encodes of the video and mark its jobs canceled; publishes nothing."""
    stopped = deps.runner.cancel_video(event.data.id)
    await deps.claims.cancel_video(event.data.id)
    if stopped:
        log.info("canceled %d job(s) of %s", stopped, event.data.id)


def _queue(deps: TranscoderDeps, job: Job) -> QueueSpec:
    return deps.topology.transcode_queue(job.command.quality)


def _progress_reporter(batch: Sequence[Job], deps: TranscoderDeps) -> ffmpeg.OnProgress:
    interval = deps.settings.transcoder_progress_interval_s
    last_sent = 0.0

    async def on_progress(progress: ffmpeg.Progress) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if progress.done or now - last_sent < interval:
            return
        last_sent = now
        for job in batch:  # one decode feeds every rendition of the batch at the same pace
            cmd = job.command
            item = RenditionProgressReport(
                id=new_id("evt"),
                timestamp=datetime.now(UTC),
                video_id=cmd.video_id,
                job_id=cmd.job_id,
                quality=cmd.quality.value,
                progress=encode.percent(progress.out_time_s, cmd.duration_s),
                speed=progress.speed,
            )
            try:
                await report(deps, item)
            except TransientError as exc:  # progress is best effort; the encode goes on
                log.debug("progress not published: %s", exc)

    return on_progress


#: How far a rendition may end from its source (SPEC: "duration within 0.1 s of the source").
DURATION_TOLERANCE_S = 0.1


def check_complete(cmd: TranscodeRendition, made_s: float, warnings: Sequence[str]) -> None:
    """Refuse an output shorter than its source.

    ffmpeg exits 0 on a truncated or corrupt source and writes what it could decode; that is a
    failed rendition, not a short one. Where ffmpeg reported a read or decode error, the output
    must reach the source's duration within :data:`DURATION_TOLERANCE_S`; where it reported
    none, within 2 % (at least half a second): the source's index may declare a little more
    than its streams hold (audio and video that end a little apart), and ffmpeg read all there
    was.
    """
    missing = cmd.duration_s - made_s
    allowed = DURATION_TOLERANCE_S if warnings else max(0.5, 0.02 * cmd.duration_s)
    if missing > allowed:
        reason = ffmpeg.telling(warnings) if warnings else "no error reported"
        raise EncodeFailed(
            f"the encode stopped at {made_s:.2f} s of {cmd.duration_s:.2f} s; "
            f"the source is truncated or corrupt (ffmpeg: {reason})"
        )


class _FinalProgress:
    """Passes progress on, and keeps ffmpeg's closing block: how far it got (``out_time``).

    The closing block (``progress=end``) says how much of the source ffmpeg encoded and muxed,
    which is all the transcoder needs to know about its outputs, sizes apart: an ffprobe of each
    output after the encode took as long as the rest of the pipeline after it.
    """

    def __init__(self, then: ffmpeg.OnProgress) -> None:
        self.then = then
        self.out_time_s: float | None = None

    async def __call__(self, progress: ffmpeg.Progress) -> None:
        if progress.done:
            self.out_time_s = progress.out_time_s
        await self.then(progress)


async def encode_batch(batch: Sequence[Job], deps: TranscoderDeps) -> list[RenditionCompletedReport]:
    """Encode a video's renditions from one decode, each to its final path atomically.

    Returns the ``rendition.completed`` reports, one per job, for the caller to publish.
    """
    first = batch[0].command
    async with source_in_place(deps.storage, first.video_id) as source:
        return await _encode(batch, source, deps)


async def _encode(batch: Sequence[Job], source: str, deps: TranscoderDeps) -> list[RenditionCompletedReport]:
    first, settings = batch[0].command, deps.settings
    profile = encode.EncodeProfile(
        settings.transcoder_preset,
        settings.transcoder_crf,
        settings.transcoder_threads,
        settings.transcoder_realtime,
    )
    started = time.monotonic()
    made: list[tuple[Job, int]] = []
    async with contextlib.AsyncExitStack() as stack:
        temps = [
            await stack.enter_async_context(
                deps.storage.writer(rendition_key(job.video_id, job.command.quality.value), suffix=".mp4")
            )
            for job in batch
        ]
        final = _FinalProgress(_progress_reporter(batch, deps))
        warnings = await deps.encoder.run(
            encode.argv_many(
                source, [(str(t), job.command) for t, job in zip(temps, batch, strict=True)], profile
            ),
            timeout=max(
                settings.transcoder_min_timeout_s, first.duration_s * settings.transcoder_timeout_factor
            )
            * len(batch),
            stall_timeout=settings.transcoder_stall_timeout_s,
            on_progress=final,
        )
        made_s = final.out_time_s
        # ffmpeg's closing block gives the time of the last packet written, not its end: a frame
        # short of the file's length without audio (a second, for a slideshow at 1 fps). An
        # output that looks short, or no closing block (never seen from ffmpeg), is measured.
        if made_s is None or first.duration_s - made_s > DURATION_TOLERANCE_S:
            made_s = min([(await deps.encoder.probe(str(temp))).duration_s for temp in temps])
        for job, temp in zip(batch, temps, strict=True):
            check_complete(job.command, made_s, warnings or [])
            made.append((job, temp.stat().st_size))
    elapsed = time.monotonic() - started
    speed = first.duration_s / max(elapsed, 1e-3)
    qualities = ", ".join(job.command.quality.value for job in batch)
    for job in batch:
        FFMPEG_SPEED.labels(job.command.quality.value).observe(speed)
    log.info(
        "encoded %s of %s in %.1f s (%.1fx real time, %d bytes, %s)",
        qualities,
        first.video_id,
        elapsed,
        speed,
        sum(size for _, size in made),
        "one decode" if len(batch) > 1 else "alone",
        extra={"encode_seconds": round(elapsed, 3), "speed": round(speed, 2), "renditions": len(batch)},
    )
    return [
        RenditionCompletedReport(
            id=event_id(job.command.job_id, "rendition.completed"),
            timestamp=datetime.now(UTC),
            video_id=job.video_id,
            job_id=job.command.job_id,
            quality=job.command.quality.value,
            width=job.command.width,  # the scale filter makes exactly this size, square pixels
            height=job.command.height,
            size_bytes=size,
            duration_s=round(made_s, 3),
            encode_seconds=round(elapsed, 3),
        )
        for job, size in made
    ]


async def report_failure(job: Job, error: str, deps: TranscoderDeps, *, reason: str = "permanent") -> None:
    """Report ``rendition.failed`` and park the command in the DLQ with the reason.

    ``reason`` is the DLQ's: ``permanent`` (the media or the command can never work) or
    ``retries-exhausted`` (a transient failure that outlasted the retries).
    """
    cmd = job.command
    await report(
        deps,
        RenditionFailedReport(
            id=event_id(cmd.job_id, "rendition.failed"),
            timestamp=datetime.now(UTC),
            video_id=cmd.video_id,
            job_id=cmd.job_id,
            quality=cmd.quality.value,
            error=error,
            attempts=job.attempt,
        ),
    )
    await dead_letter(
        deps.publisher,
        _queue(deps, job),
        command_message(cmd),
        reason=reason,
        error=error,
        attempts=job.attempt,
    )


async def fail_job(job: Job, error: str, deps: TranscoderDeps, *, reason: str = "permanent") -> None:
    await report_failure(job, error, deps, reason=reason)
    await deps.claims.finish(job.id, "failed", error)


#: How long a finished job keeps trying to record its outcome (its lease is renewed meanwhile).
SETTLE_FOR_S = 600.0


async def settle(step: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``step`` until the broker and the database take it, backing off up to 30 s.

    An encode that finished must not be lost to a broker or database restart: while this
    waits, the job stays in the runner, so its lease is renewed and nobody else takes it. If it
    never succeeds the error propagates, the lease expires, and the reaper dispatches the job
    again. Every step here is idempotent (deterministic ids, state updates).
    """
    deadline = time.monotonic() + SETTLE_FOR_S
    delay = 1.0
    while True:
        try:
            await step()
        except TransientError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s); trying again in %.0f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        else:
            return


async def run_job(job: Job, deps: TranscoderDeps) -> None:
    """Encode one claimed job and settle it (a batch of one)."""
    await run_batch((job,), deps)


async def run_batch(batch: Sequence[Job], deps: TranscoderDeps) -> None:
    """Encode claimed jobs and settle each: done, retry later, failed for good, or canceled."""
    first = batch[0]
    with log_context(video_id=first.video_id, event_id=first.id, queue=_queue(deps, first).name):
        log.info(
            "encoding %s of %s (attempt %s)",
            ", ".join(job.command.quality.value for job in batch),
            first.video_id,
            ", ".join(str(job.attempt) for job in batch),
        )
        try:
            completed = await encode_batch(batch, deps)
        except WorkCanceled as exc:
            log.info("jobs canceled: %s", exc)
            for job in batch:
                await settle(partial(deps.claims.finish, job.id, "canceled"), "marking the job canceled")
        except TransientError as exc:
            for job in batch:
                await settle(partial(_retry_or_fail, job, exc, _queue(deps, job), deps), "scheduling a retry")
        except PermanentError as exc:
            log.warning("jobs failed: %s", exc)
            for job in batch:
                await settle(partial(fail_job, job, str(exc), deps), "reporting the failure")
        except asyncio.CancelledError:
            raise  # canceled video, lost lease or shutdown: whoever canceled settles the jobs
        except Exception as exc:
            log.exception("encode crashed")
            for job in batch:
                await settle(
                    partial(fail_job, job, f"internal error: {exc!r}", deps), "reporting the failure"
                )
        else:
            # Each job is settled on its own; a failure is raised once all have been tried.
            outcomes = await asyncio.gather(
                *(_settle_done(job, done, deps) for job, done in zip(batch, completed, strict=True)),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome


async def _settle_done(job: Job, done: RenditionCompletedReport, deps: TranscoderDeps) -> None:
    await settle(partial(report, deps, done), "reporting the rendition")
    await settle(partial(deps.claims.finish, job.id, "done"), "marking the job done")


async def _retry_or_fail(job: Job, exc: TransientError, queue: QueueSpec, deps: TranscoderDeps) -> None:
    if job.attempt >= queue.max_attempts:
        log.warning("job failed after %d attempts: %s", job.attempt, exc)
        await fail_job(job, f"gave up after {job.attempt} attempts: {exc}", deps, reason="retries-exhausted")
        return
    delay = await schedule_retry(
        deps.publisher, queue, command_message(job.command), attempt=job.attempt - 1, error=str(exc)
    )
    await deps.claims.finish(job.id, "retrying", str(exc))
    log.info("job attempt %d failed (%s); retry in %d s", job.attempt, exc, delay)


async def reclaim(job: Job, deps: TranscoderDeps) -> str:
    """For the reaper: a job whose transcoder died is dispatched again, or failed if used up."""
    queue = _queue(deps, job)
    if job.attempt >= queue.max_attempts:
        await report_failure(
            job, f"its transcoder stopped answering {job.attempt} times", deps, reason="retries-exhausted"
        )
        return "failed"
    await deps.publisher.publish(
        REQUEUE, queue.name, command_message(job.command, **{ATTEMPT_HEADER: job.attempt})
    )
    log.warning("job %s lost its transcoder; dispatched again", job.id)
    return "retrying"


async def hand_back(job: Job, deps: TranscoderDeps) -> None:
    """On shutdown: return an unfinished job to its queue, without counting an attempt."""
    await deps.claims.release(
        job.id, partial(deps.publisher.publish, REQUEUE, _queue(deps, job).name, command_message(job.command))
    )
