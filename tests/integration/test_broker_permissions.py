"""Each service's broker user can do its job and nothing else (least privilege)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused
from pydantic import BaseModel

from shared.bootstrap import bootstrap_broker
from shared.messaging.codec import outgoing
from shared.messaging.management import Management
from shared.messaging.prepare import (
    MissingExchanges,
    MissingVhost,
    declare_or_check_exchanges,
    prepare_broker,
)
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import (
    EXCHANGES,
    GATEWAY_PROJECTION,
    NOTIFIER_EMAIL,
    SERVICE_PERMISSIONS,
    THUMBNAILER_UPLOADS,
    Topology,
    build,
    declare,
    declare_exchanges,
    transcode_queue_name,
)
from shared.runtime import connect
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
    # a monitoring user of its own: the broker's users are global, and resetting the machine's
    # vidq-monitoring password here locked ops out of the management UI after every test run
    settings = settings_for(
        AdminSettings,
        monitoring_password=unique("pw"),
        monitoring_user=f"vidq-monitoring-{name}",
        **{f"{s}_amqp_url": u for s, u in urls.items()},
    )
    await bootstrap_broker(settings)
    yield urls
    async with Management(ADMIN_URL) as api:
        for user in [*(f"vidq-{service}-{name}" for service in SERVICES), f"vidq-monitoring-{name}"]:
            await api.delete_user(user)


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
            # what a service does at start: check the exchanges, declare and bind its own queues
            await prepare_broker(connection, settings_for(AdminSettings, amqp_url=url), topology)
            channel = await connection.channel()
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
        response = await api.client.get(f"/api/users/vidq-monitoring-{name}")
        assert response.json()["tags"] in (["monitoring"], "monitoring")
        permissions = (await api.client.get(f"/api/permissions/{name}/vidq-monitoring-{name}")).json()
    assert (permissions["configure"], permissions["write"], permissions["read"]) == ("^$", "^$", "^$")


async def _policies(vhost: str) -> dict[str, dict[str, object]]:
    name = vhost.rsplit("/", 1)[-1]
    async with Management(ADMIN_URL) as api:
        response = await api.client.get(f"/api/policies/{quote(name, safe='')}")
        response.raise_for_status()
        return {policy["name"]: policy for policy in response.json()}


async def test_a_service_with_full_rights_on_a_bare_vhost_declares_exchanges_and_sets_policies(
    vhost: str, settings_for: Callable[..., AdminSettings]
) -> None:
    # SPEC: every service declares the topology it needs at start; with one broker user for all
    # (guest on a fresh broker) no bootstrap runs, and the dead-letter paths must exist anyway.
    settings = settings_for(AdminSettings)
    topology = build(settings)
    assert await _policies(vhost) == {}
    connection = await aio_pika.connect(vhost)
    async with connection:
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await (await connection.channel()).get_exchange("vidq.events", ensure=True)

        await prepare_broker(connection, settings, topology)
        await prepare_broker(connection, settings, topology)  # idempotent

        channel = await connection.channel()
        await declare_exchanges(channel, EXCHANGES, passive=True)
        queue = transcode_queue_name("720p")
        declared = await declare(channel, topology, only=[queue], exchanges=False)

        # the policy's dead-lettering is in force: a rejected message lands in the DLQ
        exchange = await channel.get_exchange("vidq.transcode")
        await exchange.publish(aio_pika.Message(b"{}", message_id="m-1"), routing_key="720p")
        message = await declared[queue].get(timeout=5)
        await message.reject(requeue=False)
        dlq = declared[f"{queue}.dlq"]
        for _ in range(50):
            dead = await dlq.get(fail=False)
            if dead is not None:
                break
            await asyncio.sleep(0.1)
        assert dead is not None
        assert dead.message_id == "m-1"

    policies = await _policies(vhost)
    assert set(policies) == {policy.name for policy in topology.policies()}
    definition = policies[queue]["definition"]
    assert definition["dead-letter-exchange"] == "vidq.dlx"  # type: ignore[index]
    assert definition["delivery-limit"] == settings.delivery_limit  # type: ignore[index]


async def test_policies_in_place_are_not_written_again_and_a_changed_one_is_mended(
    vhost: str, settings_for: Callable[..., AdminSettings]
) -> None:
    # every service sets the policies at each start: each write makes the broker re-apply
    # policies to the vhost's queues, so only what is missing or differs is written
    topology = build(settings_for(AdminSettings))
    name = vhost.rsplit("/", 1)[-1]
    queue = transcode_queue_name("720p")
    async with Management(ADMIN_URL) as api:
        assert await api.apply_policies(name, topology) == len(topology.policies())
        assert await api.apply_policies(name, topology) == 0
        await api.client.put(
            f"/api/policies/{name}/{queue}",
            json={"pattern": f"^{queue}$", "definition": {"delivery-limit": 1}, "apply-to": "queues"},
        )
        await api.client.delete(f"/api/policies/{name}/vidq.dlq")
        assert await api.apply_policies(name, topology) == 2
    policies = await _policies(vhost)
    assert set(policies) == {policy.name for policy in topology.policies()}
    assert policies[queue]["definition"]["dead-letter-exchange"] == "vidq.dlx"  # type: ignore[index]


async def test_a_least_privileged_service_only_checks_the_bootstraps_exchanges(
    users: dict[str, str], vhost: str, settings_for: Callable[..., AdminSettings]
) -> None:
    before = await _policies(vhost)
    for url in users.values():
        connection = await _as(url)
        async with connection:
            settings = settings_for(AdminSettings, amqp_url=url)
            assert not await declare_or_check_exchanges(connection, build(settings), wait_s=1)
            await prepare_broker(connection, settings, build(settings))  # refused quietly
    assert await _policies(vhost) == before


async def test_a_least_privileged_service_waits_for_the_exchanges(
    vhost: str, settings_for: Callable[..., AdminSettings]
) -> None:
    name = vhost.rsplit("/", 1)[-1]
    user, password = f"vidq-transcoder-{name}", unique("pw")
    rights = SERVICE_PERMISSIONS["transcoder"]
    async with Management(ADMIN_URL) as api:
        await api.ensure_user(user, password)
        await api.grant(name, user, rights.configure, rights.write, rights.read)
    topology = build(settings_for(AdminSettings))
    try:
        connection = await _as(amqp_url_for(name, user, password))
        async with connection:
            with pytest.raises(MissingExchanges, match=r"shared\.bootstrap"):
                await declare_or_check_exchanges(connection, topology, wait_s=0.3)

            async def bootstrap_later() -> None:
                await asyncio.sleep(0.5)
                admin = await aio_pika.connect(vhost)
                async with admin:
                    await declare_exchanges(await admin.channel(), EXCHANGES)

            later = asyncio.create_task(bootstrap_later())
            assert not await declare_or_check_exchanges(connection, topology, wait_s=10)
            await later
    finally:
        async with Management(ADMIN_URL) as api:
            await api.delete_user(user)


async def test_a_vhost_the_user_may_not_create_is_a_clear_error() -> None:
    vhost, user, password = unique("vidq-none-"), unique("vidq-nobody-"), unique("pw")
    async with Management(ADMIN_URL) as api:
        await api.ensure_user(user, password)  # no tags: the management API refuses it
    try:
        with pytest.raises(MissingVhost, match=rf"vhost '{vhost}' to user '{user}'.*shared\.bootstrap"):
            await connect(amqp_url_for(vhost, user, password), "test", give_up_after=5)
        async with Management(ADMIN_URL) as api:
            assert (await api.client.get(f"/api/vhosts/{vhost}")).status_code == 404
    finally:
        async with Management(ADMIN_URL) as api:
            await api.delete_user(user)
