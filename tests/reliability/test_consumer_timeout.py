"""A transcode longer than RabbitMQ's consumer_timeout completes exactly once.

The broker here is a private node with ``consumer_timeout = 60000`` (one minute, the smallest
the broker supports; it checks once a minute). The encode is slowed to real time (``-re``) on a
140 s clip, so it runs past the point where the broker closes any channel holding an unacked
message. A control consumer that holds its message proves the timeout fires; the transcoder,
which acknowledges once its PostgreSQL claim is committed, is not affected: one ffmpeg run, one
``rendition.completed``, one ``video.ready``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest
import pytest_asyncio

from shared.devstack.stack import Stack
from shared.messaging.topology import build, declare
from shared.settings import ServiceSettings
from tests.brokernode import BrokerNode, available
from tests.e2e.harness import read_sse
from tests.media import make_clip
from tests.realdeps import create_database, drop_database, free_port, unique
from tests.settings import make

TIMEOUT_MS = 60_000
CLIP_S = 140
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(CLIP_S + 240),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(available() is not None, reason=str(available())),
]


@pytest.fixture(scope="module")
def node() -> Iterator[BrokerNode]:
    broker = BrokerNode.in_temp_dir(
        free_port(), f"vidq-timeout-{unique('')}@localhost", config=f"consumer_timeout = {TIMEOUT_MS}"
    )
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        broker.remove()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def database() -> AsyncIterator[str]:
    name = unique("vidq_timeout_")
    yield await create_database(name)
    await drop_database(name)


async def _control_consumer(url: str, closed: asyncio.Future[str]) -> aio_pika.abc.AbstractConnection:
    """A plain consumer that never acks: the broker must close its channel."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel()

    def on_close(_channel: object, exc: BaseException | None) -> None:
        if not closed.done():
            closed.set_result(repr(exc))

    channel.close_callbacks.add(on_close)
    queue = await channel.declare_queue("control.held", durable=False, auto_delete=False)
    await channel.default_exchange.publish(aio_pika.Message(b"hold me"), "control.held")
    held: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        held.append(message)  # never acked

    await queue.consume(hold)
    return connection


async def test_an_encode_longer_than_the_consumer_timeout_completes_once(
    node: BrokerNode, database: str, tmp_path: Path, figures: list[str]
) -> None:
    settings = make(ServiceSettings, amqp_url=node.url, database_url=database)
    connection = await aio_pika.connect(node.url)
    async with connection, connection.channel() as channel:
        await declare(channel, build(settings))
    port = free_port()
    env = {
        "VIDQ_AMQP_URL": node.url,
        "VIDQ_DATABASE_URL": database,
        "VIDQ_STORAGE_DIR": str(tmp_path / "storage"),
        "VIDQ_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "VIDQ_GATEWAY_PORT": str(port),
        "VIDQ_TRANSCODER_REALTIME": "true",
        "VIDQ_TRANSCODER_PRESET": "ultrafast",
        "VIDQ_SMTP_URL": f"smtp://127.0.0.1:{free_port()}",
    }
    stack = Stack(env=env, cwd=tmp_path, log_dir=tmp_path / "logs")  # not the checkout (.env)
    closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    control = await _control_consumer(node.url, closed)
    try:
        for service in ("gateway", "transcoder", "thumbnailer"):
            await stack.start_service(service)
        await stack.wait_ready(env["VIDQ_PUBLIC_URL"])
        key = await stack.create_key("timeout")
        clip = make_clip(tmp_path / "long.mp4", width=160, height=90, duration=CLIP_S, fps=5, audio=False)
        async with httpx.AsyncClient(
            base_url=env["VIDQ_PUBLIC_URL"], headers={"authorization": f"Bearer {key}"}
        ) as api:
            with clip.open("rb") as f:
                video = (
                    await api.post("/v1/videos", files={"file": ("long.mp4", f)}, data={"qualities": "144p"})
                ).json()
            started = time.monotonic()
            events = await read_sse(api, f"/v1/videos/{video['id']}/events", timeout=CLIP_S + 120)
            elapsed = time.monotonic() - started
        reason = await asyncio.wait_for(closed, 10)
    finally:
        await control.close()
        await stack.stop_all(grace=10)
    types = [e.event for e in events]
    assert "timed out" in reason  # the broker did enforce its timeout meanwhile
    assert elapsed > TIMEOUT_MS / 1000 * 2  # the encode outlived the point where it fires
    assert types[-1] == "video.ready"
    assert types.count("rendition.completed") == 1
    assert types.count("video.ready") == 1
    conn = await asyncpg.connect(database)
    try:
        jobs = await conn.fetch("SELECT state, attempt FROM transcode_jobs")
    finally:
        await conn.close()
    assert [(j["state"], j["attempt"]) for j in jobs] == [("done", 1)]  # claimed once, run once
    figures.append(
        f"encode of {elapsed:.0f} s on a broker with consumer_timeout = {TIMEOUT_MS // 1000} s: 1 video, "
        f"1 claim, 1 ffmpeg run, {types.count('rendition.completed')} rendition.completed, "
        f"{types.count('video.ready')} video.ready; a control consumer holding its message was cut off"
    )
