"""The notifier service: webhook fan-out, webhook deliveries and email."""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from notifier.audiences import AudienceCache
from notifier.delivery_log import DeliveryLog
from notifier.email import SmtpEmailSender
from notifier.handlers import (
    NotifierDeps,
    delivery_given_up,
    handle_deliver_webhook,
    handle_endpoint_notice,
    handle_event_for_email,
    handle_event_for_webhooks,
    handle_webhook_request,
)
from notifier.retention import run_retention
from notifier.settings import NotifierSettings
from notifier.webhook import EndpointLimiter, WebhookSender, guarded_client
from shared.commands import WEBHOOK_REQUEST, DeliverWebhook, EmailEndpointDisabled
from shared.db import create_pool, migrate_all
from shared.events import ANY_EVENT, VideoFailed, VideoReady
from shared.logging import configure_logging
from shared.messaging.consumer import Route
from shared.messaging.prepare import prepare_broker
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import (
    NOTIFIER_DELIVERIES,
    NOTIFIER_EMAIL,
    NOTIFIER_REQUESTS,
    NOTIFIER_WEBHOOKS,
    Topology,
    build,
)
from shared.metrics import serve_metrics
from shared.runtime import Consumers, connect, run_until_stopped

log = logging.getLogger(__name__)

#: The email queue's work: the events that are emailed, and notices of disabled endpoints.
EmailWork = VideoReady | VideoFailed | EmailEndpointDisabled
EMAIL_WORK: TypeAdapter[EmailWork] = TypeAdapter(Annotated[EmailWork, Field(discriminator="type")])


async def handle_email(work: EmailWork, deps: NotifierDeps) -> None:
    if isinstance(work, EmailEndpointDisabled):
        await handle_endpoint_notice(work, deps)
    else:
        await handle_event_for_email(work, deps)


def routes(settings: NotifierSettings, topology: Topology) -> tuple[Route[Any, NotifierDeps], ...]:
    return (
        Route(
            topology.queue(NOTIFIER_WEBHOOKS),
            ANY_EVENT,
            handle_event_for_webhooks,
            prefetch=settings.notifier_concurrency,
            coalesce_acks=True,
        ),
        Route(
            topology.queue(NOTIFIER_DELIVERIES),
            DeliverWebhook,
            handle_deliver_webhook,
            on_failure=delivery_given_up,
            prefetch=settings.notifier_concurrency,
            coalesce_acks=True,
        ),
        Route(topology.queue(NOTIFIER_REQUESTS), WEBHOOK_REQUEST, handle_webhook_request, prefetch=5),
        Route(topology.queue(NOTIFIER_EMAIL), EMAIL_WORK, handle_email, prefetch=10),
    )


async def main() -> None:
    settings = NotifierSettings()
    configure_logging("notifier", settings.log_level, settings.log_format)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    await migrate_all(settings, ("notifier",))
    # the notifier never changes session state, so a released connection needs no reset
    pool = await create_pool(settings, "notifier", reset_sessions=False)
    # claims commit without waiting for the WAL flush (see DeliveryLog); one batch at a time
    claim_pool = await create_pool(
        settings,
        "notifier-claims",
        reset_sessions=False,
        max_size=2,
        server_settings={"synchronous_commit": "off"},
    )
    connection = await connect(str(settings.amqp_url), "notifier", management=settings.management_api())
    client = guarded_client(settings)
    try:
        topology = build(settings)
        await prepare_broker(connection, settings, topology)
        publisher = await AmqpPublisher.open(connection)
        audiences = AudienceCache(pool)
        deps = NotifierDeps(
            settings=settings,
            topology=topology,
            pool=pool,
            publisher=publisher,
            sender=WebhookSender(
                client, timeout=settings.webhook_timeout_s, log_bytes=settings.webhook_response_log_bytes
            ),
            email=SmtpEmailSender(settings.smtp_url, settings.smtp_from, timeout=settings.smtp_timeout_s),
            log=DeliveryLog(
                pool, lease_s=settings.webhook_timeout_s + 30, audiences=audiences, claim_pool=claim_pool
            ),
            limiter=EndpointLimiter(
                settings.notifier_endpoint_concurrency, patience=settings.notifier_endpoint_wait_s
            ),
        )
        consumers = Consumers(
            service="notifier",
            connection=connection,
            topology=topology,
            routes=routes(settings, topology),
            deps=deps,
            publisher=publisher,
        )
        await run_until_stopped(
            consumers,
            grace=settings.shutdown_grace_s,
            background=[audiences.listen, partial(run_retention, pool, settings)],
        )
    finally:
        await client.aclose()
        await connection.close()
        await claim_pool.close()
        await pool.close()
