"""The transcoder service: routes for the qualities it serves, bootstrap, main loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from shared.commands import TranscodeRendition
from shared.db import create_pool, migrate_all
from shared.errors import TransientError
from shared.events import VideoCanceled, VideoDeleted
from shared.ladder import Quality
from shared.logging import configure_logging
from shared.messaging.consumer import Route
from shared.messaging.prepare import prepare_broker
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import TRANSCODER_CANCELS_PREFIX, Topology, broadcast_queue, build
from shared.metrics import serve_metrics
from shared.runtime import Consumers, connect, instance_name, run_until_stopped
from shared.storage import LocalStorage
from transcoder.claims import PgClaims
from transcoder.handlers import (
    Encoder,
    TranscoderDeps,
    hand_back,
    handle_transcode_rendition,
    handle_video_canceled,
    reclaim,
    run_batch,
)
from transcoder.runner import JobRunner
from transcoder.settings import TranscoderSettings

log = logging.getLogger(__name__)

CANCEL_EVENTS: TypeAdapter[VideoCanceled | VideoDeleted] = TypeAdapter(
    Annotated[VideoCanceled | VideoDeleted, Field(discriminator="type")]
)


def routes(settings: TranscoderSettings, topology: Topology) -> tuple[Route[Any, TranscoderDeps], ...]:
    work = tuple(
        Route(
            topology.transcode_queue(q),
            TranscodeRendition,
            handle_transcode_rendition,
            prefetch=1,
            misplaced=partial(_misplaced, q),
        )
        for q in settings.transcoder_qualities
    )
    cancels = broadcast_queue(TRANSCODER_CANCELS_PREFIX, "video.canceled", "video.deleted")
    return (*work, Route(cancels, CANCEL_EVENTS, handle_video_canceled, prefetch=10))


def _misplaced(quality: Quality, cmd: TranscodeRendition) -> str | None:
    """A job on another rung's queue: it was routed with a key that is not its quality."""
    if cmd.quality == quality:
        return None
    return (
        f"a {cmd.quality.value} job on the {quality.value} queue (the routing key must be the job's quality)"
    )


@contextlib.asynccontextmanager
async def bootstrap(settings: TranscoderSettings) -> AsyncIterator[tuple[TranscoderDeps, Any]]:
    await migrate_all(settings, ("transcoder",))
    pool = await create_pool(settings, "transcoder")
    connection = await connect(str(settings.amqp_url), "transcoder", management=settings.management_api())
    try:
        topology = build(settings)
        await prepare_broker(connection, settings, topology)
        publisher = await AmqpPublisher.open(connection)
        claims = PgClaims(
            pool, f"{instance_name('transcoder')}-{secrets.token_hex(4)}", settings.transcoder_lease_s
        )
        runner = JobRunner(
            slots=settings.transcoder_concurrency, claims=claims, heartbeat_s=settings.transcoder_lease_s / 3
        )
        deps = TranscoderDeps(
            settings,
            topology,
            publisher,
            LocalStorage(settings.storage_dir),
            claims,
            runner,
            Encoder(),
        )
        runner.work = partial(run_batch, deps=deps)
        yield deps, connection
    finally:
        await connection.close()
        await pool.close()


async def reap_forever(deps: TranscoderDeps) -> None:
    """Dispatch again the jobs whose transcoder died (their lease ran out)."""
    while True:
        await asyncio.sleep(deps.settings.transcoder_reaper_interval_s)
        try:
            await deps.claims.reap(partial(reclaim, deps=deps))
        except TransientError as exc:
            log.warning("reaper skipped a round: %s", exc)
        except Exception:  # e.g. a connection left mid-operation by a database restart: next round
            log.exception("reaper round failed")


async def main() -> None:
    settings = TranscoderSettings()
    configure_logging("transcoder", settings.log_level, settings.log_format)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    async with bootstrap(settings) as (deps, connection):
        consumers = Consumers(
            service="transcoder",
            connection=connection,
            topology=deps.topology,
            routes=routes(settings, deps.topology),
            deps=deps,
            publisher=deps.publisher,
        )
        work = [deps.topology.transcode_queue(q).name for q in settings.transcoder_qualities]

        async def pause() -> None:
            for name in work:
                await consumers.pause(name)

        async def resume() -> None:
            # at once: a queue whose channel is slow to come back must not hold up the others
            await asyncio.gather(*(consumers.resume(name) for name in work))

        async def before_stop() -> None:
            await deps.runner.drain(settings.shutdown_grace_s, partial(hand_back, deps=deps))

        deps.runner.pause, deps.runner.resume = pause, resume
        log.info("transcoder serving %s", ", ".join(q.value for q in settings.transcoder_qualities))
        await run_until_stopped(
            consumers,
            grace=settings.shutdown_grace_s,
            background=[deps.runner.heartbeat, partial(reap_forever, deps)],
            before_stop=before_stop,
        )
