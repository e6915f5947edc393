"""Gateway state on real PostgreSQL: upload recording, the projection barrier, the outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest
from prometheus_client import REGISTRY

from gateway.auth import create_client_with_key
from gateway.deps import GatewayDeps
from gateway.errors import Conflict, NotFound
from gateway.links import Links
from gateway.outbox import OutboxRelay
from gateway.projection import handle_report
from gateway.repository import Client, Conn, claim_idempotency_key, release_idempotency_key
from gateway.settings import GatewaySettings
from gateway.videos import (
    AcceptedUpload,
    delete_video,
    get_video,
    record_upload,
    retry_rendition,
    retry_thumbnail,
)
from shared.db import _init_connection
from shared.events import VideoUploaded
from shared.ffmpeg import ProbeResult
from shared.ids import event_id, new_id
from shared.ladder import plan
from shared.messaging.memory import InMemoryPublisher
from shared.messaging.publisher import AmqpPublisher
from shared.reports import (
    RenditionCompletedReport,
    RenditionFailedReport,
    RenditionProgressReport,
    ThumbnailCompletedReport,
    ThumbnailFailedReport,
    ThumbnailStartedReport,
)
from shared.resources import Rendition, Video
from shared.settings import AdminSettings
from shared.storage import LocalStorage
from tests.realdeps import BASE_DB_URL
from tests.settings import make

PROBE = ProbeResult("mov,mp4", 2.0, 640, 360, 0, "h264", "yuv420p", 25.0, "aac")


@pytest.fixture
async def client(db: asyncpg.Pool) -> Client:
    async with db.acquire() as conn:
        made, _ = await create_client_with_key(conn, "test")
    return made


@pytest.fixture
def deps(db: asyncpg.Pool, tmp_path: Path) -> GatewayDeps:
    settings = make(GatewaySettings, storage_dir=tmp_path)
    return GatewayDeps(settings, db, InMemoryPublisher(), LocalStorage(tmp_path))


async def _upload(db: asyncpg.Pool, client: Client, **probe: Any) -> str:
    return (await _recorded(db, client, **probe)).id


async def _recorded(db: asyncpg.Pool, client: Client, **probe: Any) -> Video:
    """An upload recorded as the API records one; the video its answer carries."""
    source = dataclasses.replace(PROBE, **probe)
    accepted = AcceptedUpload(
        video_id=new_id("vid"),
        filename="clip.mp4",
        size_bytes=1234,
        probe=source,
        plan=plan(source.width, source.height, source.rotation),
        metadata={"k": "v"},
        callback_url=None,
        notify_email=None,
    )
    async with db.acquire() as conn:
        return await record_upload(conn, client, accepted, links=Links("http://vidq.test"))


async def _jobs(db: asyncpg.Pool, video_id: str) -> dict[str, str]:
    rows = await db.fetch("SELECT quality, job_id FROM renditions WHERE video_id = $1", video_id)
    return {r["quality"]: r["job_id"] for r in rows}


async def _events(db: asyncpg.Pool, video_id: str) -> list[tuple[int, str]]:
    rows = await db.fetch(
        "SELECT sequence, type FROM video_events WHERE video_id = $1 ORDER BY sequence", video_id
    )
    return [(r["sequence"], r["type"]) for r in rows]


def _completed(video_id: str, quality: str, job_id: str) -> RenditionCompletedReport:
    return RenditionCompletedReport(
        id=event_id(job_id, "rendition.completed"),
        timestamp=datetime.now(UTC),
        video_id=video_id,
        job_id=job_id,
        quality=quality,
        width=2,
        height=2,
        size_bytes=10,
        duration_s=2.0,
        encode_seconds=1.0,
    )


def _failed(video_id: str, quality: str, job_id: str, error: str) -> RenditionFailedReport:
    return RenditionFailedReport(
        id=event_id(job_id, "rendition.failed"),
        timestamp=datetime.now(UTC),
        video_id=video_id,
        job_id=job_id,
        quality=quality,
        error=error,
        attempts=3,
    )


def _thumbnail(video_id: str) -> ThumbnailCompletedReport:
    return ThumbnailCompletedReport(
        id=event_id(video_id, "thumbnail.completed"),
        timestamp=datetime.now(UTC),
        video_id=video_id,
        widths=[640, 320],
    )


def _thumbnail_failed(video_id: str) -> ThumbnailFailedReport:
    return ThumbnailFailedReport(
        id=event_id(video_id, "thumbnail.failed"),
        timestamp=datetime.now(UTC),
        video_id=video_id,
        error="no frame",
    )


async def test_an_upload_writes_the_video_its_event_and_its_commands_in_one_go(
    db: asyncpg.Pool, client: Client
) -> None:
    video_id = await _upload(db, client)
    rows = await db.fetch("SELECT exchange, routing_key, type, correlation_id FROM outbox ORDER BY id")
    assert [(r["exchange"], r["routing_key"]) for r in rows] == [
        ("vidq.events", "video.uploaded"),
        ("vidq.uploads", "video.uploaded"),
        ("vidq.transcode", "144p"),  # lowest rung first: playable soonest
        ("vidq.transcode", "240p"),
        ("vidq.transcode", "360p"),
    ]
    assert {r["correlation_id"] for r in rows} == {video_id}
    assert await _events(db, video_id) == [(1, "video.uploaded")]


async def test_video_ready_is_published_once_when_the_last_part_is_ready(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)
    jobs = await _jobs(db, video_id)
    progress = RenditionProgressReport(
        id=new_id("evt"),
        timestamp=datetime.now(UTC),
        video_id=video_id,
        job_id=jobs["360p"],
        quality="360p",
        progress=50.0,
    )
    await handle_report(progress, deps)
    for quality, job in jobs.items():
        await handle_report(_completed(video_id, quality, job), deps)
        await handle_report(_completed(video_id, quality, job), deps)  # a redelivery
    assert "video.ready" not in [t for _, t in await _events(db, video_id)]
    await handle_report(_thumbnail(video_id), deps)
    await handle_report(_thumbnail(video_id), deps)
    events = await _events(db, video_id)
    assert [t for _, t in events].count("video.ready") == 1
    assert [s for s, _ in events] == list(range(1, len(events) + 1))  # +1 each, no gaps
    assert events[-1][1] == "video.ready"
    status = await db.fetchval("SELECT status FROM videos WHERE id = $1", video_id)
    assert status == "ready"


async def test_progress_only_moves_forward_even_when_a_job_starts_over(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)
    job = (await _jobs(db, video_id))["360p"]

    def report(percent: float) -> RenditionProgressReport:
        return RenditionProgressReport(
            id=new_id("evt"),
            timestamp=datetime.now(UTC),
            video_id=video_id,
            job_id=job,
            quality="360p",
            progress=percent,
        )

    # the first report (even at 0 %) starts the rendition; a worker that took the job over
    # reports from 0 % again, and a late report arrives after a newer one
    for percent in (0.0, 40.0, 60.0, 5.0, 60.0, 35.0, 75.0):
        await handle_report(report(percent), deps)

    events = await db.fetch(
        "SELECT body FROM video_events WHERE video_id = $1 AND type = 'rendition.progress' ORDER BY sequence",
        video_id,
    )
    assert [e["body"]["data"]["progress"] for e in events] == [0.0, 40.0, 60.0, 75.0]
    progress = await db.fetchval(
        "SELECT progress FROM renditions WHERE video_id = $1 AND quality = '360p'", video_id
    )
    assert progress == 75.0


async def test_a_failed_rendition_fails_the_video_once_naming_it(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)
    jobs = await _jobs(db, video_id)
    failed = _failed(video_id, "240p", jobs["240p"], "ffmpeg exited with status 1: boom")
    await handle_report(failed, deps)
    await handle_report(failed, deps)
    await handle_report(_completed(video_id, "360p", jobs["360p"]), deps)
    types = [t for _, t in await _events(db, video_id)]
    assert types == ["video.uploaded", "rendition.failed", "video.failed", "rendition.completed"]
    row = await db.fetchrow("SELECT status, error FROM videos WHERE id = $1", video_id)
    assert row is not None
    assert row["status"] == "failed"
    assert "240p" in row["error"]
    assert "boom" in row["error"]


async def test_a_failed_job_run_again_from_its_dead_letter_makes_the_video_ready(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)
    jobs = await _jobs(db, video_id)
    for quality, job in jobs.items():
        if quality != "240p":
            await handle_report(_completed(video_id, quality, job), deps)
    await handle_report(_thumbnail(video_id), deps)
    failed = _failed(video_id, "240p", jobs["240p"], "gave up after 3 attempts: ffmpeg ran past its limit")
    await handle_report(failed, deps)
    # an operator replays the job's dead letter: the same job runs again and completes
    await handle_report(_completed(video_id, "240p", jobs["240p"]), deps)
    types = [t for _, t in await _events(db, video_id)]
    assert types[-4:] == ["rendition.failed", "video.failed", "rendition.completed", "video.ready"]
    row = await db.fetchrow("SELECT status, error FROM videos WHERE id = $1", video_id)
    assert row is not None
    assert (row["status"], row["error"]) == ("ready", None)


async def test_a_report_of_an_older_job_is_ignored(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)
    await handle_report(_completed(video_id, "360p", "job_0000000000000000000000000000"), deps)
    assert await _events(db, video_id) == [(1, "video.uploaded")]


async def test_the_thumbnail_goes_through_processing_and_takes_the_video_with_it(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)

    def started() -> ThumbnailStartedReport:
        return ThumbnailStartedReport(
            id=event_id(video_id, "thumbnail.started"), timestamp=datetime.now(UTC), video_id=video_id
        )

    await handle_report(started(), deps)
    row = await db.fetchrow("SELECT status, thumbnail_status FROM videos WHERE id = $1", video_id)
    assert row is not None
    assert (row["status"], row["thumbnail_status"]) == ("processing", "processing")
    assert await _events(db, video_id) == [(1, "video.uploaded")]  # a status, not an event

    await handle_report(_thumbnail(video_id), deps)
    assert (await db.fetchval("SELECT thumbnail_status FROM videos WHERE id = $1", video_id)) == "ready"


async def test_a_thumbnail_done_before_any_rendition_starts_shows_the_video_processing(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)
    await handle_report(_thumbnail(video_id), deps)  # its start report not (yet) applied
    late = ThumbnailStartedReport(id=new_id("evt"), timestamp=datetime.now(UTC), video_id=video_id)
    await handle_report(late, deps)
    body = await db.fetchval(
        "SELECT body FROM video_events WHERE video_id = $1 AND type = 'thumbnail.completed'", video_id
    )
    assert (body["data"]["status"], body["data"]["thumbnail"]["status"]) == ("processing", "ready")
    row = await db.fetchrow("SELECT status, thumbnail_status FROM videos WHERE id = $1", video_id)
    assert row is not None
    assert (row["status"], row["thumbnail_status"]) == ("processing", "ready")


async def test_a_thumbnail_that_fails_first_shows_the_video_at_work_then_failed(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)
    await handle_report(_thumbnail_failed(video_id), deps)
    bodies = await db.fetch("SELECT body FROM video_events WHERE video_id = $1 ORDER BY sequence", video_id)
    assert [(b["body"]["type"], b["body"]["data"]["status"]) for b in bodies] == [
        ("video.uploaded", "queued"),
        ("thumbnail.failed", "processing"),
        ("video.failed", "failed"),
    ]


async def test_a_failed_thumbnail_runs_again_and_its_run_alone_decides(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)
    for quality, job_id in (await _jobs(db, video_id)).items():
        await handle_report(_completed(video_id, quality, job_id), deps)
    await handle_report(_thumbnail_failed(video_id), deps)
    assert await db.fetchval("SELECT status FROM videos WHERE id = $1", video_id) == "failed"
    await db.execute("DELETE FROM outbox")

    async with db.acquire() as conn:
        video = await retry_thumbnail(conn, client, video_id, links=Links("http://vidq.test"))
        with pytest.raises(Conflict, match="the thumbnail is queued"):
            await retry_thumbnail(conn, client, video_id, links=Links("http://vidq.test"))

    assert (video.status, video.thumbnail.status, video.error, video.thumbnail.error) == (
        "processing",
        "queued",
        None,
        None,
    )
    # to the thumbnailer's queue alone (not the uploads fanout: the upload happened once)
    row = await db.fetchrow("SELECT exchange, routing_key, message_id, type, headers, body FROM outbox")
    assert row is not None
    run = row["headers"]["vidq-thumbnail-run"]
    assert (row["exchange"], row["routing_key"], row["message_id"], row["type"]) == (
        "vidq.requeue",
        "vidq.thumbnailer.uploads",
        run,
        "video.uploaded",
    )
    assert VideoUploaded.model_validate_json(bytes(row["body"])).data.id == video_id

    # the earlier run's reports, late (a dead letter replayed, say), change nothing
    await handle_report(_thumbnail(video_id), deps)
    assert await db.fetchval("SELECT thumbnail_status FROM videos WHERE id = $1", video_id) == "queued"

    def report(kind: type[ThumbnailStartedReport | ThumbnailCompletedReport], **fields: Any) -> Any:
        return kind(
            id=event_id(video_id, kind.model_fields["type"].default, run),
            timestamp=datetime.now(UTC),
            video_id=video_id,
            run=run,
            **fields,
        )

    await handle_report(report(ThumbnailStartedReport), deps)
    await handle_report(report(ThumbnailCompletedReport, widths=[640, 320]), deps)
    row = await db.fetchrow("SELECT status, error, thumbnail_status FROM videos WHERE id = $1", video_id)
    assert row is not None
    assert (row["status"], row["error"], row["thumbnail_status"]) == ("ready", None, "ready")
    assert [t for _, t in await _events(db, video_id)][-3:] == [
        "video.failed",
        "thumbnail.completed",
        "video.ready",
    ]


async def test_a_video_failed_by_two_parts_names_the_one_still_failed(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)
    jobs = await _jobs(db, video_id)
    for quality in ("360p", "240p"):
        await handle_report(_completed(video_id, quality, jobs[quality]), deps)
    await handle_report(_failed(video_id, "144p", jobs["144p"], "boom"), deps)
    await handle_report(_thumbnail_failed(video_id), deps)
    links = Links("http://vidq.test")

    async def error() -> tuple[str, str | None]:
        row = await db.fetchrow("SELECT status, error FROM videos WHERE id = $1", video_id)
        assert row is not None
        return row["status"], row["error"]

    assert await error() == ("failed", "rendition 144p failed: boom")
    # the rendition it names runs again: the video is failed by its thumbnail, and says so
    async with db.acquire() as conn:
        answered = await retry_rendition(conn, client, video_id, "144p", links=links)
    assert (answered.status, answered.error) == ("failed", "thumbnail failed: no frame")
    await handle_report(_completed(video_id, "144p", (await _jobs(db, video_id))["144p"]), deps)
    assert await error() == ("failed", "thumbnail failed: no frame")
    async with db.acquire() as conn:
        answered = await retry_thumbnail(conn, client, video_id, links=links)
    assert (answered.status, answered.error) == ("processing", None)


async def test_a_part_done_after_all_names_the_part_still_failed(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    # no retry: the rendition's dead letter replayed by an operator completes under its job
    video_id = await _upload(db, client)
    jobs = await _jobs(db, video_id)
    await handle_report(_failed(video_id, "144p", jobs["144p"], "boom"), deps)
    await handle_report(_thumbnail_failed(video_id), deps)
    await handle_report(_completed(video_id, "144p", jobs["144p"]), deps)

    row = await db.fetchrow("SELECT status, error FROM videos WHERE id = $1", video_id)
    assert row is not None
    assert (row["status"], row["error"]) == ("failed", "thumbnail failed: no frame")
    body = await db.fetchval(
        "SELECT body FROM video_events WHERE video_id = $1 ORDER BY sequence DESC LIMIT 1", video_id
    )
    assert body["type"] == "rendition.completed"


async def test_only_a_failed_thumbnail_of_ones_own_live_video_can_be_retried(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client)
    links = Links("http://vidq.test")
    async with db.acquire() as conn:
        with pytest.raises(Conflict, match="the thumbnail is queued; only a failed thumbnail"):
            await retry_thumbnail(conn, client, video_id, links=links)
        with pytest.raises(NotFound):
            await retry_thumbnail(conn, client, "vid_0123456789abcdef", links=links)
        await delete_video(conn, client, video_id, links)
        with pytest.raises(NotFound):
            await retry_thumbnail(conn, client, video_id, links=links)


async def _renditions(db: asyncpg.Pool, client: Client, video_id: str) -> dict[str, Rendition]:
    async with db.acquire() as conn:
        video = await get_video(conn, client, video_id, Links("http://vidq.test"), places=True)
    return {r.quality: r for r in video.renditions}


async def test_a_queued_rendition_knows_its_place_in_its_rungs_queue(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    first, second, third = [await _upload(db, client) for _ in range(3)]
    for place, video_id in enumerate((first, second, third), start=1):
        assert {q: r.queue_position for q, r in (await _renditions(db, client, video_id)).items()} == {
            "360p": place,
            "240p": place,
            "144p": place,
        }
    uploaded = await db.fetchval(
        "SELECT body FROM video_events WHERE video_id = $1 AND type = 'video.uploaded'", third
    )
    assert [r["queue_position"] for r in uploaded["data"]["renditions"]] == [3, 3, 3]

    # the first video's 360p starts: it leaves the queue, and the others move up in that rung only
    jobs = await _jobs(db, first)
    started = RenditionProgressReport(
        id=new_id("evt"),
        timestamp=datetime.now(UTC),
        video_id=first,
        job_id=jobs["360p"],
        quality="360p",
        progress=1,
    )
    await handle_report(started, deps)
    assert (await _renditions(db, client, first))["360p"].queue_position is None
    assert [(await _renditions(db, client, v))["360p"].queue_position for v in (second, third)] == [1, 2]
    assert [(await _renditions(db, client, v))["240p"].queue_position for v in (second, third)] == [2, 3]

    # a failed rendition retried waits at the end of its rung's queue, as its new message does
    await handle_report(_failed(first, "240p", jobs["240p"], "boom"), deps)
    assert (await _renditions(db, client, first))["240p"].queue_position is None
    async with db.acquire() as conn:
        await retry_rendition(conn, client, first, "240p", links=Links("http://vidq.test"))
    assert [(await _renditions(db, client, v))["240p"].queue_position for v in (second, third, first)] == [
        1,
        2,
        3,
    ]

    # a deleted video's renditions leave every queue, a failed one's too
    await handle_report(_failed(second, "360p", (await _jobs(db, second))["360p"], "boom"), deps)
    async with db.acquire() as conn:
        await delete_video(conn, client, second, Links("http://vidq.test"))
    assert [(await _renditions(db, client, v))["240p"].queue_position for v in (third, first)] == [1, 2]
    assert [(await _renditions(db, client, v))["144p"].queue_position for v in (first, third)] == [1, 2]


async def test_uploads_recorded_together_are_each_told_their_own_place(
    db: asyncpg.Pool, client: Client
) -> None:
    answers = await asyncio.gather(*(_recorded(db, client) for _ in range(8)))
    told = {v.id: {r.quality: r.queue_position for r in v.renditions} for v in answers}
    assert sorted(places["360p"] or 0 for places in told.values()) == list(range(1, 9))  # no place twice
    for video_id, places in told.items():  # and the places read afterwards are the ones told
        assert {q: r.queue_position for q, r in (await _renditions(db, client, video_id)).items()} == places


async def test_a_processing_rendition_tells_when_it_should_end_and_a_ready_one_what_it_took(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client, duration_s=100.0)
    job = (await _jobs(db, video_id))["360p"]

    async def progress(
        percent: float, speed: float | None, *, seconds_ago: float = 0.0
    ) -> tuple[float | None, float | None]:
        """The estimate read now, and the one its event carries (as of the report's time)."""
        report = RenditionProgressReport(
            id=new_id("evt"),
            timestamp=datetime.now(UTC) - timedelta(seconds=seconds_ago),
            video_id=video_id,
            job_id=job,
            quality="360p",
            progress=percent,
            speed=speed,
        )
        await handle_report(report, deps)
        eta = (await _renditions(db, client, video_id))["360p"].eta_s
        sent = (await db.fetchval("SELECT body FROM video_events WHERE id = $1", report.id))["data"]["eta_s"]
        return eta, sent

    # 50 s of source left at twice real time: 25 s, in the event and when read
    eta, sent = await progress(50.0, 2.0)
    assert sent == 25.0
    assert eta is not None
    assert 23.0 < eta <= 25.0
    # a report made 30 s ago at 60 %, real time: 40 s left then (its event says so), 10 s now
    eta, sent = await progress(60.0, 1.0, seconds_ago=30.0)
    assert sent == 40.0
    assert eta is not None
    assert 8.0 < eta <= 10.0
    assert await progress(70.0, None) == (None, None)  # ffmpeg did not know its speed yet
    # the expected end has passed: unknown now, though its event still told it as it was
    assert await progress(80.0, 1.0, seconds_ago=60.0) == (None, 20.0)
    queued = await _renditions(db, client, video_id)
    assert (queued["240p"].eta_s, queued["240p"].encode_seconds) == (None, None)

    await handle_report(_completed(video_id, "360p", job), deps)
    ready = (await _renditions(db, client, video_id))["360p"]
    assert (ready.status, ready.eta_s, ready.encode_seconds, ready.queue_position) == (
        "ready",
        None,
        1.0,
        None,
    )


async def test_the_relay_publishes_with_every_property_and_marks_rows(
    db: asyncpg.Pool, client: Client, settings_for: Callable[..., AdminSettings], broker: AdminSettings
) -> None:
    video_id = await _upload(db, client)
    connection = await aio_pika.connect_robust(str(broker.amqp_url))
    async with connection:
        channel = await connection.channel()
        probe = await channel.declare_queue("probe", exclusive=True)
        await probe.bind("vidq.events", "#")
        relay = OutboxRelay(db, await AmqpPublisher.open(connection))
        published, claimed = await relay.drain_once()
        assert (published, claimed) == (5, 5)
        assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
        message = await probe.get(timeout=5)
        assert (message.message_id or "").startswith("evt_")
        assert message.type == "video.uploaded"
        assert message.correlation_id == video_id
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        body = json.loads(message.body)
        assert set(body) == {"id", "type", "timestamp", "sequence", "data"}
        assert body["sequence"] == 1
        transcode = await channel.get_queue("vidq.transcode.144p", ensure=True)
        command = await transcode.get(timeout=5)
        assert command.correlation_id == video_id
        assert json.loads(command.body)["quality"] == "144p"


async def test_the_relay_outlives_a_database_that_refuses_connections_for_a_while(
    db: asyncpg.Pool, database_url: str, client: Client
) -> None:
    # "database … is not currently accepting connections" (ALLOW_CONNECTIONS false, as a restore
    # does) killed the relay for good: uploads were answered 202 and never went anywhere.
    name = urlsplit(database_url).path.lstrip("/")
    publisher = InMemoryPublisher()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=_init_connection)
    relay = asyncio.create_task(OutboxRelay(pool, publisher, poll_s=0.2).run())
    admin = await asyncpg.connect(BASE_DB_URL)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await asyncio.sleep(2.5)  # the relay comes back for its connection, and is refused
        assert not relay.done()
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
    try:
        video_id = await _upload(db, client)
        deadline = asyncio.get_running_loop().time() + 15
        while len(publisher.published) < 5 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        assert {p.message.correlation_id for p in publisher.published} == {video_id}
        assert len(publisher.published) == 5
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        await pool.close()


async def test_the_relay_exports_the_whole_backlog_not_its_last_batch(
    db: asyncpg.Pool, broker: AdminSettings
) -> None:
    # three rows the broker cannot route (they stay), written five minutes ago; a batch of one
    for n in range(3):
        await db.execute(
            """INSERT INTO outbox (exchange, routing_key, message_id, type, correlation_id, body, created_at)
               VALUES ('vidq.transcode', 'no-such-rung', $1, 'transcode.rendition', $1, '{}',
                       now() - interval '5 minutes')""",
            f"m{n}",
        )
    connection = await aio_pika.connect_robust(str(broker.amqp_url))
    async with connection:
        relay = OutboxRelay(db, await AmqpPublisher.open(connection), batch=1, poll_s=0.1)
        running = asyncio.create_task(relay.run())
        try:
            for _ in range(100):
                if REGISTRY.get_sample_value("vidq_outbox_pending") == 3:
                    break
                await asyncio.sleep(0.05)
            assert REGISTRY.get_sample_value("vidq_outbox_pending") == 3
            assert (REGISTRY.get_sample_value("vidq_outbox_oldest_seconds") or 0) >= 300
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


async def test_an_unroutable_row_stays_in_the_outbox_and_is_retried(
    db: asyncpg.Pool, broker: AdminSettings
) -> None:
    await db.execute(
        """INSERT INTO outbox (exchange, routing_key, message_id, type, correlation_id, body)
           VALUES ('vidq.transcode', 'no-such-rung', 'm1', 'transcode.rendition', 'vid_1', '{}')"""
    )
    connection = await aio_pika.connect_robust(str(broker.amqp_url))
    async with connection:
        relay = OutboxRelay(db, await AmqpPublisher.open(connection))
        assert await relay.drain_once() == (0, 1)
    row = await db.fetchrow("SELECT published_at, attempts, last_error FROM outbox")
    assert row is not None
    assert row["published_at"] is None
    assert row["attempts"] == 1


async def test_a_video_tells_its_share_done_by_pixels_and_when_its_last_rendition_should_end(
    db: asyncpg.Pool, client: Client, deps: GatewayDeps
) -> None:
    video_id = await _upload(db, client, duration_s=100.0)  # 640x360: 360p, 240p, 144p
    jobs = await _jobs(db, video_id)

    async def video() -> Video:
        async with db.acquire() as conn:
            return await get_video(conn, client, video_id, Links("http://vidq.test"))

    def progress(quality: str, percent: float, speed: float) -> RenditionProgressReport:
        return RenditionProgressReport(
            id=new_id("evt"),
            timestamp=datetime.now(UTC),
            video_id=video_id,
            job_id=jobs[quality],
            quality=quality,
            progress=percent,
            speed=speed,
        )

    sizes = {r.quality: (r.width, r.height) for r in (await video()).renditions}

    def completed(quality: str) -> RenditionCompletedReport:
        width, height = sizes[quality]
        return _completed(video_id, quality, jobs[quality]).model_copy(
            update={"width": width, "height": height}
        )

    assert ((await video()).progress, (await video()).eta_s) == (0.0, None)
    await handle_report(completed("144p"), deps)
    # 256x144 of 640x360 + 426x240 + 256x144 pixels: a tenth of the work
    assert ((await video()).progress, (await video()).eta_s) == (10.0, None)
    await handle_report(progress("360p", 50.0, 1.0), deps)  # 50 s left
    assert (await video()).progress == 41.2
    assert (await video()).eta_s is None  # the 240p still waits in its queue
    await handle_report(progress("240p", 20.0, 4.0), deps)  # 20 s left
    eta = (await video()).eta_s
    assert eta is not None
    assert 48.0 < eta <= 50.0  # the last to end
    for quality in ("360p", "240p"):
        await handle_report(completed(quality), deps)
    done = await video()
    assert (done.progress, done.eta_s) == (100.0, None)


# -- Idempotency-Key ------------------------------------------------------------------------------


class _ReleasedBetween:
    """A connection on which a refused request's release of the key commits between the claim's
    INSERT (which met the key) and its SELECT (which then finds nothing): the race, made certain."""

    def __init__(self, conn: Conn, db: asyncpg.Pool, client: Client, key: str) -> None:
        self.conn, self.db, self.client, self.key = conn, db, client, key
        self.released = False

    async def execute(self, query: str, *args: Any) -> str:
        return str(await self.conn.execute(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        if not self.released:
            self.released = True
            async with self.db.acquire() as other:
                await release_idempotency_key(other, self.client.id, self.key)
        return await self.conn.fetchrow(query, *args)


async def test_a_key_released_while_it_is_claimed_is_taken_not_assumed(
    db: asyncpg.Pool, client: Client
) -> None:
    async with db.acquire() as conn:
        assert await claim_idempotency_key(conn, client.id, "k", 3600) is None  # a first request's
        racing = _ReleasedBetween(conn, db, client, "k")
        # a second request meets the key, which the first (refused) releases before it is read
        assert await claim_idempotency_key(cast("Conn", racing), client.id, "k", 3600) is None
        assert racing.released
        # ... and the second now holds it: a third request is told it is in progress
        held = await claim_idempotency_key(conn, client.id, "k", 3600)
    assert held is not None
    assert held["status_code"] is None
