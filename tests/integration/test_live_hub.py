"""The gateway's live feed on a real broker: bound only while streams watch, events to their video."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from urllib.parse import quote, unquote, urlparse

import pytest
from aio_pika.abc import AbstractRobustConnection

from gateway.streams import LiveHub
from shared.errors import TransientError
from shared.messaging.codec import OutgoingMessage
from shared.messaging.management import Management
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import EVENTS, declare_exchanges
from shared.runtime import connect
from tests.realdeps import ADMIN_URL

GRACE_S = 0.3


@pytest.fixture
async def connection(vhost: str) -> AsyncIterator[AbstractRobustConnection]:
    """A connection to an empty vhost holding only vidq's exchanges: no queue but the hub's."""
    conn = await connect(vhost, "test")
    async with conn.channel() as channel:
        await declare_exchanges(channel)
    yield conn
    await conn.close()


def event(video_id: str, sequence: int) -> OutgoingMessage:
    event_id = f"evt_{video_id}_{sequence}"
    body = {"id": event_id, "type": "rendition.progress", "sequence": sequence, "data": {}}
    return OutgoingMessage(json.dumps(body).encode(), event_id, "rendition.progress", video_id, "gateway")


def bound(hub: LiveHub) -> bool:
    return hub.bound


async def reaches_a_queue(publisher: AmqpPublisher, message: OutgoingMessage) -> bool:
    """Publish with ``mandatory``: whether any queue is bound to take it."""
    try:
        await publisher.publish(EVENTS, message.type, message)
    except TransientError as exc:
        if "unroutable" not in str(exc):
            raise
        return False
    return True


async def test_the_live_queue_is_bound_only_while_a_stream_watches(
    connection: AbstractRobustConnection,
) -> None:
    hub = LiveHub(unbind_after_s=GRACE_S)
    await hub.start(connection)
    publisher = await AmqpPublisher.open(connection)

    assert not bound(hub)
    assert not await reaches_a_queue(publisher, event("vid_a", 1))

    async with hub.watch("vid_a") as inbox:
        assert bound(hub)
        assert await reaches_a_queue(publisher, event("vid_b", 1))  # another video's: not ours
        assert await reaches_a_queue(publisher, event("vid_a", 2))
        received = await asyncio.wait_for(inbox.get(), 5)
        assert (received.sequence, received.type) == (2, "rendition.progress")
        assert inbox.empty()

    # A stream that comes back within the grace period finds the binding still there.
    assert bound(hub)
    async with hub.watch("vid_a"):
        await asyncio.sleep(GRACE_S * 2)
        assert bound(hub)

    await asyncio.sleep(GRACE_S * 3)
    assert not bound(hub)
    assert not await reaches_a_queue(publisher, event("vid_a", 3))

    # And binds again for the next stream.
    async with hub.watch("vid_c") as inbox:
        assert await reaches_a_queue(publisher, event("vid_c", 1))
        assert (await asyncio.wait_for(inbox.get(), 5)).sequence == 1


async def test_the_live_consumer_is_named_like_every_consumer(
    connection: AbstractRobustConnection, vhost: str
) -> None:
    # ops find who consumes what in the management UI: <service>@<host>-<pid>/<queue>/<n>
    hub = LiveHub(unbind_after_s=GRACE_S)
    await hub.start(connection)
    name = unquote(urlparse(vhost).path[1:])
    tags: list[str] = []
    async with Management(ADMIN_URL) as api:
        for _ in range(50):
            response = await api.client.get(f"/api/consumers/{quote(name, safe='')}")
            tags = [c["consumer_tag"] for c in response.json()]
            if tags:
                break
            await asyncio.sleep(0.2)
    [tag] = tags
    assert re.fullmatch(rf"gateway@.+-{os.getpid()}/vidq\.gateway\.live\..+/1", tag), tag
