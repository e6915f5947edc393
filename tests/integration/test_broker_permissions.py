"""Each service's broker user can do its job and nothing else (least privilege)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused
from pydantic import BaseModel

from shared.bootstrap import MONITORING_USER, Management, bootstrap_broker
from shared.messaging.codec import outgoing
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import (
    GATEWAY_PROJECTION,
    NOTIFIER_EMAIL,
    THUMBNAILER_UPLOADS,
    Topology,
    build,
    declare,
    transcode_queue_name,
)
from shared.settings import AdminSettings
from tests.realdeps import ADMIN_URL, amqp_url_for, unique

SERVICES = ("gateway", "transcoder", "thumbnailer", "notifier")


class Probe(BaseModel):
    probe: bool = True


OWN_QUEUE = {
    "gateway": GATEWAY_PROJECTION,
    "transcoder": transcode_queue_name("720p"),
    "thumbnailer": THUMBNAILER_UPLOADS,
    "notifier": NOTIFIER_EMAIL,
}


@pytest.fixture
async def users(vhost: str, settings_for: Callable[..., AdminSettings]) -> AsyncIterator[dict[str, str]]:
    name = vhost.rsplit("/", 1)[-1]
    urls = {s: amqp_url_for(name, f"vidq-{s}-{name}", unique("pw")) for s in SERVICES}
    settings = settings_for(
        AdminSettings, monitoring_password=unique("pw"), **{f"{s}_amqp_url": u for s, u in urls.items()}
    )
    await bootstrap_broker(settings)
    yield urls
    async with Management(ADMIN_URL) as api:
        for service in SERVICES:
            await api.delete_user(f"vidq-{service}-{name}")


async def _as(url: str) -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect(url)


async def test_each_service_declares_its_own_queues_and_publishes_where_it_must(
    users: dict[str, str], settings_for: Callable[..., AdminSettings]
) -> None:
    topology: Topology = build(settings_for(AdminSettings))
    publishes = {
        "gateway": [
            ("vidq.uploads", ""),
            ("vidq.transcode", "720p"),
            ("vidq.events", "video.ready"),
            ("vidq.deliveries", "webhook"),
        ],
        "transcoder": [
            ("vidq.results", "rendition.completed"),
            ("vidq.requeue", transcode_queue_name("720p")),
        ],
        "thumbnailer": [("vidq.results", "thumbnail.completed")],
        "notifier": [("vidq.deliveries", "webhook"), ("vidq.results", "webhook.disabled")],
    }
    for service, url in users.items():
        connection = await _as(url)
        async with connection:
            channel = await connection.channel()
            # what a service does at start: check the exchanges, declare and bind its own queues
            await declare(channel, topology, only=[OWN_QUEUE[service]], exchanges=False)
            publisher = await AmqpPublisher.open(connection)
            for exchange, key in publishes[service]:
                message = outgoing(Probe(), message_id=unique("m"), type="probe", correlation_id=None)
                await publisher.publish(exchange, key, message)  # confirmed


@pytest.mark.parametrize(
    ("service", "forbidden"),
    [
        ("transcoder", ("publish", "vidq.uploads")),
        ("transcoder", ("declare", NOTIFIER_EMAIL)),
        ("thumbnailer", ("publish", "vidq.events")),
        ("notifier", ("publish", "vidq.transcode")),
        ("notifier", ("declare", GATEWAY_PROJECTION)),
        ("gateway", ("declare", transcode_queue_name("720p"))),
        ("gateway", ("exchange", "vidq.events")),
    ],
)
async def test_a_service_is_refused_what_is_not_its_job(
    users: dict[str, str], service: str, forbidden: tuple[str, str]
) -> None:
    action, name = forbidden
    connection = await _as(users[service])
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(ChannelAccessRefused):
            await _attempt(channel, action, name)


async def _attempt(channel: aio_pika.abc.AbstractChannel, action: str, name: str) -> None:
    if action == "publish":
        exchange = await channel.get_exchange(name, ensure=False)
        await exchange.publish(aio_pika.Message(b"{}"), "x", mandatory=False)
        await channel.get_exchange("vidq.events", ensure=True)  # the refusal closes the channel: this sees it
    elif action == "declare":
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    else:
        await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)


async def test_the_monitoring_user_may_look_but_not_touch(users: dict[str, str], vhost: str) -> None:
    name = vhost.rsplit("/", 1)[-1]
    async with Management(ADMIN_URL) as api:
        response = await api.client.get(f"/api/users/{MONITORING_USER}")
        assert response.json()["tags"] in (["monitoring"], "monitoring")
        permissions = (await api.client.get(f"/api/permissions/{name}/{MONITORING_USER}")).json()
    assert (permissions["configure"], permissions["write"], permissions["read"]) == ("^$", "^$", "^$")
