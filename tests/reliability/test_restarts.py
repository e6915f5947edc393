"""The broker and the database restart while work is in flight; every service recovers by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.messaging.topology import (
    GATEWAY_PROJECTION,
    NOTIFIER_DELIVERIES,
    NOTIFIER_EMAIL,
    NOTIFIER_REQUESTS,
    NOTIFIER_WEBHOOKS,
    THUMBNAILER_UPLOADS,
)
from tests.reliability.conftest import World, clip, wait_and_count, webhook_ready_ids

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

STACK_ENV = {"VIDQ_TRANSCODER_REALTIME": "true", "VIDQ_TRANSCODER_CONCURRENCY": "2"}
ALWAYS_CONSUMED = (
    THUMBNAILER_UPLOADS,
    GATEWAY_PROJECTION,
    NOTIFIER_WEBHOOKS,
    NOTIFIER_DELIVERIES,
    NOTIFIER_REQUESTS,
    NOTIFIER_EMAIL,
)


async def _until_encoding(world: World, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = await asyncpg.connect(world.database.url)
        try:
            if await conn.fetchval("SELECT count(*) FROM renditions WHERE status = 'processing'"):
                return
        finally:
            await conn.close()
        await asyncio.sleep(0.1)
    raise AssertionError("no encode started")


async def _consumers(world: World) -> dict[str, int]:
    async with httpx.AsyncClient(
        base_url=world.broker.admin_url.replace("guest:guest@", ""), auth=("guest", "guest")
    ) as api:
        queues = (await api.get("/api/queues/vidq")).json()
    return {q["name"]: q.get("consumers", 0) for q in queues}


async def test_a_broker_restart_mid_flight_loses_nothing(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    source = clip(world, tmp_path, seconds=3)
    async with world.client() as api:
        await api.post(
            "/v1/webhooks", json={"url": f"{world.receiver_url}/restart", "events": ["video.ready"]}
        )
        video_ids = [await world.upload(api, source, qualities="240p,144p") for _ in range(4)]
    await _until_encoding(world)
    started = time.monotonic()
    world.broker.stop()  # a normal restart (SIGTERM) while encodes, reports and deliveries are in flight
    async with world.client() as api:
        # The gateway still takes uploads: they wait in its outbox until the broker is back.
        video_ids.append(await world.upload(api, source, qualities="144p"))
    await asyncio.sleep(2)
    world.broker.start()
    tally = await wait_and_count(world, video_ids, since=started)
    figures.append(tally.line("RabbitMQ restarted mid-flight"))
    assert tally.perfect, tally
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(webhook_ready_ids(world, "/restart")) != set(video_ids):
        await asyncio.sleep(0.2)
    assert set(webhook_ready_ids(world, "/restart")) == set(video_ids)
    assert all(len(ids) == 1 for ids in webhook_ready_ids(world, "/restart").values())
    # Every service consumes again (the management API refreshes its statistics every few seconds).
    deadline = time.monotonic() + 30
    consumers = await _consumers(world)
    while time.monotonic() < deadline and not all(consumers.get(q, 0) >= 1 for q in ALWAYS_CONSUMED):
        await asyncio.sleep(1)
        consumers = await _consumers(world)
    assert all(consumers.get(q, 0) >= 1 for q in ALWAYS_CONSUMED), {
        q: consumers.get(q) for q in ALWAYS_CONSUMED
    }
    conn = await asyncpg.connect(world.database.url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    finally:
        await conn.close()


async def test_a_database_restart_mid_flight_loses_nothing(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    source = clip(world, tmp_path, seconds=3)
    async with world.client() as api:
        video_ids = [await world.upload(api, source, qualities="240p,144p") for _ in range(3)]
    await _until_encoding(world)
    started = time.monotonic()
    before = {p.name for p in (world.storage / "videos").iterdir()}
    world.database.stop()
    async with world.client() as api:
        with source.open("rb") as f:
            refused = await api.post("/v1/videos", files={"file": ("during.mp4", f)})
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert "retry" in refused.json()["detail"]
    assert {p.name for p in (world.storage / "videos").iterdir()} == before  # no orphan file
    # Encodes in flight keep their .mp4 temp files there; a refused upload leaves none of its own.
    assert not [p for p in (world.storage / "tmp").glob("*") if not p.suffix]
    await asyncio.sleep(2)
    world.database.start()
    tally = await wait_and_count(world, video_ids, since=started)
    figures.append(tally.line("PostgreSQL restarted mid-flight"))
    assert tally.perfect, tally
