"""The topology on a real broker: SPEC names, policies in effect, declaring twice is a no-op."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote, unquote, urlparse

import aio_pika
import httpx

from shared.messaging.topology import EXCHANGES, build, declare
from shared.settings import AdminSettings
from tests.realdeps import ADMIN_URL


def _api() -> httpx.Client:
    admin = urlparse(ADMIN_URL)
    return httpx.Client(
        base_url=f"http://{admin.hostname}:{admin.port}",
        auth=(unquote(admin.username or ""), unquote(admin.password or "")),
    )


def _vhost(settings: AdminSettings) -> str:
    return unquote(urlparse(str(settings.amqp_url)).path[1:])


def _queues(vhost: str) -> dict[str, dict[str, object]]:
    with _api() as api:
        return {q["name"]: q for q in api.get(f"/api/queues/{quote(vhost, safe='')}").json()}


async def test_declaring_the_topology_twice_changes_nothing(broker: AdminSettings) -> None:
    before = _queues(_vhost(broker))
    connection = await aio_pika.connect(str(broker.amqp_url))
    async with connection, connection.channel() as channel:
        await declare(channel, build(broker))
    after = _queues(_vhost(broker))
    assert set(after) == set(before)
    assert len(after) == len(build(broker).all_queues())
    assert {name: q["arguments"] for name, q in after.items()} == {
        name: q["arguments"] for name, q in before.items()
    }


async def test_exchanges_and_queues_carry_the_spec_names(broker: AdminSettings) -> None:
    vhost = quote(_vhost(broker), safe="")
    with _api() as api:
        exchanges = {e["name"]: e["type"] for e in api.get(f"/api/exchanges/{vhost}").json()}
    assert exchanges["vidq.uploads"] == "fanout"
    assert exchanges["vidq.transcode"] == "direct"
    assert exchanges["vidq.events"] == "topic"
    assert {e.name for e in EXCHANGES} <= set(exchanges)
    queues = _queues(_vhost(broker))
    for rung in ("2160p", "1440p", "1080p", "720p", "480p", "360p", "240p", "144p"):
        assert queues[f"vidq.transcode.{rung}"]["durable"] is True
        assert queues[f"vidq.transcode.{rung}"]["type"] == "quorum"
        assert f"vidq.transcode.{rung}.dlq" in queues


async def test_work_queues_take_dead_lettering_and_delivery_limit_from_policies(
    broker: AdminSettings,
) -> None:
    # The management API reports a queue's policy once its statistics are collected.
    vhost = quote(_vhost(broker), safe="")
    deadline = time.monotonic() + 15
    with _api() as api:
        while True:
            queue = api.get(f"/api/queues/{vhost}/vidq.transcode.720p").json()
            if queue.get("policy") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    assert queue["policy"] == "vidq.transcode.720p"
    effective = queue["effective_policy_definition"]
    assert isinstance(effective, dict)
    assert effective["dead-letter-exchange"] == "vidq.dlx"
    assert effective["dead-letter-routing-key"] == "vidq.transcode.720p"
    assert effective["dead-letter-strategy"] == "at-least-once"
    assert effective["delivery-limit"] == broker.delivery_limit
    assert queue["arguments"] == {"x-queue-type": "quorum"}
