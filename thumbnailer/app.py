"""The thumbnailer service: one route on the uploads fanout."""

from __future__ import annotations

import logging
from typing import Any

from shared.events import VideoUploaded
from shared.ids import is_video_id
from shared.logging import configure_logging
from shared.messaging.consumer import Route
from shared.messaging.prepare import prepare_broker
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import THUMBNAILER_UPLOADS, Topology, build
from shared.metrics import serve_metrics
from shared.runtime import Consumers, connect, run_until_stopped
from shared.storage import LocalStorage
from thumbnailer.handlers import FrameGrabber, ThumbnailerDeps, handle_video_uploaded, report_thumbnail_failed
from thumbnailer.settings import ThumbnailerSettings

log = logging.getLogger(__name__)


def _not_a_video(event: VideoUploaded) -> str | None:
    """An id that is no video's names no folder of storage: the message is malformed."""
    return None if is_video_id(event.data.id) else f"not a video id: {event.data.id!r}"


def routes(settings: ThumbnailerSettings, topology: Topology) -> tuple[Route[Any, ThumbnailerDeps], ...]:
    return (
        Route(
            topology.queue(THUMBNAILER_UPLOADS),
            VideoUploaded,
            handle_video_uploaded,
            on_failure=report_thumbnail_failed,
            prefetch=settings.thumbnailer_concurrency,
            misplaced=_not_a_video,
        ),
    )


async def main() -> None:
    settings = ThumbnailerSettings()
    configure_logging("thumbnailer", settings.log_level, settings.log_format)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    topology = build(settings)
    connection = await connect(str(settings.amqp_url), "thumbnailer", management=settings.management_api())
    try:
        await prepare_broker(connection, settings, topology)
        publisher = await AmqpPublisher.open(connection)
        deps = ThumbnailerDeps(settings, publisher, LocalStorage(settings.storage_dir), FrameGrabber())
        consumers = Consumers(
            service="thumbnailer",
            connection=connection,
            topology=topology,
            routes=routes(settings, topology),
            deps=deps,
            publisher=publisher,
        )
        await run_until_stopped(consumers, grace=settings.shutdown_grace_s)
    finally:
        await connection.close()
