"""Dead-letter queues for ``vidq dlq``, through :mod:`shared.ops` (the broker, not the API).

Ops work on the broker directly, with the services' settings (``VIDQ_AMQP_URL`` from the
environment or ``.env``). This module is imported only by the ``dlq`` commands, so the other
commands never pay for aio-pika. Results are plain JSON-ready dicts; failures are
:mod:`vidq.errors` (no broker → exit 5, no such queue or message → exit 3).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import aiormq
import pydantic
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import AMQPConnectionError, ChannelNotFoundEntity

from shared import ops
from shared.messaging.prepare import BrokerRefused, VhostClosed
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import build
from shared.settings import ServiceSettings
from vidq.errors import ExitCode, Unreachable, UsageProblem, VidqError

Json = dict[str, Any]


def _settings() -> ServiceSettings:
    try:
        return ServiceSettings()
    except pydantic.ValidationError as exc:
        raise UsageProblem(f"invalid VIDQ_* settings: {exc.errors()[0]['msg']}") from exc


@asynccontextmanager
async def _broker(settings: ServiceSettings) -> AsyncIterator[tuple[AbstractConnection, AbstractChannel]]:
    for name in ("aio_pika", "aiormq"):
        # The CLI reports a failure itself, in one line; aio-pika's own log would be a second.
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.handlers[:] = [logging.NullHandler()]
    try:
        connection = await aio_pika.connect(str(settings.amqp_url))
    except (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.AuthenticationError) as exc:
        raise VidqError(f"refused: {BrokerRefused(str(settings.amqp_url))}", ExitCode.AUTH) from exc
    except aiormq.exceptions.InvalidFrameError as exc:  # closed as it opened: the vhost refused
        raise VidqError(f"refused: {VhostClosed(str(settings.amqp_url))}", ExitCode.AUTH) from exc
    except (OSError, AMQPConnectionError) as exc:
        host = settings.amqp_url.host
        raise Unreachable(f"unavailable: cannot connect to the broker at {host} ({exc})") from exc
    async with connection:
        try:
            yield connection, await connection.channel()
        except ChannelNotFoundEntity as exc:
            reason = str(exc.args[-1] if exc.args else exc).removeprefix("NOT_FOUND - ")
            raise VidqError(f"not found: {reason}", ExitCode.NOT_FOUND) from exc


async def depths() -> list[Json]:
    """Every dead-letter queue with its depth."""
    settings = _settings()
    async with _broker(settings) as (_, channel):
        return [
            {"queue": work.dlq, "work_queue": work.name, "messages": await ops.depth(channel, work.name)}
            for work in build(settings).work_queues
        ]


async def letters(queue: str) -> list[Json]:
    """The dead letters of one queue, oldest first, left in place."""
    async with _broker(_settings()) as (_, channel):
        return [dataclasses.asdict(d) for d in await ops.list_dead_letters(channel, queue)]


async def replay(queue: str, message_id: str | None) -> int:
    """Send dead letters (one by id, or all) back to their work queue; how many went."""
    async with _broker(_settings()) as (connection, channel):
        publisher = await AmqpPublisher.open(connection)
        return await ops.replay(channel, publisher, queue, message_id)


async def purge(queue: str) -> int:
    """Drop every dead letter of a queue; how many there were."""
    async with _broker(_settings()) as (_, channel):
        declared = await channel.declare_queue(f"{ops.work_queue(queue)}.dlq", passive=True)
        purged = await declared.purge()
        return int(purged.message_count or 0)
