"""Video use cases: record an accepted upload, read, list, delete, retry a rendition.

Every state change and the messages it causes are written in one transaction (the outbox), and
a public event is numbered and recorded with it (``gateway/outbox.py``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway import repository as repo
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.links import Links
from gateway.outbox import append_event, enqueue
from gateway.repository import Client, Conn
from shared.commands import Sibling, TranscodeRendition
from shared.events import VideoUploaded, to_message
from shared.ffmpeg import ProbeResult
from shared.ids import event_id, new_id
from shared.ladder import PlannedRendition, Quality
from shared.messaging.codec import outgoing
from shared.messaging.topology import REQUEUE, THUMBNAILER_UPLOADS, TRANSCODE
from shared.reports import THUMBNAIL_RUN_HEADER
from shared.resources import TERMINAL_STATUSES, Rendition, Source, Thumbnail, Video


def rendition_from_row(row: asyncpg.Record, links: Links, at: datetime | None = None) -> Rendition:
    """The resource as of ``at`` (an event's time; now when read), which ``eta_s`` counts from."""
    ready = row["status"] == "ready"
    eta_s = None
    if row["status"] == "processing" and row["eta_at"] is not None:
        # counted down from the last progress report; unknown once that time has passed
        left = (row["eta_at"] - (at or datetime.now(UTC))).total_seconds()
        eta_s = round(left, 1) if left >= 0 else None
    return Rendition(
        video_id=row["video_id"],
        quality=row["quality"],
        status=row["status"],
        progress=round(float(row["progress"]), 1),
        width=row["width"],
        height=row["height"],
        size_bytes=row["size_bytes"],
        duration_s=row["duration_s"],
        url=links.rendition(row["video_id"], row["quality"]) if ready else None,
        signed_url=links.signed_rendition(row["video_id"], row["quality"]) if ready else None,
        error=row["error"],
        attempts=row["attempts"],
        queue_position=row["queue_position"],
        eta_s=eta_s,
        encode_seconds=row["encode_seconds"] if ready else None,
    )


def _progress(renditions: list[Rendition]) -> float:
    """The renditions' progress, weighted by their pixels (a ready one counts 100)."""
    weights = [r.width * r.height for r in renditions]
    if not renditions or not sum(weights):
        return 0.0
    done = sum(
        w * (100.0 if r.status == "ready" else r.progress) for w, r in zip(weights, renditions, strict=True)
    )
    return round(done / sum(weights), 1)


def _eta(renditions: list[Rendition]) -> float | None:
    """The last expected end, when every rendition still to finish is encoding with one."""
    left = [r for r in renditions if r.status in ("queued", "processing")]
    if not left or any(r.eta_s is None for r in left):
        return None
    return max(r.eta_s for r in left if r.eta_s is not None)


def video_from_rows(
    row: asyncpg.Record, renditions: list[asyncpg.Record], links: Links, at: datetime | None = None
) -> Video:
    widths = sorted(row["thumbnail_widths"] or [], reverse=True)
    parts = [rendition_from_row(r, links, at) for r in renditions]
    return Video(
        id=row["id"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        source=Source.model_validate(row["source"]),
        renditions=parts,
        thumbnail=Thumbnail(
            status=row["thumbnail_status"],
            widths=widths,
            urls=[links.thumbnail(row["id"], w) for w in widths],
            signed_urls=[u for w in widths if (u := links.signed_thumbnail(row["id"], w))],
            error=row["thumbnail_error"],
        ),
        error=row["error"],
        metadata=row["metadata"] or {},
        callback_url=row["callback_url"],
        notify_email=row["notify_email"],
        progress=_progress(parts),
        eta_s=_eta(parts) if row["status"] == "processing" else None,
    )


async def load_video(
    conn: Conn, row: asyncpg.Record, links: Links, *, places: bool = False, at: datetime | None = None
) -> Video:
    """The video; with ``places``, its queued renditions' ``queue_position``; as of ``at``."""
    renditions = await repo.rendition_rows(conn, [row["id"]], places=places)
    return video_from_rows(row, renditions, links, at)


async def reload_video(
    conn: Conn, video_id: str, links: Links, *, places: bool = False, at: datetime | None = None
) -> Video:
    row = await repo.video_row_any(conn, video_id)
    assert row is not None  # noqa: S101 - the caller holds the row lock
    return await load_video(conn, row, links, places=places, at=at)


@dataclass(frozen=True, slots=True)
class AcceptedUpload:
    """An upload that streamed, probed and fitted the limits, waiting to be recorded."""

    video_id: str
    filename: str
    size_bytes: int
    probe: ProbeResult
    plan: list[PlannedRendition]
    metadata: dict[str, Any]
    callback_url: str | None
    notify_email: str | None


def source_of(upload: AcceptedUpload) -> Source:
    p = upload.probe
    return Source(
        filename=upload.filename,
        size_bytes=upload.size_bytes,
        width=p.display_width,
        height=p.display_height,
        duration_s=p.duration_s,
        video_codec=p.video_codec,
        audio_codec=p.audio_codec,
        rotation=p.rotation,
        frame_rate=p.frame_rate,
        format_name=p.format_name,
    )


def transcode_command(
    video_id: str, planned: PlannedRendition, source: Source, job_id: str
) -> TranscodeRendition:
    return TranscodeRendition(
        job_id=job_id,
        video_id=video_id,
        quality=planned.quality,
        width=planned.width,
        height=planned.height,
        has_audio=source.audio_codec is not None,
        duration_s=source.duration_s,
        dispatched_at=datetime.now(UTC),
    )


async def _enqueue_transcode(conn: Conn, command: TranscodeRendition) -> None:
    message = outgoing(
        command,
        message_id=command.job_id,
        type="transcode.rendition",
        correlation_id=command.video_id,
        app_id="gateway",
    )
    await enqueue(conn, TRANSCODE, command.quality.value, message)


async def record_upload(conn: Conn, client: Client, upload: AcceptedUpload, *, links: Links) -> Video:
    """Insert the video and its planned renditions; queue ``video.uploaded`` and the encodes."""
    async with conn.transaction():
        source = source_of(upload)
        await repo.insert_video(
            conn,
            video_id=upload.video_id,
            client_id=client.id,
            source=source.model_dump(mode="json"),
            metadata=upload.metadata,
            callback_url=upload.callback_url,
            notify_email=upload.notify_email,
        )
        jobs: list[tuple[PlannedRendition, str]] = []
        await repo.take_queue_places(conn)  # the places in the answer are then the real ones
        for position, planned in enumerate(upload.plan):
            job_id = new_id("job")
            jobs.append((planned, job_id))
            await repo.insert_rendition(
                conn,
                video_id=upload.video_id,
                quality=planned.quality.value,
                position=position,
                width=planned.width,
                height=planned.height,
                job_id=job_id,
            )
        video = await reload_video(conn, upload.video_id, links, places=True)
        await append_event(conn, video_id=video.id, type_="video.uploaded", data=video)
        # The lowest rung goes first: it finishes soonest, so the video is playable early.
        siblings = [Sibling(job_id=j, quality=p.quality, width=p.width, height=p.height) for p, j in jobs]
        for planned, job_id in reversed(jobs):
            command = transcode_command(upload.video_id, planned, source, job_id).model_copy(
                update={"siblings": tuple(s for s in siblings if s.job_id != job_id)}
            )
            await _enqueue_transcode(conn, command)
    return video


async def get_video(
    conn: Conn, client: Client | None, video_id: str, links: Links, *, places: bool = False
) -> Video:
    """The client's video; any client's with ``None`` (a signed link, checked by the caller)."""
    row = await repo.video_row(conn, video_id, client_id=client.id if client else None)
    if row is None:
        raise NotFound(f"no video {video_id!r}")
    return await load_video(conn, row, links, places=places)


def encode_cursor(created_at: datetime, video_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{video_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, video_id = text.split("|", 1)
        return datetime.fromisoformat(stamp), video_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is not one vidq gave out; use next_cursor from a listing") from exc


async def list_videos(
    conn: Conn, client: Client, *, status: str | None, cursor: str | None, limit: int, links: Links
) -> tuple[list[Video], str | None]:
    after = decode_cursor(cursor) if cursor else None
    rows = await repo.list_video_rows(conn, client.id, status=status, after=after, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    renditions = await repo.rendition_rows(conn, [r["id"] for r in page])
    by_video: dict[str, list[asyncpg.Record]] = {}
    for r in renditions:
        by_video.setdefault(r["video_id"], []).append(r)
    videos = [video_from_rows(row, by_video.get(row["id"], []), links) for row in page]
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more and page else None
    return videos, next_cursor


async def delete_video(conn: Conn, client: Client, video_id: str, links: Links) -> None:
    """Cancel what is in flight (``video.canceled``), then delete (``video.deleted``)."""
    async with conn.transaction():
        row = await repo.video_row(conn, video_id, client_id=client.id, lock=True)
        if row is None:
            raise NotFound(f"no video {video_id!r}")
        # A failed video may still have parts waiting: they end with it, so no queue counts them.
        await repo.cancel_open_parts(conn, video_id)
        if row["status"] not in TERMINAL_STATUSES:
            await repo.set_video_status(conn, video_id, "canceled", "canceled by the client")
            video = await reload_video(conn, video_id, links)
            await append_event(conn, video_id=video_id, type_="video.canceled", data=video)
        video = await reload_video(conn, video_id, links)
        await append_event(conn, video_id=video_id, type_="video.deleted", data=video)
        await repo.mark_video_deleted(conn, video_id)


def failure_of(video: Video) -> str | None:
    """What a failed video's ``error`` says: a part of it still failed, and why (pure)."""
    for rendition in video.renditions:
        if rendition.status == "failed":
            return f"rendition {rendition.quality} failed: {rendition.error}"
    if video.thumbnail.status == "failed":
        return f"thumbnail failed: {video.thumbnail.error}"
    return None


async def _after_retry(conn: Conn, video_id: str, links: Links) -> Video:
    """The video once a failed part of it is queued again.

    It is processing, unless another part is still failed: its error then names that one (it
    named the part now retried).
    """
    video = await reload_video(conn, video_id, links)
    still = failure_of(video)
    await repo.set_video_status(conn, video_id, "failed" if still else "processing", still)
    return await reload_video(conn, video_id, links, places=True)


async def _video_to_retry(conn: Conn, client: Client, video_id: str, links: Links) -> Video:
    """The client's video, its row locked, if a part of it may run again (not once canceled)."""
    row = await repo.video_row(conn, video_id, client_id=client.id, lock=True)
    if row is None:
        raise NotFound(f"no video {video_id!r}")
    if row["status"] == "canceled":
        raise Conflict("the video was canceled; upload it again")
    return await load_video(conn, row, links)


async def retry_thumbnail(conn: Conn, client: Client, video_id: str, *, links: Links) -> Video:
    """Send a failed poster's work to the thumbnailer again, as a new run; the video is processing again.

    The thumbnailer's queue gets the ``video.uploaded`` message it had for the upload, through
    ``vidq.requeue`` (key = its queue; not the uploads fanout: the upload happened once), with
    the run's id in a header; its reports carry the run, so a late one of an earlier run is ignored.
    """
    async with conn.transaction():
        video = await _video_to_retry(conn, client, video_id, links)
        if video.thumbnail.status != "failed":
            raise Conflict(
                f"the thumbnail is {video.thumbnail.status}; only a failed thumbnail can be retried"
            )
        run = new_id("job")
        await repo.requeue_thumbnail(conn, video_id, run)
        video = await _after_retry(conn, video_id, links)
        uploaded = VideoUploaded(
            id=event_id(video_id, "video.uploaded", run), timestamp=video.created_at, sequence=1, data=video
        )
        message = to_message(uploaded)
        message = dataclasses.replace(
            message, message_id=run, headers={**message.headers, THUMBNAIL_RUN_HEADER: run}
        )
        await enqueue(conn, REQUEUE, THUMBNAILER_UPLOADS, message)
        return video


async def retry_rendition(conn: Conn, client: Client, video_id: str, quality: str, *, links: Links) -> Video:
    """Dispatch a failed rendition again under a new job id; the video is processing again."""
    async with conn.transaction():
        video = await _video_to_retry(conn, client, video_id, links)
        current = next((r for r in video.renditions if r.quality == quality), None)
        if current is None:
            raise NotFound(f"video {video_id!r} has no {quality} rendition")
        if current.status != "failed":
            raise Conflict(f"rendition {quality} is {current.status}; only a failed rendition can be retried")
        job_id = new_id("job")
        await repo.take_queue_places(conn)
        await repo.requeue_rendition(conn, video_id, quality, job_id)
        answer = await _after_retry(conn, video_id, links)
        planned = PlannedRendition(Quality(quality), current.width, current.height)
        await _enqueue_transcode(conn, transcode_command(video_id, planned, video.source, job_id))
        return answer
