"""Webhook subscription use cases, and reading and retrying their delivery log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg

from gateway import delivery_log
from gateway import repository as repo
from gateway.auth import new_signing_secret
from gateway.errors import Conflict, InvalidRequest, LimitReached, NotFound
from gateway.outbox import enqueue
from gateway.repository import Client, Conn
from gateway.schemas import (
    AttemptPublic,
    DeliveryDetail,
    DeliveryPublic,
    WebhookCreate,
    WebhookPublic,
    WebhookUpdate,
    WebhookWithSecret,
)
from gateway.videos import decode_cursor, encode_cursor
from shared.commands import Command, DeliverWebhook, ReplayWebhook, SendTestEvent
from shared.destinations import refusal
from shared.events import unknown_patterns
from shared.ids import new_id
from shared.messaging.codec import outgoing
from shared.messaging.topology import DELIVERIES

#: At most this many retired secrets sign beside the current one (the newest are kept), so a
#: burst of rotations cannot grow the ``webhook-signature`` header without bound.
MAX_RETIRED_SECRETS = 4


_View = TypeVar("_View", bound=WebhookPublic)


def _view(model: type[_View], row: asyncpg.Record) -> _View:
    """A subscription as shown: the retired secrets themselves never, only until when they sign."""
    now = datetime.now(UTC)
    signing_until = [until for until in row["retired_until"] if until > now]
    return model.model_validate({**dict(row), "previous_secrets_sign_until": signing_until})


def _public(row: asyncpg.Record) -> WebhookPublic:
    return _view(WebhookPublic, row)


def _check_patterns(events: list[str]) -> list[str]:
    cleaned = list(dict.fromkeys(e.strip() for e in events if e.strip()))  # each once, in order
    if not cleaned:
        raise InvalidRequest("events needs at least one pattern, e.g. video.* or *")
    bad = unknown_patterns(cleaned)
    if bad:
        raise InvalidRequest(
            f"pattern(s) {', '.join(bad)} match no event type; a pattern is an event type with "
            "* for any part, e.g. video.*, *.failed or *"
        )
    return cleaned


def _check_url(url: str, allow_hosts: tuple[str, ...]) -> str:
    """The URL, unless its host is an address webhooks may never reach (``shared/destinations.py``)."""
    refused = refusal(url, allow_hosts)
    if refused:
        raise InvalidRequest(f"url: {refused}")
    return url


async def create_webhook(
    conn: Conn,
    client: Client,
    body: WebhookCreate,
    *,
    allow_hosts: tuple[str, ...] = (),
    limit: int = 50,
) -> WebhookWithSecret:
    url, events = _check_url(str(body.url), allow_hosts), _check_patterns(body.events)
    async with conn.transaction():
        # the client's row locked: two creations at once cannot both take the last place
        if await repo.count_webhooks_locking_client(conn, client.id) >= limit:
            raise LimitReached(
                f"this client already has {limit} webhook endpoints, the most it may have: delete "
                "one, or subscribe an existing endpoint to more events",
                limit=limit,
            )
        row = await repo.insert_webhook(
            conn,
            webhook_id=new_id("whk"),
            client_id=client.id,
            url=url,
            events=events,
            description=body.description,
            secret=new_signing_secret(),
        )
    return _view(WebhookWithSecret, row)


async def list_webhooks(conn: Conn, client: Client) -> list[WebhookPublic]:
    return [_public(row) for row in await repo.webhook_rows(conn, client.id)]


async def _owned(conn: Conn, client: Client, webhook_id: str) -> asyncpg.Record:
    row = await repo.webhook_row(conn, webhook_id, client.id)
    if row is None:
        raise NotFound(f"no webhook {webhook_id!r}")
    return row


async def get_webhook(conn: Conn, client: Client, webhook_id: str) -> WebhookPublic:
    return _public(await _owned(conn, client, webhook_id))


async def update_webhook(
    conn: Conn,
    client: Client,
    webhook_id: str,
    body: WebhookUpdate,
    *,
    allow_hosts: tuple[str, ...] = (),
) -> WebhookPublic:
    await _owned(conn, client, webhook_id)
    for name in ("url", "events", "enabled"):
        if name in body.model_fields_set and getattr(body, name) is None:
            raise InvalidRequest(f"{name} cannot be null; leave it out to keep it as it is")
    fields: dict[str, object] = {}
    if "description" in body.model_fields_set and body.description is None:
        fields["description"] = ""  # null clears it
    if body.url is not None:
        fields["url"] = _check_url(str(body.url), allow_hosts)
    if body.events is not None:
        fields["events"] = _check_patterns(body.events)
    if body.description is not None:
        fields["description"] = body.description
    if body.enabled is not None:
        fields["enabled"] = body.enabled
        fields["disabled_reason"] = None if body.enabled else "disabled by the client"
    if not fields:
        return await get_webhook(conn, client, webhook_id)
    row = await repo.update_webhook(conn, webhook_id, **fields)
    if row is None:  # deleted by a request that ran meanwhile
        raise NotFound(f"no webhook {webhook_id!r}")
    return _public(row)


async def delete_webhook(conn: Conn, client: Client, webhook_id: str) -> None:
    """One statement: of two deletions at once, one answers 204 and the other 404."""
    if not await repo.delete_webhook(conn, webhook_id, client.id):
        raise NotFound(f"no webhook {webhook_id!r}")


async def rotate_secret(conn: Conn, client: Client, webhook_id: str, grace: timedelta) -> WebhookWithSecret:
    """A new secret; every secret that signed until now keeps signing beside it for ``grace``.

    A secret retired by an earlier rotation keeps its own end if that comes sooner (a zero
    ``grace`` ends them all now), and only the newest :data:`MAX_RETIRED_SECRETS` are kept. The
    row is locked while the new list is made, so two rotations at once lose neither new secret.
    """
    async with conn.transaction():
        row = await repo.webhook_row(conn, webhook_id, client.id, lock=True)
        if row is None:
            raise NotFound(f"no webhook {webhook_id!r}")
        now = datetime.now(UTC)
        ends = now + grace
        retired = [
            (secret, min(until, ends))
            for secret, until in [
                (row["secret"], ends),
                *zip(row["retired_secrets"], row["retired_until"], strict=True),
            ]
            if min(until, ends) > now
        ][:MAX_RETIRED_SECRETS]
        updated = await repo.update_webhook(
            conn,
            webhook_id,
            secret=new_signing_secret(),
            retired_secrets=[secret for secret, _ in retired],
            retired_until=[until for _, until in retired],
        )
    assert updated is not None  # noqa: S101 - locked above
    return _view(WebhookWithSecret, updated)


async def list_deliveries(
    conn: Conn,
    client: Client,
    webhook_id: str,
    *,
    status: str | None,
    cursor: str | None,
    limit: int,
    event_id: str | None = None,
    video_id: str | None = None,
) -> tuple[list[DeliveryPublic], str | None]:
    await _owned(conn, client, webhook_id)
    before = decode_cursor(cursor) if cursor else None
    rows = await delivery_log.deliveries(
        conn, webhook_id, status=status, before=before, limit=limit + 1, event_id=event_id, video_id=video_id
    )
    page, more = rows[:limit], len(rows) > limit
    by_delivery: dict[str, list[AttemptPublic]] = {}
    for attempt in await delivery_log.attempts(conn, [r["id"] for r in page]):
        by_delivery.setdefault(attempt["delivery_id"], []).append(AttemptPublic.model_validate(dict(attempt)))
    items = [
        DeliveryPublic.model_validate({**dict(r), "attempt_log": by_delivery.get(r["id"], [])}) for r in page
    ]
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more and page else None
    return items, next_cursor


async def get_delivery(conn: Conn, client: Client, webhook_id: str, delivery_id: str) -> DeliveryDetail:
    """One delivery with every attempt and the event's body as it was sent."""
    await _owned(conn, client, webhook_id)
    rows = await delivery_log.deliveries(
        conn, webhook_id, status=None, before=None, limit=1, delivery_id=delivery_id, with_body=True
    )
    if not rows:
        raise NotFound(f"no delivery {delivery_id!r} for webhook {webhook_id!r}")
    row = rows[0]
    attempt_log = [
        AttemptPublic.model_validate(dict(a)) for a in await delivery_log.attempts(conn, [row["id"]])
    ]
    return DeliveryDetail.model_validate(
        {**dict(row), "attempt_log": attempt_log, "payload": json.loads(row["body"])}
    )


async def retry_delivery(conn: Conn, client: Client, webhook_id: str, delivery_id: str) -> None:
    """Ask the notifier to attempt a delivery again now (whatever its state)."""
    await _owned(conn, client, webhook_id)
    if await delivery_log.delivery(conn, delivery_id, webhook_id) is None:
        raise NotFound(f"no delivery {delivery_id!r} for webhook {webhook_id!r}")
    await _enabled(conn, client, webhook_id)
    await _ask_notifier(conn, "webhook", DeliverWebhook(delivery_id=delivery_id, manual=True))


#: The AMQP ``type`` of each request to the notifier, as ops see it in the management UI.
_TYPES = {"webhook": "webhook.deliver", "replay": "webhook.replay", "test": "webhook.test"}


async def _ask_notifier(conn: Conn, routing_key: str, command: Command) -> None:
    message = outgoing(
        command,
        message_id=new_id("msg"),
        type=_TYPES[routing_key],
        correlation_id=None,
        app_id="gateway",
    )
    await enqueue(conn, DELIVERIES, routing_key, message)


async def _enabled(conn: Conn, client: Client, webhook_id: str) -> None:
    if not (await _owned(conn, client, webhook_id))["enabled"]:
        raise Conflict("the webhook is disabled; enable it first (PATCH enabled: true)")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def replay(
    conn: Conn, client: Client, webhook_id: str, *, since: datetime, until: datetime | None, failed_only: bool
) -> None:
    """Ask the notifier to send the endpoint its events of ``[since, until)`` again."""
    await _enabled(conn, client, webhook_id)
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidRequest(f"{name} needs a time zone, e.g. 2026-11-22T10:00:00Z")
    if until is not None and until <= since:
        raise InvalidRequest("until must be after since")
    if since > datetime.now(UTC):
        raise InvalidRequest("since is in the future: there is nothing to replay yet")
    if until is not None and until <= _EPOCH:
        raise InvalidRequest("until is before 1970: there is nothing to replay")
    since = max(since, _EPOCH)  # "since the beginning": nothing is older (and year 1 is no date here)
    command = ReplayWebhook(webhook_id=webhook_id, since=since, until=until, failed_only=failed_only)
    await _ask_notifier(conn, "replay", command)


async def send_test(conn: Conn, client: Client, webhook_id: str) -> SendTestEvent:
    """Ask the notifier to send the endpoint a ``webhook.test`` event; returns its ids."""
    await _enabled(conn, client, webhook_id)
    command = SendTestEvent(webhook_id=webhook_id, event_id=new_id("evt"), delivery_id=new_id("dlv"))
    await _ask_notifier(conn, "test", command)
    return command
