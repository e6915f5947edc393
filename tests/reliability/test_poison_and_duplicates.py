"""Poison on every queue, duplicate deliveries, webhook receivers that fail: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from pydantic import BaseModel

from notifier.app import routes as notifier_routes
from notifier.settings import NotifierSettings
from shared import ids
from shared.commands import DeliverWebhook, SendTestEvent, TranscodeRendition
from shared.errors import MalformedMessage
from shared.events import VideoReady, VideoUploaded
from shared.messaging.codec import MAX_BODY_BYTES, OutgoingMessage, decode, outgoing
from shared.messaging.consumer import Route
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import (
    EVENTS,
    GATEWAY_PROJECTION,
    NOTIFIER_DELIVERIES,
    NOTIFIER_EMAIL,
    NOTIFIER_REQUESTS,
    NOTIFIER_WEBHOOKS,
    RESULTS,
    THUMBNAILER_UPLOADS,
    Topology,
    build,
    transcode_queue_name,
)
from shared.ops import depth, list_dead_letters
from shared.reports import ANY_REPORT, RenditionCompletedReport
from shared.resources import Source, Thumbnail, Video
from shared.settings import ServiceSettings
from tests.reliability.conftest import World, clip, wait_and_count, webhook_ready_ids
from tests.settings import make
from thumbnailer.app import routes as thumbnailer_routes
from thumbnailer.settings import ThumbnailerSettings
from transcoder.app import routes as transcoder_routes
from transcoder.settings import TranscoderSettings

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

# A short webhook timeout, so a hanging receiver costs one attempt of 2 s.
STACK_ENV = {"VIDQ_WEBHOOK_TIMEOUT_S": "2"}
WEBHOOK_TIMEOUT_S = 2.0
RETRY_WEBHOOK = (1, 2, 3, 5, 10)  # the world's VIDQ_RETRY_WEBHOOK
# The only fixed wait: long enough for a duplicate that slipped through to show (an email, a
# webhook, an event), used only to prove that something did NOT happen.
SETTLE_S = 3.0
# Tables a handler writes; a poison message must leave every one of them as it was.
SIDE_EFFECTS = (
    "videos",
    "video_events",
    "outbox",
    "processed_reports",
    "transcode_jobs",
    "notifier_events",
    "webhook_deliveries",
    "email_log",
)


def _topology() -> Topology:
    return build(make(ServiceSettings))


def _decoders(topology: Topology) -> dict[str, Any]:
    """What each work queue's consumer decodes its messages as: the services' own routes."""
    routes: list[Route[Any, Any]] = [
        *transcoder_routes(make(TranscoderSettings), topology),
        *thumbnailer_routes(make(ThumbnailerSettings), topology),
        *notifier_routes(make(NotifierSettings), topology),
    ]
    decoders: dict[str, Any] = {r.queue.name: r.message for r in routes if r.queue.kind == "work"}
    decoders[GATEWAY_PROJECTION] = ANY_REPORT  # the gateway builds its one route inside create_app
    return decoders


def _poison_video(video_id: str) -> Video:
    now = datetime.now(UTC)
    return Video(
        id=video_id,
        status="ready",
        created_at=now,
        updated_at=now,
        source=Source(
            filename="poison.mp4", size_bytes=1, width=320, height=180, duration_s=1.0, video_codec="h264"
        ),
        renditions=[],
        thumbnail=Thumbnail(status="ready"),
    )


def _valid(queue: str, video_id: str) -> tuple[BaseModel, dict[str, Any]]:
    """A message the queue's consumer accepts, and the one change that makes it a near miss.

    On union-typed queues the near miss is an unknown ``type`` (``kind``); on the others it is
    the right message with one impossible value.
    """
    now = datetime.now(UTC)
    video = _poison_video(video_id)
    if queue.startswith("vidq.transcode."):
        quality = queue.removeprefix("vidq.transcode.")
        command = TranscodeRendition(
            job_id=ids.new_id("job"),
            video_id=video_id,
            quality=quality,  # type: ignore[arg-type]
            width=256,
            height=144,
            has_audio=False,
            duration_s=1.0,
        )
        return command, {"quality": "999p"}
    if queue == THUMBNAILER_UPLOADS:
        return VideoUploaded(id=ids.new_id("evt"), timestamp=now, sequence=1, data=video), {
            "type": "video.exploded"
        }
    if queue == GATEWAY_PROJECTION:
        report = RenditionCompletedReport(
            id=ids.new_id("evt"),
            timestamp=now,
            video_id=video_id,
            job_id=ids.new_id("job"),
            quality="144p",
            width=256,
            height=144,
            size_bytes=1,
            duration_s=1.0,
            encode_seconds=1.0,
        )
        return report, {"type": "rendition.exploded"}
    if queue in (NOTIFIER_WEBHOOKS, NOTIFIER_EMAIL):
        return VideoReady(id=ids.new_id("evt"), timestamp=now, sequence=2, data=video), {
            "type": "video.exploded"
        }
    if queue == NOTIFIER_DELIVERIES:
        return DeliverWebhook(delivery_id=ids.new_id("dlv")), {"delivery_id": None}
    if queue == NOTIFIER_REQUESTS:
        test = SendTestEvent(
            webhook_id=ids.new_id("whk"), event_id=ids.new_id("evt"), delivery_id=ids.new_id("dlv")
        )
        return test, {"kind": "exploded"}
    raise AssertionError(f"no poison recipe for {queue}: add one")


def _poisons(queue: str, decoder: Any, video_id: str) -> list[tuple[str, bytes]]:
    """Four messages the consumer of ``queue`` must dead-letter unread, checked against its decoder."""
    model, near_miss = _valid(queue, video_id)
    valid = model.model_dump(mode="json")
    body = json.dumps(valid).encode()
    decode(body, decoder)  # the recipe is a real message of the queue: the poisons are near it
    poisons = [
        ("invalid-json", body[: len(body) // 2]),
        ("wrong-schema", json.dumps({"hello": "world", "n": [1, 2, 3]}).encode()),
        ("near-miss", json.dumps({**valid, **near_miss}).encode()),
        # Valid but for its size: if the limit failed, the handler would run (and leave a trace).
        ("huge", json.dumps({**valid, "padding": "x" * MAX_BODY_BYTES}).encode()),
    ]
    for kind, poison in poisons:
        with pytest.raises(MalformedMessage):
            decode(poison, decoder)
        assert kind != "huge" or len(poison) > MAX_BODY_BYTES
    return poisons


@contextlib.asynccontextmanager
async def _broker(world: World) -> AsyncIterator[tuple[AbstractChannel, AmqpPublisher]]:
    """A channel to look with and a publisher with confirms (aio-pika), on the private node."""
    connection = await aio_pika.connect(world.env["VIDQ_AMQP_URL"])
    async with connection:
        channel = await connection.channel()
        yield channel, await AmqpPublisher.open(connection)


def _admin(world: World) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=world.broker.admin_url.replace("guest:guest@", ""), auth=("guest", "guest"), timeout=10
    )


async def _queue_info(admin: httpx.AsyncClient, queue: str) -> dict[str, Any]:
    response = await admin.get(f"/api/queues/vidq/{quote(queue, safe='')}")
    response.raise_for_status()
    info: dict[str, Any] = response.json()
    return info


async def _acks(admin: httpx.AsyncClient, queue: str) -> int:
    return int((await _queue_info(admin, queue)).get("message_stats", {}).get("ack", 0))


async def _until_acked(admin: httpx.AsyncClient, wanted: dict[str, int], timeout: float = 30) -> None:
    """Wait until each queue's consumers acknowledged ``wanted[queue]`` messages in all.

    A consumer acknowledges after its handler returned, so whatever a message did, it has done.
    (The management API refreshes its figures every few seconds.)
    """
    deadline = time.monotonic() + timeout
    acked: dict[str, int] = {}
    while time.monotonic() < deadline:
        acked = {queue: await _acks(admin, queue) for queue in wanted}
        if all(acked[q] >= n for q, n in wanted.items()):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"not acknowledged in time: wanted {wanted}, acked {acked}")


async def _until(predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def _fetch(world: World, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(world.database.url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _row_counts(world: World) -> dict[str, int]:
    conn = await asyncpg.connect(world.database.url)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in SIDE_EFFECTS}  # noqa: S608
    finally:
        await conn.close()


def _emails_to(world: World, address: str) -> int:
    with world.mailbox.lock:
        return sum(1 for m in world.mailbox.messages if m["To"] == address)


def _requests_for(world: World, path: str, video_id: str) -> int:
    return sum(1 for r in world.receiver.at(path, "video.ready") if r.json()["data"]["id"] == video_id)


async def _subscribe(api: httpx.AsyncClient, world: World, path: str) -> str:
    response = await api.post(
        "/v1/webhooks", json={"url": f"{world.receiver_url}{path}", "events": ["video.ready"]}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _delivery_log(api: httpx.AsyncClient, webhook_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 100})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


async def test_poison_on_every_work_queue_is_dead_lettered_unread(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    topology = _topology()
    decoders = _decoders(topology)
    queues = [work.name for work in topology.work_queues]
    assert set(decoders) == set(queues)  # every work queue has a consumer, and gets its poison
    video_id = ids.new_id("vid")  # a video nobody uploaded: a handler that ran would leave a trace
    sent: dict[str, set[str]] = {}
    async with _broker(world) as (channel, publisher):
        assert {q: await depth(channel, q) for q in queues} == dict.fromkeys(queues, 0)
        before = await _row_counts(world)
        for queue in queues:
            for kind, body in _poisons(queue, decoders[queue], video_id):
                message_id = f"poison-{kind}-{ids.new_id('msg')}"
                # Straight to the queue (default exchange), confirmed, as a buggy publisher would.
                await publisher.publish(
                    "", queue, OutgoingMessage(body, message_id, f"poison.{kind}", video_id, "poisoner")
                )
                sent.setdefault(queue, set()).add(message_id)

        async def all_dead() -> bool:
            return all([await depth(channel, q) >= len(sent[q]) for q in queues])

        await _until(all_dead, "poison dead-lettered", timeout=30)
        dead = {q: await list_dead_letters(channel, q) for q in queues}
        after = await _row_counts(world)
    for queue in queues:
        assert {d.message_id for d in dead[queue]} == sent[queue], queue
        for letter in dead[queue]:
            assert (letter.reason, letter.attempts, letter.queue) == ("malformed", 1, queue), letter
    assert after == before  # no handler ran: not a row anywhere

    started = time.monotonic()
    async with world.client() as api:
        ready_id = await world.upload(api, clip(world, tmp_path, seconds=1), qualities="144p")
    tally = await wait_and_count(world, [ready_id], since=started)
    assert tally.perfect, tally
    consumers: dict[str, int] = {}
    async with _admin(world) as admin:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # Idle now, so even the transcode queues (paused while encoding) have their consumer.
            consumers = {q: int((await _queue_info(admin, q)).get("consumers", 0)) for q in queues}
            if all(consumers.values()):
                break
            await asyncio.sleep(0.5)
    lost = sum(1 for n in consumers.values() if n < 1)
    async with _broker(world) as (channel, _):
        for queue in queues:  # leave the world as found: the DLQs empty
            await (await channel.declare_queue(f"{queue}.dlq", passive=True)).purge()
    total = sum(len(v) for v in dead.values())
    figures.append(
        f"poison x4 on every queue: {len(queues)} queues, {total} dead-lettered, {lost} consumers lost, "
        f"pipeline still ready in {tally.seconds:.0f} s"
    )
    assert lost == 0, consumers


async def test_duplicate_deliveries_have_no_second_effect(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    address = "dups@example.com"
    started = time.monotonic()
    async with world.client() as api:
        hook = await _subscribe(api, world, "/dups")
        video_id = await world.upload(
            api, clip(world, tmp_path, seconds=1), qualities="144p", notify_email=address
        )
    tally = await wait_and_count(world, [video_id], since=started)
    assert tally.perfect, tally

    async def notified() -> bool:
        return _emails_to(world, address) == 1 and video_id in webhook_ready_ids(world, "/dups")

    await _until(notified, "email and webhook of video.ready")
    jobs = await _fetch(
        world, "SELECT job_id, attempt, state, updated_at FROM transcode_jobs WHERE video_id = $1", video_id
    )
    events = await _fetch(
        world, "SELECT id, type, body FROM video_events WHERE video_id = $1 ORDER BY sequence", video_id
    )
    [ready] = [e for e in events if e["type"] == "video.ready"]
    commands = await _fetch(
        world,
        """SELECT exchange, routing_key, message_id, type, correlation_id, headers, body FROM outbox
           WHERE exchange = 'vidq.transcode' AND correlation_id = $1 AND published_at IS NOT NULL""",
        video_id,
    )
    [rendition] = await _fetch(world, "SELECT * FROM renditions WHERE video_id = $1", video_id)
    assert len(commands) == len(jobs) == 1
    assert [j["state"] for j in jobs] == ["done"]

    async with _admin(world) as admin:
        transcode = transcode_queue_name(rendition["quality"])
        expected = {transcode: 1, NOTIFIER_EMAIL: 2, NOTIFIER_WEBHOOKS: 2, GATEWAY_PROJECTION: 1}
        baseline = {q: await _acks(admin, q) for q in expected}
        async with _broker(world) as (_, publisher):
            # (a) the transcode command again, as the outbox relay would after a crash before marking it
            for row in commands:
                await publisher.publish(
                    row["exchange"],
                    row["routing_key"],
                    OutgoingMessage(
                        bytes(row["body"]),
                        row["message_id"],
                        row["type"],
                        row["correlation_id"],
                        "gateway",
                        json.loads(row["headers"]),
                    ),
                )
            # (b) the public video.ready twice, as a notifier dying between effect and ack would see it
            for _ in range(2):
                await publisher.publish(
                    EVENTS,
                    "video.ready",
                    OutgoingMessage(ready["body"].encode(), ready["id"], "video.ready", video_id, "gateway"),
                )
            # (c) the transcoder's report again (a transcoder dying between report and ack)
            report = RenditionCompletedReport(
                id=ids.event_id(rendition["job_id"], "rendition.completed"),
                timestamp=datetime.now(UTC),
                video_id=video_id,
                job_id=rendition["job_id"],
                quality=rendition["quality"],
                width=rendition["width"],
                height=rendition["height"],
                size_bytes=rendition["size_bytes"],
                duration_s=rendition["duration_s"],
                encode_seconds=1.0,
            )
            assert report.id in {e["id"] for e in events}  # the very report the projection applied
            await publisher.publish(
                RESULTS,
                report.type,
                outgoing(
                    report,
                    message_id=report.id,
                    type=report.type,
                    correlation_id=video_id,
                    app_id="transcoder",
                ),
            )
        await _until_acked(admin, {q: baseline[q] + n for q, n in expected.items()})
    await asyncio.sleep(SETTLE_S)  # a second email, webhook or encode would show by now

    jobs_after = await _fetch(
        world, "SELECT job_id, attempt, state, updated_at FROM transcode_jobs WHERE video_id = $1", video_id
    )
    events_after = await _fetch(
        world, "SELECT id, type, body FROM video_events WHERE video_id = $1 ORDER BY sequence", video_id
    )
    async with world.client() as api:
        log = [d for d in await _delivery_log(api, hook) if d["event_id"] == ready["id"]]
    second_encodes = sum(1 for a, b in zip(jobs, jobs_after, strict=True) if a != b)
    extra_events = len(events_after) - len(events)
    second_emails = _emails_to(world, address) - 1
    second_webhooks = _requests_for(world, "/dups", video_id) - 1
    tally = await wait_and_count(world, [video_id], since=started)
    figures.append(
        f"duplicates (transcode command, video.ready x2, rendition report): {second_encodes} second encodes, "
        f"{extra_events} extra events, {tally.duplicate_ready} duplicate ready events, "
        f"{second_emails} second emails, {second_webhooks} second webhooks"
    )
    assert jobs_after == jobs  # (a) no second claim: same attempt, still done
    assert [e["id"] for e in events_after] == [e["id"] for e in events]  # (c) no new event
    assert [e["type"] for e in events_after].count("rendition.completed") == 1
    assert tally.perfect, tally
    assert second_emails == 0  # (b) the email log holds
    assert webhook_ready_ids(world, "/dups")[video_id] == {ready["id"]}
    assert second_webhooks == 0
    assert [(d["status"], d["attempts"]) for d in log] == [("succeeded", 1)]


async def test_duplicates_arriving_together_are_handled_once(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    """Two copies of an event nobody has handled yet, side by side (the outbox relay sent it twice)."""
    address = "together@example.com"
    await world.stack.stop("notifier", sig=signal.SIGTERM)
    try:
        started = time.monotonic()
        async with world.client() as api:
            video_id = await world.upload(
                api, clip(world, tmp_path, seconds=1), qualities="144p", notify_email=address
            )
        tally = await wait_and_count(world, [video_id], since=started)
        assert tally.perfect, tally
        [ready] = await _fetch(
            world, "SELECT id, body FROM video_events WHERE video_id = $1 AND type = 'video.ready'", video_id
        )
        async with _broker(world) as (channel, publisher):
            await publisher.publish(
                EVENTS,
                "video.ready",
                OutgoingMessage(ready["body"].encode(), ready["id"], "video.ready", video_id, "gateway"),
            )

            async def both_queued() -> bool:
                email = await channel.declare_queue(NOTIFIER_EMAIL, passive=True)
                return bool(email.declaration_result.message_count == 2)  # the relay's copy and ours

            await _until(both_queued, "both copies queued", timeout=30)
    finally:
        await world.start("notifier")

    async def notified() -> bool:
        return _emails_to(world, address) >= 1 and video_id in webhook_ready_ids(world, "/dups")

    await _until(notified, "email and webhook of video.ready")
    async with _broker(world) as (channel, _):

        async def drained() -> bool:
            counts = [
                (await channel.declare_queue(q, passive=True)).declaration_result.message_count
                for q in (NOTIFIER_EMAIL, NOTIFIER_WEBHOOKS, NOTIFIER_DELIVERIES)
            ]
            return not any(counts)

        await _until(drained, "notifier queues drained", timeout=30)
    await asyncio.sleep(SETTLE_S)  # a second email or webhook would show by now
    emails = _emails_to(world, address)
    webhooks = _requests_for(world, "/dups", video_id)
    figures.append(f"video.ready x2 at once: {emails} email, {webhooks} webhook")
    assert emails == 1
    assert webhooks == 1
    assert webhook_ready_ids(world, "/dups")[video_id] == {ready["id"]}


async def test_webhook_receivers_down_slow_or_rate_limiting_get_every_event_once(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    paths = ("/flaky-down", "/slow", "/ratelimited")
    world.receiver.fail["/flaky-down"] = 3  # 500 to its first three requests
    world.receiver.hangs["/slow"] = [WEBHOOK_TIMEOUT_S + 1]  # its first request outlasts the timeout
    world.receiver.script["/ratelimited"] = [(429, {"retry-after": "2"})]
    world.receiver.script["/gone"] = [(410, {})] * 3
    source = clip(world, tmp_path, seconds=1)
    started = time.monotonic()
    async with world.client() as api:
        hooks = {path: await _subscribe(api, world, path) for path in (*paths, "/gone")}
        video_ids = [await world.upload(api, source, qualities="144p") for _ in range(3)]
    tally = await wait_and_count(world, video_ids, since=started)
    assert tally.perfect, tally

    async def all_delivered() -> bool:
        async with world.client() as api:
            for path in paths:
                ours = [d for d in await _delivery_log(api, hooks[path]) if d["video_id"] in video_ids]
                if len(ours) < len(video_ids) or any(d["status"] != "succeeded" for d in ours):
                    return False
        return True

    await _until(all_delivered, "every video.ready delivered to every endpoint", timeout=60)
    async with world.client() as api:
        logs = {path: await _delivery_log(api, hooks[path]) for path in (*paths, "/gone")}
        gone = (await api.get(f"/v1/webhooks/{hooks['/gone']}")).json()

    arrivals: dict[str, dict[str, list[float]]] = {}  # path → webhook-id → arrival times
    for request, at in zip(world.receiver.requests, world.receiver.times, strict=True):
        if request.path in (*paths, "/gone"):
            arrivals.setdefault(request.path, {}).setdefault(request.headers["webhook-id"], []).append(at)
    delivered = sum(len(set(webhook_ready_ids(world, p)) & set(video_ids)) for p in paths)
    several = sum(1 for p in paths for v in webhook_ready_ids(world, p).values() if len(v) != 1)
    retries = {p: sum(len(t) - 1 for t in arrivals[p].values()) for p in paths}
    gone_requests = sum(len(t) for t in arrivals.get("/gone", {}).values())
    figures.append(
        f"webhook receivers down/slow/429: {len(video_ids)} videos × {len(paths)} endpoints, "
        f"{delivered} delivered, {len(video_ids) * len(paths) - delivered} lost, "
        f"{'one webhook-id each' if not several else f'{several} with several webhook-ids'}, "
        f"{sum(retries.values())} retries; 410: {gone_requests} request(s), never retried"
    )
    for path in paths:
        assert set(webhook_ready_ids(world, path)) == set(video_ids), path  # every event …
        assert all(len(v) == 1 for v in webhook_ready_ids(world, path).values()), path  # … one id each
    assert retries == {"/flaky-down": 3, "/slow": 1, "/ratelimited": 1}
    # Retries grow on the schedule (1 s, 2 s, 3 s …) after each failed attempt.
    for times in arrivals["/flaky-down"].values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= RETRY_WEBHOOK[i] - 0.05 for i, gap in enumerate(gaps)), gaps
    # Retry-After: 2 skips the 1 s step.
    [limited] = [t for t in arrivals["/ratelimited"].values() if len(t) == 2]
    assert limited[1] - limited[0] >= 1.9
    # The hanging request was given up at the timeout, not waited for.
    [slow] = [d for d in logs["/slow"] if d["attempts"] == 2]
    first = slow["attempt_log"][0]
    assert first["status_code"] is None
    assert f"no answer within {WEBHOOK_TIMEOUT_S:g} s" in first["error"]
    assert first["latency_ms"] < (WEBHOOK_TIMEOUT_S + 0.5) * 1000
    # 410 Gone stops: no delivery to it is tried twice, and the endpoint is disabled.
    assert gone_requests >= 1
    assert all(len(t) == 1 for t in arrivals["/gone"].values())
    assert gone["enabled"] is False
    # (a delivery whose turn came after the endpoint was disabled is given up unsent)
    assert all(d["status"] == "failed" and d["attempts"] <= 1 for d in logs["/gone"])
    async with _broker(world) as (channel, _):
        assert await depth(channel, NOTIFIER_DELIVERIES) == 0  # nothing given up
