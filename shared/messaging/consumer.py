"""THE ack / retry / dead-letter policy. Every consumer of every service goes through here.

Handlers are small typed coroutines ``handle_x(message, deps)`` that never touch the AMQP
message; :func:`process` decodes, calls the handler and settles the delivery:

===============================  ==============================================================
outcome                          action
===============================  ==============================================================
body fails to decode             dead-letter at once (handler not called)
handler returns                  ack (its publishes were already confirmed)
handler raises TransientError    republish a copy to ``<queue>.retry.<delay>`` (confirmed),
                                 then ack; when the schedule is used up, treat as permanent
handler raises PermanentError    ``route.on_failure`` (publishes the ``*.failed`` report),
                                 then dead-letter (reason ``retries-exhausted`` for
                                 RetriesExhausted, from handlers that count their own attempts)
handler raises Deferred          republish to the shortest delay queue with the attempt count
                                 unchanged, then ack (busy is not a failure)
handler raises WorkCanceled      ack: the cancellation is the intended outcome
any other exception              a bug: log it with the traceback, on_failure, dead-letter
CancelledError (shutdown)        no ack: the channel closes and the broker redelivers
a publish here fails             nack(requeue=True): the broker redelivers, and the queue's
                                 delivery-limit policy bounds the loop
ack / reject itself fails        log at CRITICAL, never raise
===============================  ==============================================================

"Dead-letter" means: publish a copy to ``vidq.dlx`` (key = queue name, so it lands in
``<queue>.dlq``) with headers saying why, then ack. If even that publish fails the message is
rejected without requeue, and the queue's dead-letter policy still moves it to the DLQ (without
our reason headers). Never ``requeue=True`` as a retry mechanism: it makes a hot loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

from pydantic import TypeAdapter

from shared.errors import (
    Deferred,
    MalformedMessage,
    PermanentError,
    PipelineError,
    RetriesExhausted,
    TransientError,
    WorkCanceled,
)
from shared.logging import log_context
from shared.messaging.codec import ATTEMPT_HEADER, OutgoingMessage, decode
from shared.messaging.publisher import Publisher
from shared.messaging.topology import DLX, RETRY, QueueSpec
from shared.metrics import HANDLER_SECONDS, MESSAGES

log = logging.getLogger(__name__)

M = TypeVar("M")
D = TypeVar("D")

REASON_HEADER = "vidq-dead-letter-reason"
ERROR_HEADER = "vidq-error"
QUEUE_HEADER = "vidq-queue"
ATTEMPTS_HEADER = "vidq-attempts"
DEAD_AT_HEADER = "vidq-dead-lettered-at"
LAST_ERROR_HEADER = "vidq-last-error"
#: Set by ``python -m shared.ops dlq replay``: an operator sent the message back from its DLQ.
REPLAYED_HEADER = "vidq-replayed-at"
_MAX_ERROR_CHARS = 2000

_headers: ContextVar[Mapping[str, Any]] = ContextVar("vidq_headers", default=MappingProxyType({}))


def replayed() -> bool:
    """Whether the message being handled came back from its dead-letter queue by an operator.

    A handler that skips work already settled (a duplicate) runs it again instead when so:
    replaying a dead letter means "try this again now", after its cause was fixed.
    """
    return REPLAYED_HEADER in _headers.get()


def header(name: str) -> object:
    """A header of the message being handled, for its handler and ``on_failure`` (else ``None``)."""
    return _headers.get().get(name)


@contextlib.contextmanager
def handling(headers: Mapping[str, Any]) -> Iterator[None]:
    """Run a handler with ``headers`` as its message's, as the consumer does (tests, tools)."""
    token = _headers.set(headers)
    try:
        yield
    finally:
        _headers.reset(token)


class Outcome(StrEnum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"
    CANCELED = "canceled"
    DEFERRED = "deferred"
    REQUEUE = "requeue"
    #: can never be handled, on a queue that keeps no dead letters (a process's own)
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class Route(Generic[M, D]):
    """A queue, the message type on it, and the handler that consumes it."""

    queue: QueueSpec
    message: type[M] | TypeAdapter[M]
    handler: Callable[[M, D], Awaitable[None]]
    on_failure: Callable[[M, PipelineError, D], Awaitable[None]] | None = None
    prefetch: int = 1
    #: Acknowledge the deliveries settled together with one frame (``shared/messaging/acks.py``):
    #: for queues that hand a consumer many deliveries at once.
    coalesce_acks: bool = False
    #: Why a well-formed message does not belong on this queue (``None`` when it does): such a
    #: message is dead-lettered as malformed before its handler sees it, e.g. a transcode job
    #: whose quality is not its queue's.
    misplaced: Callable[[M], str | None] | None = None


class Delivery(Protocol):
    """The part of ``aio_pika.IncomingMessage`` the policy reads (fakes implement it too)."""

    @property
    def body(self) -> bytes: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def app_id(self) -> str | None: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...

    async def ack(self, multiple: bool = False) -> None: ...
    async def reject(self, requeue: bool = False) -> None: ...
    async def nack(self, multiple: bool = False, requeue: bool = True) -> None: ...


def attempts_made(headers: Mapping[str, Any]) -> int:
    """Retries already made, from our own header (0 on a first delivery)."""
    try:
        return max(0, int(headers.get(ATTEMPT_HEADER, 0)))
    except (TypeError, ValueError):
        return 0


def choose_delay(delays: tuple[int, ...], attempt: int, retry_after: float | None) -> int:
    """The delay before retry ``attempt + 1``: the schedule's, or longer if asked for.

    A ``Retry-After`` longer than the scheduled delay picks the shortest step of the schedule
    that honours it (delay queues have fixed TTLs), or the longest step if none does.
    """
    scheduled = delays[attempt]
    if retry_after is None or retry_after <= scheduled:
        return scheduled
    longer = sorted(d for d in set(delays) if d >= retry_after)
    return longer[0] if longer else max(delays)


def copy_of(delivery: Delivery, **headers: Any) -> OutgoingMessage:
    """A copy to republish: same body and properties, ``x-*`` headers dropped, ``headers`` set."""
    kept = {k: v for k, v in (delivery.headers or {}).items() if not str(k).startswith("x-")}
    return OutgoingMessage(
        body=delivery.body,
        message_id=delivery.message_id or "",
        type=delivery.type or "",
        correlation_id=delivery.correlation_id,
        app_id=delivery.app_id,
        headers=kept,
    ).with_headers(**headers)


async def schedule_retry(
    publisher: Publisher,
    queue: QueueSpec,
    message: OutgoingMessage,
    *,
    attempt: int,
    error: str,
    retry_after: float | None = None,
) -> int:
    """Send ``message`` to the delay queue of retry ``attempt + 1``; returns the delay used."""
    delay = choose_delay(queue.retry_delays, attempt, retry_after)
    retry = message.with_headers(**{ATTEMPT_HEADER: attempt + 1, LAST_ERROR_HEADER: error[:_MAX_ERROR_CHARS]})
    await publisher.publish(RETRY, queue.delay_queue(delay), retry)
    return delay


async def dead_letter(
    publisher: Publisher,
    queue: QueueSpec,
    message: OutgoingMessage,
    *,
    reason: str,
    error: str,
    attempts: int,
) -> None:
    """Publish ``message`` to ``<queue>.dlq`` with headers saying why (ops read them in the UI)."""
    parked = message.with_headers(
        **{
            REASON_HEADER: reason,
            ERROR_HEADER: error[:_MAX_ERROR_CHARS],
            QUEUE_HEADER: queue.name,
            ATTEMPTS_HEADER: attempts,
            DEAD_AT_HEADER: datetime.now(UTC).isoformat(),
        }
    )
    await publisher.publish(DLX, queue.name, parked)


async def _settle(action: Callable[[], Awaitable[Any]], what: str) -> None:
    try:
        await action()
    except Exception:
        log.critical("could not %s the message; the broker will redeliver it", what, exc_info=True)


class _Policy(Generic[M, D]):
    """One delivery's trip through the table in the module docstring."""

    def __init__(self, route: Route[M, D], delivery: Delivery, deps: D, publisher: Publisher) -> None:
        self.route = route
        self.delivery = delivery
        self.deps = deps
        self.publisher = publisher
        self.attempt = attempts_made(delivery.headers or {})

    async def run(self) -> Outcome:
        try:
            message = decode(self.delivery.body, self.route.message)
        except MalformedMessage as exc:
            return await self._dead_letter("malformed", str(exc), what="malformed message")
        wrong_queue = self.route.misplaced(message) if self.route.misplaced is not None else None
        if wrong_queue is not None:
            return await self._dead_letter("malformed", wrong_queue, what="misplaced message")
        token = _headers.set(self.delivery.headers or {})
        try:
            await self.route.handler(message, self.deps)
        except Deferred as exc:
            return await self._defer(exc)
        except WorkCanceled as exc:
            log.info("work canceled: %s", exc)
            await _settle(self.delivery.ack, "ack")
            return Outcome.CANCELED
        except TransientError as exc:
            return await self._retry(message, exc)
        except RetriesExhausted as exc:
            log.warning("retries used up: %s", exc)
            return await self._fail(message, exc, "retries-exhausted")
        except PermanentError as exc:
            log.warning("permanent failure: %s", exc)
            return await self._fail(message, exc, "permanent")
        except Exception as exc:
            log.exception("handler crashed; dead-lettering the message")
            return await self._fail(message, PermanentError(f"internal error: {exc!r}"), "error")
        finally:
            _headers.reset(token)
        await _settle(self.delivery.ack, "ack")
        return Outcome.ACK

    async def _retry(self, message: M, exc: TransientError) -> Outcome:
        if self.attempt >= len(self.route.queue.retry_delays):
            log.warning("retries used up after %d attempts: %s", self.attempt + 1, exc)
            failure = PermanentError(f"gave up after {self.attempt + 1} attempts: {exc}")
            return await self._fail(message, failure, "retries-exhausted")
        try:
            delay = await schedule_retry(
                self.publisher,
                self.route.queue,
                copy_of(self.delivery),
                attempt=self.attempt,
                error=str(exc),
                retry_after=exc.retry_after,
            )
        except TransientError:
            log.warning("could not schedule a retry; handing the message back", exc_info=True)
            return await self._requeue()
        log.info("retry %d in %d s: %s", self.attempt + 1, delay, exc)
        await _settle(self.delivery.ack, "ack")
        return Outcome.RETRY

    async def _defer(self, exc: Deferred) -> Outcome:
        delays = self.route.queue.retry_delays
        if not delays:
            return await self._requeue()
        delay = min(delays)
        try:
            await self.publisher.publish(RETRY, self.route.queue.delay_queue(delay), copy_of(self.delivery))
        except TransientError:
            return await self._requeue()
        log.debug("deferred for %d s: %s", delay, exc)
        await _settle(self.delivery.ack, "ack")
        return Outcome.DEFERRED

    async def _fail(self, message: M, exc: PipelineError, reason: str) -> Outcome:
        if self.route.on_failure is not None:
            try:
                await self.route.on_failure(message, exc, self.deps)
            except Exception:
                log.exception("on_failure could not run; handing the message back")
                return await self._requeue()
        return await self._dead_letter(reason, str(exc))

    async def _dead_letter(self, reason: str, error: str, *, what: str = "") -> Outcome:
        queue = self.route.queue
        if queue.kind != "work":
            # A process's own queue (cancellations, the live feed) has no dead-letter queue: a
            # message that can never be handled there is dropped, and said so.
            log.warning("%s dropped: %s (%s keeps no dead letters)", what or "message", error, queue.name)
            await _settle(lambda: self.delivery.reject(requeue=False), "reject")
            return Outcome.DROPPED
        if what:
            log.warning("%s dead-lettered: %s", what, error)
        try:
            await dead_letter(
                self.publisher,
                self.route.queue,
                copy_of(self.delivery),
                reason=reason,
                error=error,
                attempts=self.attempt + 1,
            )
        except TransientError:
            log.warning("DLQ publish failed; rejecting so the queue policy dead-letters it")
            await _settle(lambda: self.delivery.reject(requeue=False), "reject")
            return Outcome.DEAD_LETTER
        await _settle(self.delivery.ack, "ack")
        return Outcome.DEAD_LETTER

    async def _requeue(self) -> Outcome:
        await _settle(lambda: self.delivery.nack(requeue=True), "nack")
        return Outcome.REQUEUE


async def process(route: Route[M, D], delivery: Delivery, deps: D, publisher: Publisher) -> Outcome:
    """Decode, handle and settle one delivery according to the policy table above."""
    started = time.perf_counter()
    with log_context(video_id=delivery.correlation_id, event_id=delivery.message_id, queue=route.queue.name):
        try:
            outcome = await _Policy(route, delivery, deps, publisher).run()
        except asyncio.CancelledError:
            # Shutdown or a lost channel: leave the message unacked; the broker redelivers it.
            MESSAGES.labels(route.queue.name, "interrupted").inc()
            raise
    MESSAGES.labels(route.queue.name, outcome.value).inc()
    HANDLER_SECONDS.labels(route.queue.name).observe(time.perf_counter() - started)
    return outcome
