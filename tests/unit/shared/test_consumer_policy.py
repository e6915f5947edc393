"""STYLE §4.4: the ack / retry / dead-letter table, row by row, through ``consumer.process``.

Each test builds a delivery, lets a handler behave in one way, and then checks the state: how
the delivery was settled (``FakeDelivery.settled``), what was published where
(``InMemoryPublisher.published``) and what the handler and ``on_failure`` saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from shared.errors import (
    Deferred,
    EncodeFailed,
    PermanentError,
    PipelineError,
    RetriesExhausted,
    TransientError,
    WorkCanceled,
)
from shared.messaging.codec import ATTEMPT_HEADER, MAX_BODY_BYTES, outgoing
from shared.messaging.consumer import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    LAST_ERROR_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    REPLAYED_HEADER,
    Outcome,
    Route,
    attempts_made,
    choose_delay,
    header,
    process,
    replayed,
)
from shared.messaging.memory import FakeDelivery, InMemoryPublisher, Published
from shared.messaging.topology import DLX, RESULTS, RETRY, QueueSpec

QUEUE = QueueSpec("vidq.test.work", retry_delays=(5, 60))


class Ping(BaseModel):
    n: int


@dataclass
class Deps:
    """What the test handler does, and what it and ``on_failure`` saw."""

    publisher: InMemoryPublisher
    raises: BaseException | None = None
    failure_raises: Exception | None = None
    handled: list[Ping] = field(default_factory=list)
    failures: list[tuple[Ping, PipelineError]] = field(default_factory=list)


async def handle_ping(message: Ping, deps: Deps) -> None:
    deps.handled.append(message)
    if deps.raises is not None:
        raise deps.raises


async def ping_failed(message: Ping, error: PipelineError, deps: Deps) -> None:
    """Like a real on_failure: publishes a ``*.failed`` report (so its order is visible)."""
    if deps.failure_raises is not None:
        raise deps.failure_raises
    deps.failures.append((message, error))
    await deps.publisher.publish(
        RESULTS,
        "ping.failed",
        outgoing(message, message_id=f"failed-{message.n}", type="ping.failed", correlation_id=None),
    )


ROUTE: Route[Ping, Deps] = Route(QUEUE, Ping, handle_ping, ping_failed)
ROUTE_WITHOUT_ON_FAILURE: Route[Ping, Deps] = Route(QUEUE, Ping, handle_ping)


def delivery(body: bytes = b'{"n": 7}', headers: Mapping[str, Any] | None = None) -> FakeDelivery:
    return FakeDelivery(
        body=body,
        message_id="msg_7",
        type="ping",
        correlation_id="vid_0123456789ab",
        app_id="test",
        headers=dict(headers or {}),
    )


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


@pytest.fixture
def deps(publisher: InMemoryPublisher) -> Deps:
    return Deps(publisher)


async def run(deps: Deps, incoming: FakeDelivery, route: Route[Ping, Deps] = ROUTE) -> Outcome:
    return await process(route, incoming, deps, deps.publisher)


def only(published: list[Published]) -> Published:
    assert len(published) == 1, published
    return published[0]


async def test_a_handler_that_returns_gets_its_message_acked(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    incoming = delivery()

    outcome = await run(deps, incoming)

    assert outcome is Outcome.ACK
    assert incoming.settled == ["ack"]
    assert deps.handled == [Ping(n=7)]
    assert publisher.published == []


@pytest.mark.parametrize(
    "headers", [{}, {REPLAYED_HEADER: "2026-12-05T03:00:00+00:00"}], ids=["fresh", "replayed"]
)
async def test_the_handler_knows_whether_an_operator_replayed_the_message(
    deps: Deps, headers: dict[str, str]
) -> None:
    seen: list[bool] = []

    async def look(_: Ping, __: Deps) -> None:
        seen.append(replayed())

    await process(Route(QUEUE, Ping, look), delivery(headers=headers), deps, deps.publisher)

    assert seen == [bool(headers)]
    assert not replayed()  # only while its handler runs


async def test_the_handler_and_on_failure_read_their_messages_headers(deps: Deps) -> None:
    seen: list[object] = []

    async def fail(_: Ping, __: Deps) -> None:
        seen.append(header("vidq-thumbnail-run"))
        raise PermanentError("no frame")

    async def on_failure(_: Ping, __: PipelineError, ___: Deps) -> None:
        seen.append(header("vidq-thumbnail-run"))

    route = Route(QUEUE, Ping, fail, on_failure=on_failure)
    await process(route, delivery(headers={"vidq-thumbnail-run": "job_1"}), deps, deps.publisher)

    assert seen == ["job_1", "job_1"]
    assert header("vidq-thumbnail-run") is None  # only while they run


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{oops", "Invalid JSON"),
        (b'{"n": "seven"}', "n: Input should be a valid integer"),
        (b"[7]", "body"),
        (b" " * (MAX_BODY_BYTES + 1), "limit"),
    ],
    ids=["invalid-json", "wrong-schema", "not-an-object", "oversize"],
)
async def test_a_malformed_message_goes_to_the_dlq_at_once_without_calling_the_handler(
    deps: Deps, publisher: InMemoryPublisher, body: bytes, why: str
) -> None:
    incoming = delivery(body)

    outcome = await run(deps, incoming)

    assert outcome is Outcome.DEAD_LETTER
    parked = only(publisher.published)
    assert (parked.exchange, parked.routing_key) == (DLX, "vidq.test.work")
    assert parked.message.body == body
    assert parked.message.headers[REASON_HEADER] == "malformed"
    assert why in parked.message.headers[ERROR_HEADER]
    assert parked.message.headers[QUEUE_HEADER] == "vidq.test.work"
    assert incoming.settled == ["ack"]
    assert deps.handled == []
    assert deps.failures == []


async def test_a_message_that_does_not_belong_on_its_queue_is_dead_lettered_as_malformed(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    route: Route[Ping, Deps] = Route(
        QUEUE,
        Ping,
        handle_ping,
        ping_failed,
        misplaced=lambda m: f"ping {m.n} is not for this queue" if m.n > 5 else None,
    )
    wrong, right = delivery(b'{"n": 7}'), delivery(b'{"n": 3}')

    assert await run(deps, wrong, route) is Outcome.DEAD_LETTER
    parked = only(publisher.published)
    assert (parked.exchange, parked.routing_key) == (DLX, "vidq.test.work")
    assert parked.message.headers[REASON_HEADER] == "malformed"
    assert parked.message.headers[ERROR_HEADER] == "ping 7 is not for this queue"
    assert wrong.settled == ["ack"]
    # neither the handler nor on_failure ran: a stray message changes nothing it names
    assert (deps.handled, deps.failures) == ([], [])

    assert await run(deps, right, route) is Outcome.ACK
    assert deps.handled == [Ping(n=3)]


async def test_a_dead_lettered_copy_keeps_the_message_properties(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    await run(deps, delivery(b"{oops"))

    parked = only(publisher.published).message
    assert (parked.message_id, parked.type, parked.correlation_id, parked.app_id) == (
        "msg_7",
        "ping",
        "vid_0123456789ab",
        "test",
    )
    assert parked.headers[ATTEMPTS_HEADER] == 1


@pytest.mark.parametrize(
    ("attempt_header", "routing_key", "next_attempt"),
    [(None, "vidq.test.work.retry.5s", 1), (1, "vidq.test.work.retry.1m", 2)],
)
async def test_a_transient_error_republishes_to_the_next_delay_queue_and_acks(
    deps: Deps, publisher: InMemoryPublisher, attempt_header: int | None, routing_key: str, next_attempt: int
) -> None:
    deps.raises = TransientError("database blip")
    incoming = delivery(headers={} if attempt_header is None else {ATTEMPT_HEADER: attempt_header})

    outcome = await run(deps, incoming)

    assert outcome is Outcome.RETRY
    retry = only(publisher.published)
    assert (retry.exchange, retry.routing_key) == (RETRY, routing_key)
    assert retry.message.headers[ATTEMPT_HEADER] == next_attempt
    assert retry.message.headers[LAST_ERROR_HEADER] == "database blip"
    assert retry.message.body == incoming.body
    assert retry.message.message_id == "msg_7"
    assert incoming.settled == ["ack"]
    assert deps.failures == []


async def test_when_retries_run_out_on_failure_runs_then_the_message_is_dead_lettered(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    deps.raises = TransientError("still down")
    incoming = delivery(headers={ATTEMPT_HEADER: 2})

    outcome = await run(deps, incoming)

    assert outcome is Outcome.DEAD_LETTER
    assert [(p.exchange, p.routing_key) for p in publisher.published] == [
        (RESULTS, "ping.failed"),
        (DLX, "vidq.test.work"),
    ]
    [(message, error)] = deps.failures
    assert message == Ping(n=7)
    assert isinstance(error, PermanentError)
    assert "gave up after 3 attempts" in str(error)
    assert "still down" in str(error)
    parked = publisher.published[-1].message
    assert parked.headers[REASON_HEADER] == "retries-exhausted"
    assert parked.headers[ATTEMPTS_HEADER] == 3
    assert publisher.to(RETRY) == []
    assert incoming.settled == ["ack"]


@pytest.mark.parametrize("error", [PermanentError("bad input"), EncodeFailed("ffmpeg exited with status 1")])
async def test_a_permanent_error_runs_on_failure_then_dead_letters(
    deps: Deps, publisher: InMemoryPublisher, error: PermanentError
) -> None:
    deps.raises = error
    incoming = delivery()

    outcome = await run(deps, incoming)

    assert outcome is Outcome.DEAD_LETTER
    assert [p.exchange for p in publisher.published] == [RESULTS, DLX]
    assert deps.failures == [(Ping(n=7), error)]
    parked = publisher.published[-1]
    assert parked.routing_key == "vidq.test.work"
    assert parked.message.headers[REASON_HEADER] == "permanent"
    assert parked.message.headers[ERROR_HEADER] == str(error)
    assert incoming.settled == ["ack"]


async def test_a_canceled_work_is_acked_and_nothing_is_published(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    deps.raises = WorkCanceled("video deleted")
    incoming = delivery()

    outcome = await run(deps, incoming)

    assert outcome is Outcome.CANCELED
    assert incoming.settled == ["ack"]
    assert publisher.published == []
    assert deps.failures == []


async def test_an_unexpected_exception_runs_on_failure_and_dead_letters_with_reason_error(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    deps.raises = KeyError("boom")
    incoming = delivery()

    outcome = await run(deps, incoming)

    assert outcome is Outcome.DEAD_LETTER
    [(_, error)] = deps.failures
    assert isinstance(error, PermanentError)
    assert "boom" in str(error)
    parked = only(publisher.to(DLX))
    assert parked.message.headers[REASON_HEADER] == "error"
    assert "boom" in parked.message.headers[ERROR_HEADER]
    assert publisher.to(RETRY) == []
    assert incoming.settled == ["ack"]


async def test_when_the_retry_publish_fails_the_message_is_nacked_for_redelivery(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    deps.raises = TransientError("blip")
    publisher.fail_next = 1
    incoming = delivery()

    outcome = await run(deps, incoming)

    assert outcome is Outcome.REQUEUE
    assert incoming.settled == ["nack-requeue"]
    assert publisher.published == []


@pytest.mark.parametrize(
    ("body", "raises"),
    [(b"{oops", None), (b'{"n": 7}', PermanentError("bad")), (b'{"n": 7}', RuntimeError("bug"))],
    ids=["malformed", "permanent", "unexpected"],
)
async def test_when_the_dlq_publish_fails_the_message_is_rejected_without_requeue(
    deps: Deps, publisher: InMemoryPublisher, body: bytes, raises: Exception | None
) -> None:
    deps.raises = raises
    publisher.fail_next = 1
    incoming = delivery(body)

    outcome = await run(deps, incoming, ROUTE_WITHOUT_ON_FAILURE)

    assert outcome is Outcome.DEAD_LETTER
    assert incoming.settled == ["reject"]
    assert publisher.published == []


async def test_when_on_failure_raises_the_message_is_nacked_and_not_dead_lettered(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    deps.raises = PermanentError("bad")
    deps.failure_raises = TransientError("could not publish the failed report")
    incoming = delivery()

    outcome = await run(deps, incoming)

    assert outcome is Outcome.REQUEUE
    assert incoming.settled == ["nack-requeue"]
    assert publisher.published == []


async def test_a_permanent_error_without_on_failure_is_still_dead_lettered(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    deps.raises = PermanentError("bad")
    incoming = delivery()

    await run(deps, incoming, ROUTE_WITHOUT_ON_FAILURE)

    assert only(publisher.published).exchange == DLX
    assert incoming.settled == ["ack"]


async def test_a_cancelled_handler_propagates_and_leaves_the_message_unsettled(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    deps.raises = asyncio.CancelledError()
    incoming = delivery()

    with pytest.raises(asyncio.CancelledError):
        await run(deps, incoming)

    assert incoming.settled == []
    assert publisher.published == []
    assert deps.failures == []


@pytest.mark.parametrize(
    ("raises", "exchange"),
    [(TransientError("blip"), RETRY), (PermanentError("bad"), DLX)],
)
async def test_broker_x_headers_are_stripped_and_our_headers_kept_on_republish(
    deps: Deps, publisher: InMemoryPublisher, raises: PipelineError, exchange: str
) -> None:
    deps.raises = raises
    incoming = delivery(
        headers={
            "x-death": [{"count": 1, "queue": "vidq.test.work.retry.5s"}],
            "x-first-death-queue": "vidq.test.work",
            "x-delivery-count": 2,
            "traceparent": "00-abc-def-01",
        }
    )

    await run(deps, incoming, ROUTE_WITHOUT_ON_FAILURE)

    headers = only(publisher.to(exchange)).message.headers
    assert not [name for name in headers if name.startswith("x-")]
    assert headers["traceparent"] == "00-abc-def-01"


@pytest.mark.parametrize(
    ("retry_after", "routing_key"),
    [(None, "vidq.test.work.retry.5s"), (3.0, "vidq.test.work.retry.5s"), (30.0, "vidq.test.work.retry.1m")],
)
async def test_a_retry_after_longer_than_the_scheduled_delay_picks_a_longer_delay_queue(
    deps: Deps, publisher: InMemoryPublisher, retry_after: float | None, routing_key: str
) -> None:
    deps.raises = TransientError("429 Too Many Requests", retry_after=retry_after)

    await run(deps, delivery())

    assert only(publisher.to(RETRY)).routing_key == routing_key


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        (0, None, 5),
        (1, None, 60),
        (2, None, 300),
        (0, 5, 5),
        (0, 5.5, 60),
        (0, 30, 60),
        (0, 120, 300),
        (0, 10_000, 300),
        (1, 10, 60),
        (2, 60, 300),
    ],
)
def test_choose_delay_honours_retry_after_with_the_shortest_step_that_fits(
    attempt: int, retry_after: float | None, expected: int
) -> None:
    assert choose_delay((5, 60, 300), attempt, retry_after) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 0),
        ({ATTEMPT_HEADER: 3}, 3),
        ({ATTEMPT_HEADER: "2"}, 2),
        ({ATTEMPT_HEADER: -4}, 0),
        ({ATTEMPT_HEADER: "x"}, 0),
    ],
)
def test_attempts_made_reads_our_header_defensively(headers: dict[str, Any], expected: int) -> None:
    assert attempts_made(headers) == expected


class BrokenAckDelivery(FakeDelivery):
    async def ack(self, multiple: bool = False) -> None:
        raise ConnectionError("channel closed")


async def test_a_failing_ack_is_logged_and_never_raised(deps: Deps, caplog: pytest.LogCaptureFixture) -> None:
    incoming = BrokenAckDelivery(body=b'{"n": 1}')

    outcome = await run(deps, incoming)

    assert outcome is Outcome.ACK
    assert deps.handled == [Ping(n=1)]
    assert any(r.levelname == "CRITICAL" for r in caplog.records)


async def test_a_deferred_message_waits_in_the_shortest_delay_queue_without_using_an_attempt(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    deps.raises = Deferred("endpoint busy")
    # Even on the last attempt: deferring is not failing.
    incoming = delivery(headers={ATTEMPT_HEADER: len(QUEUE.retry_delays)})

    outcome = await run(deps, incoming)

    assert outcome is Outcome.DEFERRED
    wait = only(publisher.published)
    assert (wait.exchange, wait.routing_key) == (RETRY, QUEUE.delay_queue(min(QUEUE.retry_delays)))
    assert wait.message.headers[ATTEMPT_HEADER] == len(QUEUE.retry_delays)
    assert incoming.settled == ["ack"]
    assert deps.failures == []


async def test_a_deferral_that_cannot_be_published_hands_the_message_back(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    deps.raises = Deferred("endpoint busy")
    publisher.fail_next = 1
    incoming = delivery()

    assert await run(deps, incoming) is Outcome.REQUEUE
    assert incoming.settled == ["nack-requeue"]


async def test_a_handler_that_counts_its_own_attempts_dead_letters_with_reason_retries_exhausted(
    deps: Deps, publisher: InMemoryPublisher
) -> None:
    deps.raises = RetriesExhausted("gave up after 8 attempts")
    incoming = delivery()

    assert await run(deps, incoming) is Outcome.DEAD_LETTER
    dead = publisher.to(DLX)[0]
    assert dead.message.headers[REASON_HEADER] == "retries-exhausted"
    assert "8 attempts" in dead.message.headers[ERROR_HEADER]
    assert len(deps.failures) == 1


async def test_a_message_that_can_never_be_handled_on_a_queue_without_dlq_is_dropped_and_said_so(
    deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    # a process's own queue (cancellations, the live feed): nothing to dead-letter into
    own = Route(QueueSpec("vidq.test.cancels.host-1", kind="broadcast"), Ping, handle_ping)
    incoming = delivery(b"not json")

    with caplog.at_level("WARNING"):
        assert await run(deps, incoming, own) == Outcome.DROPPED

    assert deps.publisher.published == []
    assert incoming.settled == ["reject"]
    assert "malformed message dropped" in caplog.text
    assert "keeps no dead letters" in caplog.text
    assert "dead-lettered" not in caplog.text
