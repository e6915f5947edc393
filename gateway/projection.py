"""Worker reports → video state → public events, and the "all done" barrier.

The gateway owns videos and renditions. Each report from ``vidq.results`` is applied in one
transaction that locks the video row, records the report id (so a redelivered report is a
no-op), updates the state, numbers and records the public event of the same id, and queues it in
the outbox. The lock makes the barrier exact: ``video.ready`` is published once, by whichever
report makes the last part ready; ``video.failed`` once, naming the part that failed for good.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import asyncpg

from gateway import repository as repo
from gateway.deps import GatewayDeps
from gateway.links import Links
from gateway.outbox import append_event
from gateway.repository import Conn
from gateway.videos import failure_of, reload_video
from shared.db import db_errors_are_transient
from shared.reports import (
    AnyReport,
    RenditionCompletedReport,
    RenditionFailedReport,
    RenditionProgressReport,
    RenditionReport,
    ThumbnailCompletedReport,
    ThumbnailFailedReport,
    ThumbnailStartedReport,
    VideoReport,
    WebhookDisabledReport,
)
from shared.storage import video_prefix

log = logging.getLogger(__name__)

_OPEN = ("queued", "processing")


@db_errors_are_transient
async def handle_report(report: AnyReport, deps: GatewayDeps) -> None:
    """Apply one worker report. Idempotent on ``report.id``; queues the matching public event."""
    if isinstance(report, WebhookDisabledReport):
        await _disable_webhook(report, deps)
        return
    async with deps.pool.acquire() as conn, conn.transaction():
        if not await repo.mark_report_processed(conn, report.id):
            return
        row = await repo.video_row_any(conn, report.video_id)
        if row is None:
            log.warning("report %s for an unknown video; ignored", report.type)
            return
        deleted = row["deleted_at"] is not None
        if not deleted:
            await _apply(conn, row, report, deps.links)
    if deleted:
        # A worker finished after the video was deleted: remove what it just wrote.
        await deps.storage.delete_prefix(video_prefix(report.video_id))


async def _disable_webhook(report: WebhookDisabledReport, deps: GatewayDeps) -> None:
    async with deps.pool.acquire() as conn, conn.transaction():
        if await repo.mark_report_processed(conn, report.id):
            await repo.disable_webhook(conn, report.webhook_id, report.reason)
            log.warning("webhook %s disabled: %s", report.webhook_id, report.reason)


async def _apply(conn: Conn, row: asyncpg.Record, report: VideoReport, links: Links) -> None:
    match report:
        case RenditionProgressReport():
            await _progress(conn, row, report, links)
        case RenditionCompletedReport():
            await _rendition_completed(conn, row, report, links)
        case RenditionFailedReport():
            await _rendition_failed(conn, row, report, links)
        case ThumbnailStartedReport() | ThumbnailCompletedReport() | ThumbnailFailedReport() if (
            report.run != row["thumbnail_run"]
        ):
            log.info(
                "%s of an earlier thumbnail run (%s); ignored", report.type, report.run or "the upload's"
            )
        case ThumbnailStartedReport():
            await _thumbnail_started(conn, row)
        case ThumbnailCompletedReport():
            await _thumbnail_completed(conn, row, report, links)
        case ThumbnailFailedReport():
            await _thumbnail_failed(conn, row, report, links)


async def _current_rendition(conn: Conn, report: RenditionReport) -> asyncpg.Record | None:
    """The rendition row, if ``report`` is about its current job (else the report is stale)."""
    rows = await repo.rendition_rows(conn, [report.video_id])
    row = next((r for r in rows if r["quality"] == report.quality), None)
    if row is None or row["job_id"] != report.job_id:
        log.info("stale %s for job %s; ignored", report.type, report.job_id)
        return None
    return row


async def _start_processing(conn: Conn, row: asyncpg.Record) -> None:
    if row["status"] == "queued":
        await repo.set_video_status(conn, row["id"], "processing", None)


async def _name_what_still_failed(conn: Conn, row: asyncpg.Record, links: Links) -> None:
    """A failed video whose part just got ready names another part still failed in its error.

    Its error named the first part that failed; once that part is retried and done, the video
    stays failed for the others (or turns ready when none is left: ``_maybe_ready``).
    """
    if row["status"] != "failed":
        return
    still = failure_of(await reload_video(conn, row["id"], links))
    if still is not None and still != row["error"]:
        await repo.set_video_status(conn, row["id"], "failed", still)


async def _rendition_event(conn: Conn, report: RenditionReport, links: Links) -> None:
    video = await reload_video(conn, report.video_id, links, at=report.timestamp)
    data = next(r for r in video.renditions if r.quality == report.quality)
    await append_event(
        conn,
        video_id=report.video_id,
        type_=report.type,
        data=data,
        event_id=report.id,
        occurred_at=report.timestamp,
    )


async def _progress(conn: Conn, row: asyncpg.Record, report: RenditionProgressReport, links: Links) -> None:
    rendition = await _current_rendition(conn, report)
    if rendition is None or rendition["status"] not in _OPEN:
        return
    progress = min(report.progress, 99.9)
    if rendition["status"] == "processing" and progress <= rendition["progress"]:
        # Progress only moves forward: a report overtaken by a later one, or a job taken over
        # from a worker that stopped (it encodes from the start again), says nothing new until
        # it passes what the client was already told.
        return
    await repo.update_rendition(
        conn,
        report.video_id,
        report.quality,
        status="processing",
        progress=progress,
        eta_at=_expected_end(row, report, progress),
    )
    await _start_processing(conn, row)
    await _rendition_event(conn, report, links)


def _expected_end(row: asyncpg.Record, report: RenditionProgressReport, progress: float) -> datetime | None:
    """When the encode should end: the source's seconds still to encode at the encoder's speed.

    ffmpeg's ``speed`` is the source's seconds encoded per second of wall time so far; ``None``
    (not yet known, as in ffmpeg's first report) leaves the end unknown.
    """
    if not report.speed or report.speed <= 0:
        return None
    duration_s = float((row["source"] or {}).get("duration_s") or 0.0)
    if duration_s <= 0:
        return None
    left_s = duration_s * (100.0 - progress) / 100.0 / report.speed
    return report.timestamp + timedelta(seconds=left_s)


async def _rendition_completed(
    conn: Conn, row: asyncpg.Record, report: RenditionCompletedReport, links: Links
) -> None:
    rendition = await _current_rendition(conn, report)
    if rendition is None or rendition["status"] == "canceled":
        return
    await repo.update_rendition(
        conn,
        report.video_id,
        report.quality,
        status="ready",
        progress=100.0,
        width=report.width,
        height=report.height,
        size_bytes=report.size_bytes,
        duration_s=report.duration_s,
        error=None,
        eta_at=None,
        encode_seconds=report.encode_seconds,
    )
    await _start_processing(conn, row)
    await _name_what_still_failed(conn, row, links)
    await _rendition_event(conn, report, links)
    await _maybe_ready(conn, report, links)


async def _rendition_failed(
    conn: Conn,
    row: asyncpg.Record,  # noqa: ARG001 - every _apply step takes the locked row
    report: RenditionFailedReport,
    links: Links,
) -> None:
    rendition = await _current_rendition(conn, report)
    if rendition is None or rendition["status"] in ("ready", "canceled"):
        return
    await repo.update_rendition(
        conn, report.video_id, report.quality, status="failed", error=report.error, attempts=report.attempts
    )
    await _rendition_event(conn, report, links)
    await _fail_video(conn, report, f"rendition {report.quality} failed: {report.error}", links)


async def _video_event(
    conn: Conn, report: ThumbnailCompletedReport | ThumbnailFailedReport, links: Links
) -> None:
    """The public event of a report whose ``data`` is the whole video."""
    video = await reload_video(conn, report.video_id, links, at=report.timestamp)
    await append_event(
        conn,
        video_id=video.id,
        type_=report.type,
        data=video,
        event_id=report.id,
        occurred_at=report.timestamp,
    )


async def _thumbnail_started(conn: Conn, row: asyncpg.Record) -> None:
    """Its status only (no public event: the poster is done within a second or two)."""
    if row["thumbnail_status"] != "queued":  # a late report: it is done, failed or canceled
        return
    await repo.set_thumbnail(conn, row["id"], "processing", (), None)
    await _start_processing(conn, row)


async def _thumbnail_completed(
    conn: Conn, row: asyncpg.Record, report: ThumbnailCompletedReport, links: Links
) -> None:
    if row["thumbnail_status"] == "canceled":
        return
    await repo.set_thumbnail(conn, report.video_id, "ready", report.widths, None)
    await _start_processing(conn, row)
    await _name_what_still_failed(conn, row, links)
    await _video_event(conn, report, links)
    await _maybe_ready(conn, report, links)


async def _thumbnail_failed(
    conn: Conn, row: asyncpg.Record, report: ThumbnailFailedReport, links: Links
) -> None:
    if row["thumbnail_status"] in ("ready", "canceled"):
        return
    await repo.set_thumbnail(conn, report.video_id, "failed", (), report.error)
    await _start_processing(conn, row)  # its event shows the video at work; video.failed follows
    await _video_event(conn, report, links)
    await _fail_video(conn, report, f"thumbnail failed: {report.error}", links)


async def _fail_video(
    conn: Conn, report: RenditionReport | ThumbnailFailedReport, error: str, links: Links
) -> None:
    if (await reload_video(conn, report.video_id, links)).status in ("failed", "canceled"):
        return
    await repo.set_video_status(conn, report.video_id, "failed", error)
    video = await reload_video(conn, report.video_id, links, at=report.timestamp)
    await append_event(
        conn, video_id=video.id, type_="video.failed", data=video, occurred_at=report.timestamp
    )


async def _maybe_ready(
    conn: Conn, report: RenditionCompletedReport | ThumbnailCompletedReport, links: Links
) -> None:
    video = await reload_video(conn, report.video_id, links, at=report.timestamp)
    if video.status in ("ready", "canceled"):
        return
    if video.thumbnail.status != "ready" or any(r.status != "ready" for r in video.renditions):
        return
    await repo.set_video_status(conn, video.id, "ready", None)
    video = await reload_video(conn, video.id, links, at=report.timestamp)
    await append_event(conn, video_id=video.id, type_="video.ready", data=video, occurred_at=report.timestamp)
