"""``/v1/webhooks``: subscriptions, secret rotation and the delivery log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from gateway import webhooks
from gateway.api.videos import _PROBLEMS
from gateway.auth import ClientDep
from gateway.deps import DepsDep
from gateway.schemas import (
    DeliveryDetail,
    DeliveryPage,
    SecretRotation,
    WebhookCreate,
    WebhookPage,
    WebhookPublic,
    WebhookUpdate,
    WebhookWithSecret,
)
from shared.db import map_asyncpg_errors

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.post("", status_code=201, response_model=WebhookWithSecret, responses=_PROBLEMS)
async def create_webhook(
    body: WebhookCreate, client: ClientDep, deps: DepsDep, response: Response
) -> WebhookWithSecret:
    """Subscribe a URL to event patterns; the answer carries the signing secret, once."""
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            created = await webhooks.create_webhook(
                conn,
                client,
                body,
                allow_hosts=deps.settings.webhook_allow_hosts,
                limit=deps.settings.max_webhooks_per_client,
            )
    response.headers["Location"] = f"/v1/webhooks/{created.id}"
    return created


@router.get("", response_model=WebhookPage, responses=_PROBLEMS)
async def list_webhooks(client: ClientDep, deps: DepsDep) -> WebhookPage:
    """The client's webhook subscriptions."""
    async with deps.pool.acquire() as conn:
        return WebhookPage(data=await webhooks.list_webhooks(conn, client))


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=_PROBLEMS)
async def read_webhook(webhook_id: str, client: ClientDep, deps: DepsDep) -> WebhookPublic:
    """One webhook subscription."""
    async with deps.pool.acquire() as conn:
        return await webhooks.get_webhook(conn, client, webhook_id)


@router.patch("/{webhook_id}", response_model=WebhookPublic, responses=_PROBLEMS)
async def update_webhook(
    webhook_id: str, body: WebhookUpdate, client: ClientDep, deps: DepsDep
) -> WebhookPublic:
    """Change a subscription's URL, patterns, description, or enable/disable it."""
    async with deps.pool.acquire() as conn:
        return await webhooks.update_webhook(
            conn, client, webhook_id, body, allow_hosts=deps.settings.webhook_allow_hosts
        )


@router.delete("/{webhook_id}", status_code=204, response_class=Response, responses=_PROBLEMS)
async def delete_webhook(webhook_id: str, client: ClientDep, deps: DepsDep) -> Response:
    """Remove a subscription (deliveries in flight stop)."""
    async with deps.pool.acquire() as conn:
        await webhooks.delete_webhook(conn, client, webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookWithSecret, responses=_PROBLEMS)
async def rotate_secret(
    webhook_id: str, client: ClientDep, deps: DepsDep, body: SecretRotation | None = None
) -> WebhookWithSecret:
    """A new signing secret; the secrets in use until now also sign for 24 hours (or `grace_s`).

    Receivers verifying with either pass meanwhile (one signature per secret in
    `webhook-signature`). `{"grace_s": 0}` stops every earlier secret at once, for a leak.
    """
    grace = timedelta(seconds=(body or SecretRotation()).grace_s)
    async with deps.pool.acquire() as conn:
        return await webhooks.rotate_secret(conn, client, webhook_id, grace)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage, responses=_PROBLEMS)
async def list_deliveries(
    webhook_id: str,
    client: ClientDep,
    deps: DepsDep,
    status: Literal["pending", "succeeded", "failed"] | None = None,
    event_id: Annotated[str | None, Query(description="Only the delivery of this event.")] = None,
    video_id: Annotated[str | None, Query(description="Only deliveries of this video's events.")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> DeliveryPage:
    """Delivery log: each event sent to this endpoint with every attempt, newest first.

    Deliveries are kept for 30 days after their event (the operator's
    `VIDQ_DELIVERY_LOG_RETENTION_S`); a replay of every event (not `failed_only`) still reaches
    older ones.
    """
    async with deps.pool.acquire() as conn:
        items, next_cursor = await webhooks.list_deliveries(
            conn,
            client,
            webhook_id,
            status=status,
            cursor=cursor,
            limit=limit,
            event_id=event_id,
            video_id=video_id,
        )
    return DeliveryPage(data=items, next_cursor=next_cursor, has_more=next_cursor is not None)


@router.get("/{webhook_id}/deliveries/{delivery_id}", response_model=DeliveryDetail, responses=_PROBLEMS)
async def get_delivery(webhook_id: str, delivery_id: str, client: ClientDep, deps: DepsDep) -> DeliveryDetail:
    """One delivery: its attempts, and the event's body (`payload`) as the endpoint received it."""
    async with deps.pool.acquire() as conn:
        return await webhooks.get_delivery(conn, client, webhook_id, delivery_id)


@router.post("/{webhook_id}/deliveries/{delivery_id}/retry", status_code=202, responses=_PROBLEMS)
async def retry_delivery(
    webhook_id: str, delivery_id: str, client: ClientDep, deps: DepsDep
) -> dict[str, str]:
    """Send a delivery again now."""
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            await webhooks.retry_delivery(conn, client, webhook_id, delivery_id)
    return {"status": "queued", "delivery_id": delivery_id}


@router.post("/{webhook_id}/replay", status_code=202, responses=_PROBLEMS)
async def replay_webhook(
    webhook_id: str,
    client: ClientDep,
    deps: DepsDep,
    since: Annotated[
        datetime, Query(description="Re-send events that occurred at or after this time (RFC 3339).")
    ],
    until: Annotated[datetime | None, Query(description="… and before this time (default: now).")] = None,
    failed_only: Annotated[bool, Query(description="Only events whose delivery failed for good.")] = False,
) -> dict[str, str]:
    """Re-send the endpoint's events since a time (each a new delivery attempt, retried as usual)."""
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            await webhooks.replay(conn, client, webhook_id, since=since, until=until, failed_only=failed_only)
    return {"status": "queued"}


@router.post("/{webhook_id}/test", status_code=202, responses=_PROBLEMS)
async def test_webhook(webhook_id: str, client: ClientDep, deps: DepsDep) -> dict[str, str]:
    """Send a ``webhook.test`` event to the endpoint; follow it in the delivery log."""
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            sent = await webhooks.send_test(conn, client, webhook_id)
    return {"status": "queued", "event_id": sent.event_id, "delivery_id": sent.delivery_id}
