"""The gateway application: ``create_app(settings)`` and its lifespan.

The lifespan applies the gateway's migrations, opens the database pool and the robust broker
connection, reads the keys of signed links, and starts what runs beside the HTTP API: the
projection consumer (worker reports → state → events), the outbox relay, the live feed behind
the SSE streams, the periodic jobs (``gateway/scheduler.py``) and the keys' refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import asyncpg
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from gateway import errors
from gateway.api import callbacks
from gateway.api.router import router
from gateway.deps import GatewayDeps
from gateway.links import MEDIA_LINKS, KeyRing, accepted_keys
from gateway.outbox import OutboxRelay
from gateway.projection import handle_report
from gateway.repository import signing_keys
from gateway.resumable import TusHeaders
from gateway.scheduler import run_scheduler
from gateway.settings import GatewaySettings
from gateway.streams import LiveHub
from shared.db import TRANSIENT_DB_ERRORS, create_pool, migrate_all
from shared.messaging.consumer import Route
from shared.messaging.prepare import prepare_broker
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import GATEWAY_PROJECTION, build
from shared.reports import ANY_REPORT
from shared.runtime import Consumers, connect, supervised
from shared.storage import LocalStorage

log = logging.getLogger(__name__)

DESCRIPTION = """
Upload a video; vidq makes an MP4 ladder and thumbnails and tells you when it is done — by
signed webhook (Standard Webhooks), by email and by a live event stream. Authenticate with
`Authorization: Bearer <api key>`; a file's `signed_url` and a direct upload's `url` need no key.
Errors are `application/problem+json` (RFC 9457).
"""


async def preflight(settings: GatewaySettings) -> None:
    """What the lifespan needs, made ready before the HTTP server starts (``python -m gateway``).

    Migrations, the broker's vhost, exchanges and policies: all idempotent, so the lifespan
    doing them again costs a few round trips; a :class:`~shared.errors.StartupError` met here
    is one line and exit status 78 instead of the server's traceback of a failed lifespan.
    """
    await migrate_all(settings, ("gateway",))
    connection = await connect(str(settings.amqp_url), "gateway", management=settings.management_api())
    try:
        await prepare_broker(connection, settings, build(settings))
    finally:
        await connection.close()


#: How soon every gateway signs with a key made by ``python -m gateway links rotate``.
LINK_KEYS_REFRESH_S = 60.0
_KEY_REFRESH_ERRORS: tuple[type[Exception], ...] = (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError)


async def refresh_link_keys(pool: asyncpg.Pool, ring: KeyRing, ttl_s: int) -> None:
    """Read the keys of signed links (the first is made if none exists yet)."""
    async with pool.acquire() as conn:
        rows = await signing_keys(conn, MEDIA_LINKS)
        now = await conn.fetchval("SELECT now()")
    ring.keys = accepted_keys([(r["secret"], r["created_at"]) for r in rows], ttl_s, now)


async def keep_link_keys_fresh(pool: asyncpg.Pool, ring: KeyRing, ttl_s: int) -> None:
    """Re-read the keys every minute: a rotation reaches every gateway without a restart."""
    while True:
        await asyncio.sleep(LINK_KEYS_REFRESH_S)
        try:
            await refresh_link_keys(pool, ring, ttl_s)
        except _KEY_REFRESH_ERRORS as exc:
            log.warning("could not re-read the link keys (%r); keeping those read before", exc)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


#: No step of a gateway's stop holds it up longer than this: a stuck one is logged and left.
STOP_STEP_S = 10.0


async def _bounded(what: str, step: Callable[[], Awaitable[object]], limit_s: float = STOP_STEP_S) -> None:
    try:
        await asyncio.wait_for(step(), limit_s)
    except TimeoutError:
        log.warning("stopping: %s took over %.0f s; going on without it", what, limit_s)


async def close_pool(pool: asyncpg.Pool, limit_s: float = STOP_STEP_S) -> None:
    """Close the pool, waiting at most ``limit_s`` for connections still in use, then cut them."""
    try:
        await asyncio.wait_for(pool.close(), limit_s)
    except TimeoutError:
        log.warning("stopping: database connections still in use after %.0f s; closing them", limit_s)
        pool.terminate()


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the gateway. Settings come from ``VIDQ_*`` variables unless given."""
    settings = settings or GatewaySettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # what is opened is closed again, in reverse, also when a later step fails
        async with contextlib.AsyncExitStack() as opened:
            await migrate_all(settings, ("gateway",))
            pool = await create_pool(settings, "gateway")
            opened.push_async_callback(close_pool, pool)
            key_ring = KeyRing()
            await refresh_link_keys(pool, key_ring, settings.media_link_ttl_s)
            connection = await connect(
                str(settings.amqp_url), "gateway", management=settings.management_api()
            )
            opened.push_async_callback(_bounded, "closing the broker connection", connection.close)
            topology = build(settings)
            await prepare_broker(connection, settings, topology)
            publisher = await AmqpPublisher.open(connection)
            storage = LocalStorage(settings.storage_dir)
            await storage.mark()  # the workers tell a deleted video from storage that is not this
            deps = GatewayDeps(
                settings,
                pool,
                publisher,
                storage,
                asyncio.Semaphore(settings.gateway_probe_concurrency),
                key_ring,
            )
            consumers = Consumers(
                service="gateway",
                connection=connection,
                topology=topology,
                routes=[
                    Route(
                        topology.queue(GATEWAY_PROJECTION),
                        ANY_REPORT,
                        handle_report,
                        prefetch=settings.projection_prefetch,
                    )
                ],
                deps=deps,
                publisher=publisher,
            )
            hub = LiveHub(unbind_after_s=settings.live_unbind_after_s)
            await hub.start(connection)
            relay = OutboxRelay(pool, publisher, batch=settings.outbox_batch, poll_s=settings.outbox_poll_s)
            tasks = [
                asyncio.create_task(supervised(job, what))
                for job, what in (
                    (
                        partial(keep_link_keys_fresh, pool, key_ring, settings.media_link_ttl_s),
                        "link key refresh",
                    ),
                    (partial(run_scheduler, deps), "scheduler"),
                    (relay.run, "outbox relay"),
                )
            ]
            opened.push_async_callback(_bounded, "ending the background tasks", partial(_cancel, tasks))
            await consumers.start()
            opened.push_async_callback(
                _bounded,
                "stopping the consumers",
                partial(consumers.stop, settings.shutdown_grace_s),
                settings.shutdown_grace_s + STOP_STEP_S,
            )
            app.state.settings, app.state.deps, app.state.hub, app.state.connection = (
                settings,
                deps,
                hub,
                connection,
            )
            log.info("gateway ready on %s", settings.public_url)
            yield

    # Swagger UI and ReDoc from the gateway's own files: /docs works where the CDN is not reachable
    app = FastAPIOffline(
        title="vidq", version="1.0.0", description=DESCRIPTION, lifespan=lifespan, static_url="/docs/static"
    )
    app.state.settings = settings
    app.state.connection = None
    errors.install(app)
    app.add_middleware(TusHeaders)
    app.include_router(router)
    callbacks.install(app)
    return app
