"""The gateway's periodic jobs on real PostgreSQL: exactly once across replicas, and each job's effect."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from gateway.auth import create_client_with_key
from gateway.deps import GatewayDeps
from gateway.scheduler import (
    JOBS,
    Periodic,
    expire_idempotency_keys,
    outbox_alarm,
    prune,
    redispatch_stuck,
    run_if_due,
    sweep_deleted_videos,
    sweep_temporary_files,
)
from gateway.settings import GatewaySettings
from shared.ids import new_id
from shared.messaging.memory import InMemoryPublisher
from shared.storage import LocalStorage, source_key
from tests.settings import make


@pytest.fixture
def deps(db: asyncpg.Pool, tmp_path: Path) -> GatewayDeps:
    settings = make(GatewaySettings, storage_dir=tmp_path, stuck_after_s=60, abandoned_file_after_s=3600)
    return GatewayDeps(settings, db, InMemoryPublisher(), LocalStorage(tmp_path))


async def _video(db: asyncpg.Pool, *, deleted: bool = False) -> str:
    async with db.acquire() as conn:
        client, _ = await create_client_with_key(conn, "sched")
    video_id = new_id("vid")
    source = {
        "filename": "a.mp4",
        "size_bytes": 1,
        "width": 640,
        "height": 360,
        "duration_s": 2.0,
        "video_codec": "h264",
        "audio_codec": "aac",
    }
    await db.execute(
        """INSERT INTO videos (id, client_id, status, source, deleted_at)
           VALUES ($1, $2, 'processing', $3, $4)""",
        video_id,
        client.id,
        source,
        None if not deleted else time_now(),
    )
    await db.execute(
        """INSERT INTO renditions (video_id, quality, position, width, height, job_id, status, updated_at)
           VALUES ($1, '360p', 0, 640, 360, 'job_0000000000001234', 'processing',
                   now() - interval '2 hours')""",
        video_id,
    )
    return video_id


def time_now() -> datetime:
    return datetime.now(UTC)


async def test_a_job_runs_once_however_many_gateways_try_at_the_same_time(deps: GatewayDeps) -> None:
    runs = 0

    async def count(conn: object, _: GatewayDeps) -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.2)  # long enough for the other replicas to collide with it
        return 1

    job = Periodic("test-once", lambda _: 3600.0, count)
    results = await asyncio.gather(*(run_if_due(job, deps) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert runs == 1
    assert await run_if_due(job, deps) is False  # not due again for an hour
    assert await deps.pool.fetchval("SELECT last_result FROM scheduled_runs WHERE name = 'test-once'") == 1


async def test_every_job_is_named_and_runs_on_an_empty_database(deps: GatewayDeps) -> None:
    assert len({job.name for job in JOBS}) == len(JOBS)
    for job in JOBS:
        assert await run_if_due(job, deps) is True


async def test_a_stuck_rendition_is_dispatched_again_under_the_same_job(
    db: asyncpg.Pool, deps: GatewayDeps
) -> None:
    video_id = await _video(db)
    async with db.acquire() as conn, conn.transaction():
        assert await redispatch_stuck(conn, deps) == 1
    row = await db.fetchrow("SELECT exchange, routing_key, message_id, body FROM outbox")
    assert row is not None
    assert (row["exchange"], row["routing_key"], row["message_id"]) == (
        "vidq.transcode",
        "360p",
        "job_0000000000001234",
    )
    assert json.loads(bytes(row["body"]))["video_id"] == video_id
    async with db.acquire() as conn, conn.transaction():
        assert await redispatch_stuck(conn, deps) == 0  # touched: not again right away


async def test_old_temporary_files_are_swept_and_fresh_ones_kept(db: asyncpg.Pool, deps: GatewayDeps) -> None:
    old = deps.storage.temp_path(".mp4")
    fresh = deps.storage.temp_path()
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    async with db.acquire() as conn:
        assert await sweep_temporary_files(conn, deps) == 1
    assert not old.exists()
    assert fresh.exists()


async def test_files_left_behind_by_a_deleted_video_are_removed(db: asyncpg.Pool, deps: GatewayDeps) -> None:
    deleted = await _video(db, deleted=True)
    alive = await _video(db)
    for video_id in (deleted, alive):
        path = deps.storage.local_path(source_key(video_id))
        path.parent.mkdir(parents=True)
        path.write_bytes(b"video")
    async with db.acquire() as conn:
        assert await sweep_deleted_videos(conn, deps) == 1
    assert not deps.storage.local_path(source_key(deleted)).exists()
    assert deps.storage.local_path(source_key(alive)).exists()


async def test_expired_keys_and_old_rows_are_pruned(db: asyncpg.Pool, deps: GatewayDeps) -> None:
    video_id = await _video(db)
    client_id = await db.fetchval("SELECT client_id FROM videos WHERE id = $1", video_id)
    await db.execute(
        """INSERT INTO idempotency_keys (client_id, key, status_code, response, created_at)
           VALUES ($1, 'old', 202, '{}', now() - interval '2 days'), ($1, 'new', 202, '{}', now())""",
        client_id,
    )
    await db.execute(
        """INSERT INTO outbox (exchange, routing_key, message_id, type, body, published_at)
           VALUES ('vidq.events', 'x', 'old', 't', '', now() - interval '30 days'),
                  ('vidq.events', 'x', 'new', 't', '', now()),
                  ('vidq.events', 'x', 'unsent', 't', '', NULL)"""
    )
    await db.execute(
        """INSERT INTO processed_reports (id, processed_at)
           VALUES ('evt_old', now() - interval '30 days'), ('evt_new', now())"""
    )
    await db.execute(
        """INSERT INTO direct_uploads (id, client_id, fields, expires_at)
           VALUES ('upl_old', $1, '{}', now() - interval '30 days'), ('upl_new', $1, '{}', now())""",
        client_id,
    )
    async with db.acquire() as conn:
        assert await expire_idempotency_keys(conn, deps) == 1
        assert await prune(conn, deps) == 3
    assert [r["id"] for r in await db.fetch("SELECT id FROM direct_uploads")] == ["upl_new"]
    assert [r["key"] for r in await db.fetch("SELECT key FROM idempotency_keys")] == ["new"]
    assert sorted(r["message_id"] for r in await db.fetch("SELECT message_id FROM outbox")) == [
        "new",
        "unsent",
    ]
    assert [r["id"] for r in await db.fetch("SELECT id FROM processed_reports")] == ["evt_new"]


async def test_an_old_unpublished_outbox_row_raises_the_alarm(
    db: asyncpg.Pool, deps: GatewayDeps, caplog: pytest.LogCaptureFixture
) -> None:
    await db.execute(
        """INSERT INTO outbox (exchange, routing_key, message_id, type, body, created_at)
           VALUES ('vidq.events', 'x', 'stale', 't', '', now() - interval '5 minutes')"""
    )
    async with db.acquire() as conn:
        age = await outbox_alarm(conn, deps)
    assert age >= 300
    assert "1 rows unpublished, the oldest for 300 s" in caplog.text
