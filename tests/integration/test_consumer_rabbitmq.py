"""The consumer policy on a real broker: retry through a delay queue, dead letters, shutdown."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import REGISTRY
from pydantic import BaseModel

from shared import runtime
from shared.errors import PermanentError, PipelineError, TransientError
from shared.messaging.channels import CHANNEL_STALE_S
from shared.messaging.codec import ATTEMPT_HEADER, outgoing
from shared.messaging.consumer import Route
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import RETRY, THUMBNAILER_UPLOADS, UPLOADS, build
from shared.runtime import Consumers, connect
from shared.settings import AdminSettings


class Ping(BaseModel):
    n: int
    fail: str = ""  # "", "transient-once", "permanent", "crash", "hold"


@dataclass
class Recorder:
    calls: list[tuple[int, int]] = field(default_factory=list)  # (n, call number)
    failures: list[str] = field(default_factory=list)
    seen: dict[int, int] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)


async def handle_ping(ping: Ping, rec: Recorder) -> None:
    rec.seen[ping.n] = rec.seen.get(ping.n, 0) + 1
    rec.calls.append((ping.n, rec.seen[ping.n]))
    if ping.fail == "transient-once" and rec.seen[ping.n] == 1:
        raise TransientError("receiver busy")
    if ping.fail == "transient-always":
        raise TransientError("still busy")
    if ping.fail == "permanent":
        raise PermanentError("cannot ever work")
    if ping.fail == "crash":
        raise ZeroDivisionError("bug")
    if ping.fail == "hold":
        rec.started.set()
        await rec.release.wait()


async def ping_failed(ping: Ping, error: PipelineError, rec: Recorder) -> None:
    rec.failures.append(f"{ping.n}: {error}")


@pytest.fixture
async def connection(broker: AdminSettings) -> AsyncIterator[AbstractRobustConnection]:
    conn = await connect(str(broker.amqp_url), "test")
    yield conn
    await conn.close()


async def _consumers(
    conn: AbstractRobustConnection,
    settings: AdminSettings,
    rec: Recorder,
    *,
    handler: Callable[[Ping, Recorder], Awaitable[None]] = handle_ping,
    coalesce_acks: bool = False,
    prefetch: int = 5,
    channel_stale_s: float = CHANNEL_STALE_S,
) -> Consumers:
    topology = build(settings)
    route = Route(
        topology.queue(THUMBNAILER_UPLOADS),
        Ping,
        handler,
        on_failure=ping_failed,
        prefetch=prefetch,
        coalesce_acks=coalesce_acks,
    )
    publisher = await AmqpPublisher.open(conn)
    consumers = Consumers(
        service="test",
        connection=conn,
        topology=topology,
        routes=[route],
        deps=rec,
        publisher=publisher,
        channel_stale_s=channel_stale_s,
    )
    await consumers.start()
    return consumers


async def _publish(conn: AbstractRobustConnection, body: bytes | Ping, message_id: str = "m1") -> None:
    publisher = await AmqpPublisher.open(conn)
    if isinstance(body, Ping):
        await publisher.publish(
            UPLOADS, "", outgoing(body, message_id=message_id, type="ping", correlation_id="v1")
        )
    else:
        channel = await conn.channel()
        exchange = await channel.get_exchange(UPLOADS)
        await exchange.publish(aio_pika.Message(body, message_id=message_id), "")
        await channel.close()


async def _until(predicate: object, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _drain(conn: AbstractRobustConnection, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    channel = await conn.channel()
    q = await channel.get_queue(queue, ensure=True)
    messages = []
    for _ in range(50):
        message = await q.get(no_ack=True, fail=False, timeout=5)
        if message is None:
            break
        messages.append(message)
    await channel.close()
    return messages


@pytest.mark.parametrize("coalesce", [False, True], ids=["acks", "coalesced-acks"])
async def test_a_transient_failure_waits_in_the_delay_queue_and_comes_back(
    broker: AdminSettings, connection: AbstractRobustConnection, coalesce: bool
) -> None:
    rec = Recorder()
    consumers = await _consumers(connection, broker, rec, coalesce_acks=coalesce)
    await _publish(connection, Ping(n=1, fail="transient-once"))
    await _until(lambda: rec.seen.get(1) == 2)
    await consumers.stop(1)
    assert rec.calls == [(1, 1), (1, 2)]
    assert rec.failures == []
    assert await _drain(connection, f"{THUMBNAILER_UPLOADS}.dlq") == []


async def test_every_confirmed_publish_is_counted_by_exchange_a_consumers_retries_too(
    broker: AdminSettings, connection: AbstractRobustConnection
) -> None:
    # vidq_published_total was counted by the gateway's outbox alone: workers exported none
    def published(exchange: str) -> float:
        return REGISTRY.get_sample_value("vidq_published_total", {"exchange": exchange}) or 0.0

    uploads, retries = published(UPLOADS), published(RETRY)
    rec = Recorder()
    consumers = await _consumers(connection, broker, rec)
    await _publish(connection, Ping(n=5, fail="transient-once"))
    await _until(lambda: rec.seen.get(5) == 2)
    await consumers.stop(1)

    assert published(UPLOADS) == uploads + 1
    assert published(RETRY) == retries + 1  # the consumer's publish into the delay queue


@pytest.mark.parametrize("coalesce", [False, True], ids=["acks", "coalesced-acks"])
async def test_retries_used_up_end_in_the_dlq_with_the_attempt_count(
    broker: AdminSettings, connection: AbstractRobustConnection, coalesce: bool
) -> None:
    rec = Recorder()
    consumers = await _consumers(connection, broker, rec, coalesce_acks=coalesce)
    await _publish(connection, Ping(n=2, fail="transient-always"))
    await _until(lambda: len(rec.failures) == 1)
    await consumers.stop(1)
    assert rec.seen[2] == 1 + len(broker.retry_thumbnail)
    await asyncio.sleep(0.3)
    [dead] = await _drain(connection, f"{THUMBNAILER_UPLOADS}.dlq")
    assert dead.headers["vidq-dead-letter-reason"] == "retries-exhausted"
    assert dead.headers["vidq-attempts"] == 1 + len(broker.retry_thumbnail)
    assert dead.headers[ATTEMPT_HEADER] == len(broker.retry_thumbnail)
    assert json.loads(dead.body)["n"] == 2


@pytest.mark.parametrize("coalesce", [False, True], ids=["acks", "coalesced-acks"])
async def test_poison_goes_to_the_dlq_at_once_and_the_consumer_keeps_running(
    broker: AdminSettings, connection: AbstractRobustConnection, coalesce: bool
) -> None:
    rec = Recorder()
    consumers = await _consumers(connection, broker, rec, coalesce_acks=coalesce)
    await _publish(connection, b"{not json", message_id="poison-1")
    await _publish(connection, b'{"n": "not a number"}', message_id="poison-2")
    await _publish(connection, Ping(n=3, fail="permanent"), message_id="perm")
    await _publish(connection, Ping(n=4, fail="crash"), message_id="bug")
    await _publish(connection, Ping(n=5), message_id="good")
    await _until(lambda: rec.seen.get(5) == 1 and len(rec.failures) == 2)
    await consumers.stop(1)
    await asyncio.sleep(0.3)
    dead = {m.message_id: m.headers for m in await _drain(connection, f"{THUMBNAILER_UPLOADS}.dlq")}
    assert set(dead) == {"poison-1", "poison-2", "perm", "bug"}
    assert dead["poison-1"]["vidq-dead-letter-reason"] == "malformed"
    assert dead["poison-2"]["vidq-dead-letter-reason"] == "malformed"
    assert "n" in str(dead["poison-2"]["vidq-error"])
    assert dead["perm"]["vidq-dead-letter-reason"] == "permanent"
    assert dead["bug"]["vidq-dead-letter-reason"] == "error"
    assert rec.seen == {3: 1, 4: 1, 5: 1}  # poison never reached the handler


async def test_coalesced_acks_settle_every_delivery_of_a_burst_handled_out_of_order(
    broker: AdminSettings, connection: AbstractRobustConnection
) -> None:
    rec = Recorder()

    async def jittery(ping: Ping, rec: Recorder) -> None:
        await asyncio.sleep(random.random() / 20)  # finish in another order than delivered
        await handle_ping(ping, rec)

    consumers = await _consumers(connection, broker, rec, handler=jittery, prefetch=50, coalesce_acks=True)
    publisher = await AmqpPublisher.open(connection)
    await asyncio.gather(
        *(
            publisher.publish(
                UPLOADS, "", outgoing(Ping(n=n), message_id=f"m{n}", type="ping", correlation_id="v")
            )
            for n in range(300)
        )
    )
    await _until(lambda: len(rec.seen) == 300)
    await consumers.stop(5)
    channel = await connection.channel()
    queue = await channel.declare_queue(THUMBNAILER_UPLOADS, passive=True)
    await channel.close()
    # Anything left unacknowledged would have gone back to the queue when the consumer stopped.
    assert queue.declaration_result.message_count == 0
    assert set(rec.seen.values()) == {1}


async def test_a_message_in_flight_at_shutdown_is_redelivered_to_another_consumer(
    broker: AdminSettings, connection: AbstractRobustConnection
) -> None:
    first = Recorder()
    consumers = await _consumers(connection, broker, first)
    await _publish(connection, Ping(n=6, fail="hold"))
    await asyncio.wait_for(first.started.wait(), 10)
    await consumers.stop(grace=0.2)  # the handler does not finish in time
    await connection.close()

    second = Recorder()
    second.release.set()
    other = await connect(str(broker.amqp_url), "test-2")
    try:
        consumers2 = await _consumers(other, broker, second)
        await _until(lambda: second.seen.get(6) == 1)
        await consumers2.stop(1)
    finally:
        await other.close()


async def test_a_route_whose_channel_is_lost_for_good_gets_a_new_one_and_consumes_again(
    broker: AdminSettings, connection: AbstractRobustConnection
) -> None:
    # aio-pika sometimes fails to restore a channel after a reconnect; closing it ourselves leaves
    # it just as dead (the robust layer never reopens a channel closed by its owner).
    rec = Recorder()
    consumers = await _consumers(connection, broker, rec, channel_stale_s=0.5)
    try:
        lost = consumers.queues[THUMBNAILER_UPLOADS].channel
        await lost.close()
        await _until(lambda: consumers.queues[THUMBNAILER_UPLOADS].channel is not lost)
        await _until(lambda: THUMBNAILER_UPLOADS in consumers.tags)
        await _publish(connection, Ping(n=7))
        await _until(lambda: rec.seen.get(7) == 1)
    finally:
        await consumers.stop(1)


async def test_a_route_whose_channel_never_finishes_its_restore_resumes_on_a_new_one(
    broker: AdminSettings, connection: AbstractRobustConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aio-pika can leave a channel open but never "ready" when its restore fails half way (seen
    # after a broker restart): a resume must not wait on it for ever.
    monkeypatch.setattr(runtime, "CONSUME_TIMEOUT_S", 0.5)
    rec = Recorder()
    consumers = await _consumers(connection, broker, rec)
    try:
        await consumers.pause(THUMBNAILER_UPLOADS)
        stuck = consumers.queues[THUMBNAILER_UPLOADS].channel
        stuck._RobustChannel__restored.clear()  # type: ignore[attr-defined]  # the fault
        await consumers.resume(THUMBNAILER_UPLOADS)
        await _until(lambda: THUMBNAILER_UPLOADS in consumers.tags)
        assert consumers.queues[THUMBNAILER_UPLOADS].channel is not stuck
        await _publish(connection, Ping(n=3))
        await _until(lambda: rec.seen.get(3) == 1)
    finally:
        await consumers.stop(1)


async def test_a_paused_route_keeps_no_consumer_and_resumes_under_a_new_consumer_tag(
    broker: AdminSettings, connection: AbstractRobustConnection
) -> None:
    rec = Recorder()
    consumers = await _consumers(connection, broker, rec)
    try:
        first = consumers.tags[THUMBNAILER_UPLOADS]
        await consumers.pause(THUMBNAILER_UPLOADS)
        await _publish(connection, Ping(n=1))
        await asyncio.sleep(0.5)
        assert rec.seen == {}
        await consumers.resume(THUMBNAILER_UPLOADS)
        await _until(lambda: rec.seen.get(1) == 1)
        assert consumers.tags[THUMBNAILER_UPLOADS] != first
    finally:
        await consumers.stop(1)


async def test_a_publisher_whose_channel_is_lost_for_good_opens_a_new_one(
    broker: AdminSettings, connection: AbstractRobustConnection
) -> None:
    publisher = await AmqpPublisher.open(connection, timeout=2, stale_s=0.5)
    message = outgoing(Ping(n=1), message_id="m1", type="ping", correlation_id="v1")
    await publisher.publish(UPLOADS, "", message)
    await publisher._channel.close()  # as aio-pika leaves one it failed to restore
    failures = 0
    for _ in range(20):
        try:
            await publisher.publish(UPLOADS, "", message)
            break
        except TransientError:
            failures += 1
            await asyncio.sleep(0.2)
    else:
        raise AssertionError("the publisher never recovered")
    assert 1 <= failures <= 10
    delivered = await _drain(connection, THUMBNAILER_UPLOADS)
    assert len(delivered) == 2
