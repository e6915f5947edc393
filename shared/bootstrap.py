"""``python -m shared.bootstrap``: make the broker and the database ready for vidq. Idempotent.

1. Through the RabbitMQ management API (administrator credentials, ``VIDQ_BROKER_ADMIN_URL``):
   the vhost and the user of ``VIDQ_AMQP_URL``; one user per service with only its rights
   (``VIDQ_<SERVICE>_AMQP_URL``, see ``topology.SERVICE_PERMISSIONS``) and a read-only
   ``vidq-monitoring`` user for the management UI (``VIDQ_MONITORING_PASSWORD``; its name is
   ``VIDQ_MONITORING_USER``); every policy of the topology (delivery limits, dead-lettering,
   DLQ length).
2. Over AMQP: every exchange, work queue, DLQ and delay queue, with their bindings, so that
   dead-letter and retry targets exist before the first failure.
3. The database migrations of every service.

Running it again changes nothing; the services also declare their own queues when they start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import aio_pika

from shared.db import migrate_all
from shared.errors import StartupError
from shared.logging import configure_logging
from shared.messaging.management import Management, split_amqp
from shared.messaging.topology import MONITORING_PERMISSIONS, SERVICE_PERMISSIONS, Topology, build, declare
from shared.runtime import EX_CONFIG
from shared.settings import AdminSettings

log = logging.getLogger(__name__)

OWNERS = ("gateway", "transcoder", "notifier")


async def bootstrap_broker(settings: AdminSettings, topology: Topology | None = None) -> None:
    """Vhost, user, permissions and policies, then the whole topology."""
    topology = topology or build(settings)
    vhost, user, password = split_amqp(str(settings.amqp_url))
    for service, url in settings.service_amqp_urls().items():
        own_vhost = split_amqp(url)[0]
        if own_vhost != vhost:  # its user would get rights on VIDQ_AMQP_URL's vhost, not its own
            raise StartupError(
                f"VIDQ_{service.upper()}_AMQP_URL names vhost {own_vhost!r} but VIDQ_AMQP_URL "
                f"names {vhost!r}: every service of one stack shares one vhost; change both (.env "
                "has all five URLs)"
            )
    async with Management(str(settings.broker_admin_url)) as api:
        await api.ensure_vhost(vhost)
        await api.grant(vhost, api.admin_user)
        if user != api.admin_user:
            await api.ensure_user(user, password)
            await api.grant(vhost, user)
        for service, url in settings.service_amqp_urls().items():
            _, own_user, own_password = split_amqp(url)
            rights = SERVICE_PERMISSIONS[service]
            await api.ensure_user(own_user, own_password)
            await api.grant(vhost, own_user, rights.configure, rights.write, rights.read)
        if settings.monitoring_password is not None:
            await api.ensure_user(
                settings.monitoring_user, settings.monitoring_password.get_secret_value(), tags="monitoring"
            )
            rights = MONITORING_PERMISSIONS
            await api.grant(vhost, settings.monitoring_user, rights.configure, rights.write, rights.read)
        await api.apply_policies(vhost, topology)
    connection = await aio_pika.connect(str(settings.amqp_url))
    try:
        async with connection.channel() as channel:
            await declare(channel, topology)
    finally:
        await connection.close()
    log.info(
        "broker ready: vhost %s, %d queues, %d policies",
        vhost,
        len(topology.all_queues()),
        len(topology.policies()),
    )


async def bootstrap(settings: AdminSettings) -> None:
    await bootstrap_broker(settings)
    await migrate_all(settings, OWNERS)
    log.info("database ready: migrations of %s applied", ", ".join(OWNERS))


def main() -> None:
    argparse.ArgumentParser(
        prog="python -m shared.bootstrap", description="Make the broker and database ready."
    ).parse_args()
    settings = AdminSettings()
    configure_logging("bootstrap", settings.log_level, "text")
    try:
        asyncio.run(bootstrap(settings))
    except StartupError as exc:
        log.critical("cannot bootstrap: %s", exc)
        raise SystemExit(EX_CONFIG) from None


if __name__ == "__main__":
    main()
