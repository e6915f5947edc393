"""Consumers come back after a broker restart, including one resumed while the broker was away."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aio_pika
import pytest
from pydantic import BaseModel

from shared.messaging.codec import outgoing
from shared.messaging.consumer import Route
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import (
    GATEWAY_PROJECTION,
    RESULTS,
    THUMBNAILER_UPLOADS,
    UPLOADS,
    build,
    declare,
)
from shared.runtime import Consumers, connect
from shared.settings import ServiceSettings
from tests.brokernode import BrokerNode, available
from tests.realdeps import free_port, unique
from tests.settings import make

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(available() is not None, reason=str(available())),
]


class Ping(BaseModel):
    n: int


@pytest.fixture
def node() -> Iterator[BrokerNode]:
    broker = BrokerNode.in_temp_dir(free_port(), f"vidq-recovery-{unique('')}@localhost")
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        broker.remove()


async def _until(predicate: object, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_a_consumer_resumed_during_an_outage_consumes_again_once_the_broker_is_back(
    node: BrokerNode,
) -> None:
    settings = make(ServiceSettings, amqp_url=node.url)
    topology = build(settings)
    admin = await aio_pika.connect(node.url)
    async with admin, admin.channel() as channel:
        await declare(channel, topology)
    seen: dict[str, list[int]] = {THUMBNAILER_UPLOADS: [], GATEWAY_PROJECTION: []}

    def recorder(queue: str) -> object:
        async def handle(ping: Ping, _: object) -> None:
            seen[queue].append(ping.n)

        return handle

    connection = await connect(node.url, "recovery-test")
    publisher = await AmqpPublisher.open(connection)
    consumers = Consumers(
        service="recovery-test",
        connection=connection,
        topology=topology,
        routes=[
            Route(topology.queue(THUMBNAILER_UPLOADS), Ping, recorder(THUMBNAILER_UPLOADS)),  # type: ignore[arg-type]
            Route(topology.queue(GATEWAY_PROJECTION), Ping, recorder(GATEWAY_PROJECTION)),  # type: ignore[arg-type]
        ],
        deps=None,
        publisher=publisher,
    )
    try:
        await consumers.start()
        await consumers.pause(THUMBNAILER_UPLOADS)  # as a busy transcoder pauses its intake
        node.stop()
        await asyncio.sleep(1)
        await consumers.resume(THUMBNAILER_UPLOADS)  # a slot freed while the broker is away
        await asyncio.sleep(1)
        node.start()
        for n in range(3):
            message = outgoing(Ping(n=n), message_id=unique("m"), type="ping", correlation_id=None)
            for _ in range(60):  # the publisher's channel comes back a moment after the connection
                try:
                    await publisher.publish(UPLOADS, "", message)
                    await publisher.publish(RESULTS, "ping", message)
                    break
                except Exception:  # still reconnecting
                    await asyncio.sleep(0.5)
        await _until(lambda: sorted(seen[THUMBNAILER_UPLOADS]) == [0, 1, 2])
        await _until(
            lambda: sorted(seen[GATEWAY_PROJECTION]) == [0, 1, 2]
        )  # never paused: restored by itself
    finally:
        await consumers.stop(1)
        await connection.close()
