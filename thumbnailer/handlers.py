"""Thumbnailer handlers: make the poster JPEGs of an uploaded video and report them."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import ffmpeg
from shared.errors import EncodeFailed, PipelineError, TransientError
from shared.events import VideoUploaded
from shared.ids import event_id
from shared.messaging import consumer
from shared.messaging.publisher import Publisher
from shared.reports import (
    THUMBNAIL_RUN_HEADER,
    Report,
    ThumbnailCompletedReport,
    ThumbnailFailedReport,
    ThumbnailStartedReport,
    publish_report,
)
from shared.resources import Video
from shared.storage import Storage, source_in_place, thumbnail_key
from thumbnailer import poster
from thumbnailer.settings import ThumbnailerSettings

log = logging.getLogger(__name__)


class FrameGrabber:
    """The ffmpeg side, behind a seam so handler tests can use a fake."""

    async def run(self, argv: list[str], *, timeout: float, stall_timeout: float) -> None:
        await ffmpeg.run(argv, timeout=timeout, stall_timeout=stall_timeout)


@dataclass(frozen=True, slots=True)
class ThumbnailerDeps:
    settings: ThumbnailerSettings
    publisher: Publisher
    storage: Storage
    grabber: FrameGrabber


async def _report(deps: ThumbnailerDeps, item: Report) -> None:
    await publish_report(deps.publisher, item, app_id="thumbnailer")


async def handle_video_uploaded(event: VideoUploaded, deps: ThumbnailerDeps) -> None:
    """Write the poster at each width (atomic, deterministic paths); reports its start and its end.

    Idempotent: a redelivery overwrites the same files and reports the same id.
    """
    video = event.data
    run = _run()
    async with source_in_place(deps.storage, video.id) as source:
        widths = await _make_posters(video, source, deps, run)
    await _report(
        deps,
        ThumbnailCompletedReport(
            id=_report_id(video.id, "thumbnail.completed", run),
            timestamp=datetime.now(UTC),
            video_id=video.id,
            widths=widths,
            run=run,
        ),
    )


def _run() -> str | None:
    """The run of the poster this message asks for: ``None`` for the upload's, an id for a retry's."""
    run = consumer.header(THUMBNAIL_RUN_HEADER)
    return run if isinstance(run, str) and run else None


def _report_id(video_id: str, type_: str, run: str | None) -> str:
    """The same for every delivery of one run's message; another for each run."""
    return event_id(video_id, type_) if run is None else event_id(video_id, type_, run)


async def _make_posters(video: Video, source: str, deps: ThumbnailerDeps, run: str | None) -> list[int]:
    """Report the start, then write the poster at each width; returns the widths."""
    sizes = poster.sizes(video.source.width, video.source.height)
    started = ThumbnailStartedReport(
        id=_report_id(video.id, "thumbnail.started", run),
        timestamp=datetime.now(UTC),
        video_id=video.id,
        run=run,
    )
    try:
        await _report(deps, started)
    except TransientError as exc:  # its status only: the poster goes on without it
        log.debug("thumbnail.started not published: %s", exc)
    async with contextlib.AsyncExitStack() as stack:
        outputs = [
            (
                w,
                h,
                await stack.enter_async_context(
                    deps.storage.writer(thumbnail_key(video.id, w), suffix=".jpg")
                ),
            )
            for w, h in sizes
        ]
        looks = poster.attempts(video.source.duration_s, video.source.width, video.source.height)
        for look in looks:
            await deps.grabber.run(
                poster.argv(source, look, outputs),
                timeout=deps.settings.thumbnailer_timeout_s,
                stall_timeout=deps.settings.thumbnailer_stall_timeout_s,
            )
            if all(path.is_file() and path.stat().st_size > 0 for _, _, path in outputs):
                break
        else:
            raise EncodeFailed("ffmpeg wrote no frame (the video may have no decodable picture)")
    return [w for w, _ in sizes]


async def report_thumbnail_failed(event: VideoUploaded, error: PipelineError, deps: ThumbnailerDeps) -> None:
    """on_failure: tell the gateway the poster cannot be made (the video then fails)."""
    run = _run()
    await _report(
        deps,
        ThumbnailFailedReport(
            id=_report_id(event.data.id, "thumbnail.failed", run),
            timestamp=datetime.now(UTC),
            video_id=event.data.id,
            run=run,
            error=str(error),
        ),
    )
