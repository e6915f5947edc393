"""Periodic jobs that run exactly once across every gateway replica.

Each tick, a gateway tries every job that is due: inside one transaction it takes the job's
PostgreSQL advisory lock (``pg_try_advisory_xact_lock``: a replica that cannot get it skips the
job), checks when the job last ran (``scheduled_runs``), runs it and records the run. So however
many gateways run, a job runs once per interval, and a crashed run is simply redone next tick.

Jobs:

* ``redispatch-stuck``: renditions queued or processing with no news for ``VIDQ_STUCK_AFTER_S``
  are dispatched again under the *same* job id — a transcoder that still holds the job drops the
  copy, one whose claim expired takes it;
* ``outbox-alarm``: unpublished outbox rows older than ``VIDQ_OUTBOX_ALERT_AFTER_S`` are logged
  as an error (every gateway's relay exports ``vidq_outbox_pending`` and
  ``vidq_outbox_oldest_seconds``);
* ``sweep-temporary-files``: files in the storage's ``tmp/`` older than
  ``VIDQ_ABANDONED_FILE_AFTER_S`` (an upload never probed, an encode whose worker died);
* ``sweep-deleted-videos``: files still on disk for deleted videos (a crash between the delete
  and the file removal);
* ``expire-resumable-uploads``: resumable uploads past ``VIDQ_RESUMABLE_EXPIRY_S`` unfinished
  are marked expired and their partial files removed;
* ``expire-idempotency-keys`` and ``prune``: keys past their 24 h, published outbox rows,
  processed report ids and direct and resumable uploads expired for ``VIDQ_RETENTION_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway import repository as repo
from gateway.deps import GatewayDeps
from gateway.metrics import OUTBOX_OLDEST, OUTBOX_PENDING
from gateway.outbox import enqueue
from gateway.repository import Conn
from gateway.resumable import PARTIALS, partial_key
from shared.commands import TranscodeRendition
from shared.db import TRANSIENT_DB_ERRORS
from shared.messaging.codec import outgoing
from shared.messaging.topology import TRANSCODE
from shared.storage import video_prefix

log = logging.getLogger(__name__)


Run = Callable[[Conn, GatewayDeps], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Periodic:
    name: str
    every_s: Callable[[GatewayDeps], float]
    run: Run

    @property
    def lock_key(self) -> int:
        return zlib.crc32(f"vidq.scheduler.{self.name}".encode())


async def redispatch_stuck(conn: Conn, deps: GatewayDeps) -> int:
    rows = await conn.fetch(
        """SELECT r.video_id, r.quality, r.width, r.height, r.job_id, v.source FROM renditions r
           JOIN videos v ON v.id = r.video_id
           WHERE r.status IN ('queued', 'processing') AND v.deleted_at IS NULL
             AND r.updated_at < now() - make_interval(secs => $1)
           ORDER BY r.updated_at LIMIT 500 FOR UPDATE OF r SKIP LOCKED""",
        deps.settings.stuck_after_s,
    )
    for row in rows:
        command = TranscodeRendition(
            job_id=row["job_id"],
            video_id=row["video_id"],
            quality=row["quality"],
            width=row["width"],
            height=row["height"],
            has_audio=row["source"].get("audio_codec") is not None,
            duration_s=row["source"]["duration_s"],
            dispatched_at=datetime.now(UTC),
        )
        message = outgoing(
            command,
            message_id=command.job_id,
            type="transcode.rendition",
            correlation_id=command.video_id,
            app_id="gateway",
        )
        await enqueue(conn, TRANSCODE, command.quality.value, message)
        await repo.update_rendition(conn, row["video_id"], row["quality"])  # touch: next check in a while
        log.warning("rendition %s of %s had no news; dispatched again", row["quality"], row["video_id"])
    return len(rows)


async def outbox_alarm(conn: Conn, deps: GatewayDeps) -> int:
    """Log an error while rows wait too long, and export the backlog as the relays do.

    The relays export it as they drain (``gateway/outbox.py``); a relay that cannot drain (its
    database connection refused over and over) would leave the gauges at their last, healthy
    figures, so the alarm on them never fired.
    """
    pending, age = await repo.outbox_backlog(conn)
    OUTBOX_PENDING.set(pending)
    OUTBOX_OLDEST.set(age)
    if age > deps.settings.outbox_alert_after_s:
        log.error(
            "the outbox has %d rows unpublished, the oldest for %.0f s: is the broker reachable?",
            pending,
            age,
        )
    return int(age)


def _abandoned(folder: Path, deps: GatewayDeps) -> list[Path]:
    """The files in ``folder`` untouched for ``VIDQ_ABANDONED_FILE_AFTER_S``."""
    limit = time.time() - deps.settings.abandoned_file_after_s
    if not folder.is_dir():
        return []
    return [path for path in folder.iterdir() if path.is_file() and path.stat().st_mtime < limit]


async def sweep_temporary_files(conn: Conn, deps: GatewayDeps) -> int:  # noqa: ARG001 - the job signature
    def sweep() -> int:
        abandoned = _abandoned(deps.storage.tmp, deps)
        for path in abandoned:
            path.unlink(missing_ok=True)
        return len(abandoned)

    removed = await asyncio.to_thread(sweep)
    if removed:
        log.info("removed %d abandoned temporary file(s)", removed)
    return removed


async def sweep_deleted_videos(conn: Conn, deps: GatewayDeps) -> int:
    rows = await conn.fetch(
        """SELECT id FROM videos
           WHERE deleted_at IS NOT NULL AND deleted_at > now() - make_interval(secs => $1)""",
        deps.settings.retention_s,
    )
    removed = 0
    for row in rows:
        if deps.storage.local_path(video_prefix(row["id"])).exists():
            await deps.storage.delete_prefix(video_prefix(row["id"]))
            removed += 1
    return removed


async def expire_resumable_uploads(conn: Conn, deps: GatewayDeps) -> int:
    expired = await repo.expire_resumable_uploads(conn)
    for upload_id in expired:
        await deps.storage.delete(partial_key(upload_id))
    if expired:
        log.info("removed %d expired resumable upload(s)", len(expired))
    # files no receiving upload owns (a crash between an upload's end and the removal of its
    # file, a PATCH that outlived the upload's end), once they are as old as abandoned files
    folder = deps.storage.local_path(PARTIALS)
    stale = [path.name for path in await asyncio.to_thread(_abandoned, folder, deps)]
    receiving = {
        row["id"]
        for row in await conn.fetch(
            "SELECT id FROM resumable_uploads WHERE id = ANY($1::text[]) AND status = 'receiving'", stale
        )
    }
    orphans = [name for name in stale if name not in receiving]
    for name in orphans:
        await deps.storage.delete(partial_key(name))
    if orphans:
        log.info("removed %d partial file(s) of resumable uploads no longer receiving", len(orphans))
    return len(expired) + len(orphans)


async def expire_idempotency_keys(conn: Conn, deps: GatewayDeps) -> int:
    status = await conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        deps.settings.idempotency_ttl_s,
    )
    return int(status.split()[-1])


async def prune(conn: Conn, deps: GatewayDeps) -> int:
    keep = deps.settings.retention_s
    published = await conn.execute(
        "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)", keep
    )
    reports = await conn.execute(
        "DELETE FROM processed_reports WHERE processed_at < now() - make_interval(secs => $1)", keep
    )
    # a direct upload's URL is dead once it expired; its video, if it made one, lives on its own
    uploads = await conn.execute(
        "DELETE FROM direct_uploads WHERE expires_at < now() - make_interval(secs => $1)", keep
    )
    resumable = await conn.execute(
        """DELETE FROM resumable_uploads
            WHERE status <> 'receiving' AND expires_at < now() - make_interval(secs => $1)""",
        keep,
    )
    return sum(int(done.split()[-1]) for done in (published, reports, uploads, resumable))


JOBS: tuple[Periodic, ...] = (
    Periodic("redispatch-stuck", lambda d: min(60.0, d.settings.stuck_after_s / 4), redispatch_stuck),
    Periodic("outbox-alarm", lambda _: 15.0, outbox_alarm),
    Periodic(
        "sweep-temporary-files",
        lambda d: min(600.0, d.settings.abandoned_file_after_s / 4),
        sweep_temporary_files,
    ),
    Periodic("sweep-deleted-videos", lambda _: 600.0, sweep_deleted_videos),
    Periodic("expire-resumable-uploads", lambda _: 600.0, expire_resumable_uploads),
    Periodic("expire-idempotency-keys", lambda _: 600.0, expire_idempotency_keys),
    Periodic("prune", lambda _: 3600.0, prune),
)


async def run_if_due(job: Periodic, deps: GatewayDeps) -> bool:
    """Run ``job`` if no replica ran it within its interval and none is running it now."""
    async with deps.pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", job.lock_key):
            return False
        due = await conn.fetchval(
            """SELECT coalesce(max(last_run_at), '-infinity') < now() - make_interval(secs => $2)
               FROM scheduled_runs WHERE name = $1""",
            job.name,
            job.every_s(deps),
        )
        if not due:
            return False
        result = await job.run(conn, deps)
        await conn.execute(
            """INSERT INTO scheduled_runs (name, last_run_at, last_result) VALUES ($1, now(), $2)
               ON CONFLICT (name) DO UPDATE SET last_run_at = now(), last_result = EXCLUDED.last_result""",
            job.name,
            result,
        )
    return True


async def run_scheduler(deps: GatewayDeps, jobs: tuple[Periodic, ...] = JOBS) -> None:
    """Forever: every tick, run the jobs that are due (one failing job does not stop the rest)."""
    while True:
        for job in jobs:
            try:
                await run_if_due(job, deps)
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("scheduler: %s skipped (%r)", job.name, exc)
            except Exception:  # a bug in one job must not stop the others
                log.exception("scheduler: %s failed", job.name)
        await asyncio.sleep(deps.settings.scheduler_tick_s)
