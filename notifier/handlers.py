"""Notifier handlers: fan events out to endpoints, deliver each one, email the video's owner."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from notifier import lookups
from notifier import repository as repo
from notifier.delivery_log import Claimed, DeliveryLog, IncomingEvent
from notifier.email import Email, EmailSender, render, render_endpoint_disabled
from notifier.metrics import WEBHOOK_DELIVERIES, WEBHOOK_EVENT_LAG, WEBHOOK_SECONDS
from notifier.settings import NotifierSettings
from notifier.signing import headers as signed_headers
from notifier.webhook import DeliveryResult, EndpointLimiter, WebhookSender
from shared.commands import DeliverWebhook, EmailEndpointDisabled, ReplayWebhook, SendTestEvent
from shared.db import db_errors_are_transient, map_asyncpg_errors
from shared.errors import (
    Deferred,
    ForbiddenDestination,
    PermanentError,
    PipelineError,
    RetriesExhausted,
    TransientError,
)
from shared.events import AnyEvent, VideoFailed, VideoReady
from shared.ids import event_id as derived_id
from shared.ids import new_id
from shared.messaging.codec import OutgoingMessage, outgoing
from shared.messaging.consumer import choose_delay, dead_letter, replayed, schedule_retry
from shared.messaging.publisher import Publisher
from shared.messaging.topology import DELIVERIES, NOTIFIER_DELIVERIES, RETRY, Topology
from shared.reports import WebhookDisabledReport, publish_report

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NotifierDeps:
    settings: NotifierSettings
    topology: Topology
    pool: asyncpg.Pool
    publisher: Publisher
    sender: WebhookSender
    email: EmailSender
    limiter: EndpointLimiter
    log: DeliveryLog


def _command(delivery_id: str) -> OutgoingMessage:
    return outgoing(
        DeliverWebhook(delivery_id=delivery_id),
        message_id=new_id("msg"),
        type="webhook.deliver",
        correlation_id=None,
        app_id="notifier",
    )


async def _send_commands(deps: NotifierDeps, delivery_ids: list[str]) -> None:
    """One DeliverWebhook per delivery, published together (their confirms overlap)."""
    await asyncio.gather(*(deps.publisher.publish(DELIVERIES, "webhook", _command(d)) for d in delivery_ids))


@db_errors_are_transient
async def handle_event_for_webhooks(event: AnyEvent, deps: NotifierDeps) -> None:
    """Deliver the event to every matching endpoint and to the video's callback_url, now.

    The deliveries are claimed first (the event and one delivery per target recorded, each held
    for its attempt: one statement shared with the events arriving at the same moment), then
    sent side by side, and each attempt is logged (again shared). Only then is the event
    acknowledged, so a notifier that dies on the way leaves the event to be handled again; its
    claims keep a copy handled at the same moment from sending the same delivery twice (that copy
    is deferred until they are settled). A failed attempt becomes a retry command on the webhook
    schedule (``vidq.notifier.deliveries`` through its delay queues), as does a delivery to an
    endpoint whose slots are all busy.
    """
    incoming = IncomingEvent(
        event.id, event.type, event.video_id, event.timestamp, event.model_dump_json().encode()
    )
    fanout = await deps.log.claim(incoming)
    if not fanout.known:
        log.warning("event %s for an unknown video; nobody to notify", event.id)
        return
    if fanout.claimed:  # its first deliveries go out now (clocks of other hosts may skew this)
        WEBHOOK_EVENT_LAG.observe(max(0.0, time.time() - event.timestamp.timestamp()))
    if len(fanout.claimed) == 1:
        await _first_attempt(fanout.claimed[0], deps)
    else:
        outcomes = await asyncio.gather(
            *(_first_attempt(c, deps) for c in fanout.claimed), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the others are settled; this one is retried with the event
    if fanout.held:
        raise Deferred(f"{fanout.held} deliveries of event {event.id} are held by another attempt")


async def _first_attempt(claim: Claimed, deps: NotifierDeps) -> None:
    """Send a claimed delivery, log the attempt and act on its outcome (retry, disable, give up)."""
    queue = deps.topology.queue(NOTIFIER_DELIVERIES)
    try:
        result = await _post(deps, claim.id, claim.url, claim.secrets, claim.event.id, claim.event.body)
    except ForbiddenDestination as exc:
        await dead_letter(
            deps.publisher, queue, _command(claim.id), reason="permanent", error=str(exc), attempts=1
        )
        return
    if result is None:  # the endpoint is busy and shows no sign of answering soon: retry later
        if not queue.retry_delays:  # no delay queue to wait in: the event waits instead
            with map_asyncpg_errors():
                await repo.release_lease(deps.pool, claim.id)
            raise Deferred(f"{claim.url} has {deps.limiter.limit} deliveries in flight")
        delay = min(queue.retry_delays)
        await deps.publisher.publish(RETRY, queue.delay_queue(delay), _command(claim.id))
        with map_asyncpg_errors():
            await repo.defer_delivery(deps.pool, claim.id, datetime.now(UTC) + timedelta(seconds=delay))
        return
    attempt = Outcome(
        claim.id, claim.webhook_id, claim.client_id, claim.url, claim.event.id, claim.event.type
    )
    if result.ok or result.status_code == GONE:
        await _settle_final(attempt, result, deps)
        return
    if not queue.retry_delays:
        await _record(deps, claim.id, result, status="failed", error=result.error)
        await dead_letter(
            deps.publisher,
            queue,
            _command(claim.id),
            reason="retries-exhausted",
            error=str(result.error),
            attempts=1,
        )
        return
    # The retry is queued before the attempt is logged: a notifier dying in between leaves a
    # retry whose delivery is still untried, not a logged failure that nothing retries.
    delay = await schedule_retry(
        deps.publisher,
        queue,
        _command(claim.id),
        attempt=0,
        error=str(result.error),
        retry_after=result.retry_after,
    )
    next_at = datetime.now(UTC) + timedelta(seconds=delay)
    await _record(deps, claim.id, result, status="pending", error=result.error, next_attempt_at=next_at)
    with map_asyncpg_errors():
        await _failing_for_too_long(attempt, deps)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The delivery an attempt was for, as the outcome's consequences need it."""

    delivery_id: str
    webhook_id: str | None
    client_id: str
    url: str
    event_id: str
    event_type: str

    @classmethod
    def of(cls, row: asyncpg.Record) -> Outcome:
        return cls(
            row["id"], row["webhook_id"], row["client_id"], row["url"], row["event_id"], row["event_type"]
        )


def _next_attempt(deps: NotifierDeps, automatic_attempts: int, retry_after: float | None) -> datetime | None:
    delays = deps.topology.queue(NOTIFIER_DELIVERIES).retry_delays
    if automatic_attempts >= len(delays):
        return None
    return datetime.now(UTC) + timedelta(seconds=choose_delay(delays, automatic_attempts, retry_after))


@db_errors_are_transient
async def handle_deliver_webhook(cmd: DeliverWebhook, deps: NotifierDeps) -> None:
    """POST one event to one endpoint, signed; every attempt goes to the delivery log.

    The path of retries, deferred deliveries, replays, test events and manual retries (an
    event's first attempts are made by :func:`handle_event_for_webhooks`). Idempotent: a settled
    delivery, or one another attempt holds, is skipped; but a failed one whose dead letter an
    operator replayed (``python -m shared.ops dlq replay``) starts a fresh retry schedule. A
    failed attempt raises TransientError, so the consumer policy retries it on the webhook
    schedule (honouring Retry-After); a manual retry is one attempt only. Two writes on the
    way, each shared with the deliveries in flight at the same moment
    (``notifier/delivery_log.py``): the lease (which also reads the secrets), then the attempt
    with the delivery's new state.
    """
    with map_asyncpg_errors():
        if replayed() and await repo.restart_failed_delivery(deps.pool, cmd.delivery_id):
            # an operator sent it back from the dead-letter queue once the endpoint was fixed
            log.info("delivery %s replayed from its dead-letter queue: retried afresh", cmd.delivery_id)
        row = await deps.log.lease(cmd.delivery_id, manual=cmd.manual)
        if row is None:
            if await repo.delivery_in_flight(deps.pool, cmd.delivery_id):
                # Another attempt holds it (or held it when its notifier died): look again later.
                raise Deferred(f"delivery {cmd.delivery_id} is held by another attempt")
            return  # settled already
        if row["secrets"] is None:
            await repo.give_up_delivery(deps.pool, cmd.delivery_id, "the endpoint was disabled or deleted")
            return
    body = bytes(row["body"])
    result = await _post(
        deps, cmd.delivery_id, row["url"], row["secrets"], row["event_id"], body, manual=cmd.manual
    )
    if result is None:
        with map_asyncpg_errors():
            await repo.release_lease(deps.pool, cmd.delivery_id)
        raise Deferred(f"{row['url']} has {deps.limiter.limit} deliveries in flight")
    await _settle(cmd, row, result, deps)


_SUCCEEDED = WEBHOOK_DELIVERIES.labels("success")
_FAILED = WEBHOOK_DELIVERIES.labels("failure")
_FORBIDDEN = WEBHOOK_DELIVERIES.labels("forbidden")


async def _post(
    deps: NotifierDeps,
    delivery_id: str,
    url: str,
    secrets: Sequence[str],
    event_id: str,
    body: bytes,
    *,
    manual: bool = False,
) -> DeliveryResult | None:
    """Sign and POST a delivery in one of its endpoint's slots; ``None`` if no slot came free.

    A destination vidq may not call is logged as a failed attempt and raised.
    """
    slot = deps.limiter.try_acquire(url) or await deps.limiter.acquire(url)
    if slot is None:
        return None
    refused: ForbiddenDestination | None = None
    try:
        result = await deps.sender.send(url, body, signed_headers(secrets, event_id, int(time.time()), body))
    except ForbiddenDestination as exc:
        refused = exc
    finally:
        deps.limiter.release(slot)
    if refused is not None:
        error = str(refused)
        await _record(
            deps, delivery_id, DeliveryResult(None, 0, error), manual=manual, status="failed", error=error
        )
        _FORBIDDEN.inc()
        raise refused
    WEBHOOK_SECONDS.observe(result.latency_ms / 1000)
    (_SUCCEEDED if result.ok else _FAILED).inc()
    return result


async def _record(
    deps: NotifierDeps,
    delivery_id: str,
    result: DeliveryResult,
    *,
    status: str,
    error: str | None,
    manual: bool = False,
    next_attempt_at: datetime | None = None,
) -> None:
    with map_asyncpg_errors():
        await deps.log.record(
            repo.Attempt(delivery_id, result, manual, status, error, next_attempt_at=next_attempt_at)
        )


async def _settle_final(
    attempt: Outcome, result: DeliveryResult, deps: NotifierDeps, *, manual: bool = False
) -> None:
    """Log a success, or a 410 Gone (which disables the endpoint): neither is retried."""
    if result.ok:
        await _record(deps, attempt.delivery_id, result, manual=manual, status="succeeded", error=None)
        return
    reason = f"it answered 410 Gone to {attempt.event_type} {attempt.event_id}"
    await _record(deps, attempt.delivery_id, result, manual=manual, status="failed", error=reason)
    await _gone(reason, attempt, deps)


async def _settle(
    cmd: DeliverWebhook, row: asyncpg.Record, result: DeliveryResult, deps: NotifierDeps
) -> None:
    """Log the attempt with the delivery's new state, then act on it (disable, retry, give up)."""
    attempt = Outcome.of(row)
    if result.ok or result.status_code == GONE:
        await _settle_final(attempt, result, deps, manual=cmd.manual)
        return
    automatic = int(row["automatic_attempts"]) + (0 if cmd.manual else 1)
    # a manual attempt leaves the schedule as it was: a retry still waiting stays in the log
    next_at = row["next_attempt_at"] if cmd.manual else _next_attempt(deps, automatic - 1, result.retry_after)
    status = "pending" if next_at is not None else ("failed" if not cmd.manual else row["status"])
    await _record(
        deps,
        cmd.delivery_id,
        result,
        manual=cmd.manual,
        status=status,
        error=result.error,
        next_attempt_at=next_at,
    )
    if cmd.manual:
        return
    with map_asyncpg_errors():
        if await _failing_for_too_long(attempt, deps):
            return
    if next_at is None:
        # Given up: recorded in the delivery log above, and parked in the DLQ for ops.
        raise RetriesExhausted(f"gave up on {row['url']} after {automatic} attempts: {result.error}")
    raise TransientError(f"{row['url']} answered {result.error}", retry_after=result.retry_after)


GONE = 410


async def _gone(reason: str, attempt: Outcome, deps: NotifierDeps) -> None:
    """410 Gone: the receiver wants nothing more; have the gateway disable the endpoint."""
    if attempt.webhook_id is not None:  # a video's callback_url has nothing to disable
        notice = derived_id(attempt.webhook_id, "webhook.disabled", attempt.delivery_id)
        await _disable(attempt, attempt.webhook_id, reason, notice=notice, deps=deps)


async def _failing_for_too_long(attempt: Outcome, deps: NotifierDeps) -> bool:
    """Disable an endpoint whose every attempt has failed for ``webhook_disable_after_s``."""
    webhook_id = attempt.webhook_id
    if webhook_id is None:
        return False
    since = await repo.failing_since(deps.pool, webhook_id)
    limit = deps.settings.webhook_disable_after_s
    if since is None or (datetime.now(UTC) - since).total_seconds() < limit:
        return False
    reason = f"no delivery to it has succeeded since {since.isoformat(timespec='seconds')}"
    await repo.give_up_delivery(deps.pool, attempt.delivery_id, f"endpoint disabled: {reason}")
    notice = derived_id(webhook_id, "webhook.disabled", since.isoformat())
    await _disable(attempt, webhook_id, reason, notice=notice, deps=deps)
    return True


async def _disable(
    attempt: Outcome, webhook_id: str, reason: str, *, notice: str, deps: NotifierDeps
) -> None:
    """Have the gateway disable the endpoint, and tell its owner by email (once per notice)."""
    report = WebhookDisabledReport(
        id=notice, timestamp=datetime.now(UTC), webhook_id=webhook_id, reason=reason
    )
    await publish_report(deps.publisher, report, app_id="notifier")
    log.warning("endpoint %s disabled: %s", attempt.url, reason)
    command = EmailEndpointDisabled(
        notice_id=notice, client_id=attempt.client_id, webhook_id=webhook_id, url=attempt.url, reason=reason
    )
    await deps.publisher.publish(
        DELIVERIES,
        "notice",
        outgoing(command, message_id=notice, type=command.type, correlation_id=None, app_id="notifier"),
    )


@db_errors_are_transient
async def handle_endpoint_notice(cmd: EmailEndpointDisabled, deps: NotifierDeps) -> None:
    """Email the client's owners that an endpoint was disabled; once per notice and recipient."""
    with map_asyncpg_errors():
        recipients = await lookups.client_emails(deps.pool, cmd.client_id)
    for recipient in recipients:
        message = render_endpoint_disabled(cmd.url, cmd.reason, recipient, cmd.notice_id)
        await _email_once(deps, cmd.notice_id, recipient, message)


@db_errors_are_transient
async def delivery_given_up(cmd: DeliverWebhook, error: PipelineError, deps: NotifierDeps) -> None:
    """on_failure: the schedule is used up (or the endpoint is forbidden): mark it failed."""
    await repo.give_up_delivery(deps.pool, cmd.delivery_id, str(error))


#: How long a send holds its email, in SMTP timeouts: aiosmtplib's timeout applies to each
#: command of the conversation (connect, EHLO, MAIL, RCPT, DATA …), not to the whole send.
EMAIL_HOLD_FACTOR = 10


async def _email_once(deps: NotifierDeps, key: str, recipient: str, message: Email) -> None:
    """Send ``message`` unless the email log says it went (or was refused) already.

    A send holds the email in the log while it runs, so a copy of the same event handled at the
    same moment waits (is deferred) instead of sending it too. A permanent refusal is recorded
    and not retried; a transient failure raises, so the message that asked for the email is
    retried.
    """
    hold = EMAIL_HOLD_FACTOR * deps.settings.smtp_timeout_s
    with map_asyncpg_errors():
        if not await repo.claim_email(deps.pool, key, recipient, hold):
            if await repo.email_status(deps.pool, key, recipient) == "sending":
                # Another send holds it (or held it when its notifier died): look again later.
                raise Deferred(f"the email of {key} to {recipient} is held by another send")
            return  # sent or refused already
    try:
        await deps.email.send(message)
    except PermanentError as exc:
        await repo.email_settled(deps.pool, key, recipient, "failed", str(exc))
        log.warning("email to %s refused for good: %s", recipient, exc)
        return
    except TransientError as exc:
        await repo.email_settled(deps.pool, key, recipient, "sending", str(exc))
        raise
    await repo.email_settled(deps.pool, key, recipient, "sent", None)


@db_errors_are_transient
async def handle_event_for_email(event: VideoReady | VideoFailed, deps: NotifierDeps) -> None:
    """Email the video's ``notify_email`` and the client's addresses; never twice for one event.

    Idempotent on (event id, recipient) through the email log.
    """
    with map_asyncpg_errors():
        target = await lookups.video_target(deps.pool, event.video_id)
    for recipient in target.recipients if target else []:
        await _email_once(deps, event.id, recipient, render(event, recipient))


def _test_event(cmd: SendTestEvent, endpoint: lookups.Subscription) -> lookups.LoggedEvent:
    now = datetime.now(UTC)
    body = {
        "id": cmd.event_id,
        "type": "webhook.test",
        "timestamp": now.isoformat().replace("+00:00", "Z"),  # as every event writes it
        "sequence": 0,
        "data": {"webhook_id": endpoint.webhook_id, "message": "A test event from vidq."},
    }
    encoded = json.dumps(body, separators=(",", ":")).encode()
    return lookups.LoggedEvent(cmd.event_id, "webhook.test", "", now, encoded)


@db_errors_are_transient
async def handle_webhook_request(cmd: ReplayWebhook | SendTestEvent, deps: NotifierDeps) -> None:
    """Replay an endpoint's events, or send it a test event; publishes one DeliverWebhook each.

    Idempotent: deliveries are keyed on (event, endpoint), and a redelivered request restarts only
    deliveries no attempt has touched since.
    """
    with map_asyncpg_errors():
        endpoint = await lookups.subscription(deps.pool, cmd.webhook_id)
        if endpoint is None:
            log.info("webhook %s is disabled or gone; request dropped", cmd.webhook_id)
            return
        if isinstance(cmd, SendTestEvent):
            events, failed_only = [_test_event(cmd, endpoint)], False
        else:
            logged = await lookups.client_events(deps.pool, endpoint.client_id, cmd.since, cmd.until)
            events, failed_only = [e for e in logged if endpoint.wants(e.type)], cmd.failed_only
        started: list[str] = []
        async with deps.pool.acquire() as conn, conn.transaction():
            for event in events:
                await repo.insert_event(
                    conn,
                    event_id=event.id,
                    type_=event.type,
                    video_id=event.video_id,
                    client_id=endpoint.client_id,
                    occurred_at=event.occurred_at,
                    body=event.body,
                )
                delivery = await repo.restart_delivery(
                    conn,
                    delivery_id=cmd.delivery_id if isinstance(cmd, SendTestEvent) else new_id("dlv"),
                    event_id=event.id,
                    client_id=endpoint.client_id,
                    webhook_id=endpoint.webhook_id,
                    url=endpoint.url,
                    failed_only=failed_only,
                )
                if delivery is not None:
                    started.append(delivery)
    log.info("%s for webhook %s: %d deliveries", cmd.kind, cmd.webhook_id, len(started))
    await _send_commands(deps, started)
