"""``python -m shared.bootstrap``: make the broker and the database ready for vidq. Idempotent.

1. Through the RabbitMQ management API (administrator credentials, ``VIDQ_BROKER_ADMIN_URL``):
   the vhost and the user of ``VIDQ_AMQP_URL``; one user per service with only its rights
   (``VIDQ_<SERVICE>_AMQP_URL``, see ``topology.SERVICE_PERMISSIONS``) and a read-only
   ``vidq-monitoring`` user for the management UI (``VIDQ_MONITORING_PASSWORD``); every policy
   of the topology (delivery limits, dead-lettering, DLQ length).
2. Over AMQP: every exchange, work queue, DLQ and delay queue, with their bindings, so that
   dead-letter and retry targets exist before the first failure.
3. The database migrations of every service.

Running it again changes nothing; the services also declare their own queues when they start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from urllib.parse import quote, unquote, urlparse

import aio_pika
import httpx

from shared.db import migrate_all
from shared.logging import configure_logging
from shared.messaging.topology import MONITORING_PERMISSIONS, SERVICE_PERMISSIONS, Topology, build, declare
from shared.settings import AdminSettings

log = logging.getLogger(__name__)

OWNERS = ("gateway", "transcoder", "notifier")
MONITORING_USER = "vidq-monitoring"


def _split_amqp(url: str) -> tuple[str, str, str]:
    parsed = urlparse(url)
    vhost = unquote(parsed.path[1:]) if parsed.path not in ("", "/") else "/"
    return vhost, unquote(parsed.username or "guest"), unquote(parsed.password or "guest")


class Management:
    """The few management-API calls the bootstrap and the tests need (idempotent PUTs)."""

    def __init__(self, admin_url: str) -> None:
        parsed = urlparse(admin_url)
        base = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 15672}"
        auth = (unquote(parsed.username or "guest"), unquote(parsed.password or "guest"))
        self.admin_user = auth[0]
        self.client = httpx.AsyncClient(base_url=base, auth=auth, timeout=30.0)

    async def __aenter__(self) -> Management:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.aclose()

    async def _put(self, path: str, body: dict[str, object]) -> None:
        response = await self.client.put(path, json=body)
        if response.status_code >= 400:  # noqa: PLR2004
            raise RuntimeError(f"PUT {path} failed: {response.status_code} {response.text}")

    async def ensure_vhost(self, vhost: str) -> None:
        await self._put(f"/api/vhosts/{quote(vhost, safe='')}", {"description": "vidq", "tags": "vidq"})

    async def delete_vhost(self, vhost: str) -> None:
        await self.client.delete(f"/api/vhosts/{quote(vhost, safe='')}")

    async def delete_user(self, user: str) -> None:
        await self.client.delete(f"/api/users/{quote(user, safe='')}")

    async def ensure_user(self, user: str, password: str, tags: str = "") -> None:
        await self._put(f"/api/users/{quote(user, safe='')}", {"password": password, "tags": tags})

    async def grant(
        self, vhost: str, user: str, configure: str = ".*", write: str = ".*", read: str = ".*"
    ) -> None:
        await self._put(
            f"/api/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
            {"configure": configure, "write": write, "read": read},
        )

    async def apply_policies(self, vhost: str, topology: Topology) -> None:
        for policy in topology.policies():
            await self._put(
                f"/api/policies/{quote(vhost, safe='')}/{quote(policy.name, safe='')}",
                {
                    "pattern": policy.pattern,
                    "definition": dict(policy.definition),
                    "priority": policy.priority,
                    "apply-to": policy.apply_to,
                },
            )

    async def queue(self, vhost: str, name: str) -> dict[str, object]:
        response = await self.client.get(f"/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
        response.raise_for_status()
        data: dict[str, object] = response.json()
        return data


async def bootstrap_broker(settings: AdminSettings, topology: Topology | None = None) -> None:
    """Vhost, user, permissions and policies, then the whole topology."""
    topology = topology or build(settings)
    vhost, user, password = _split_amqp(str(settings.amqp_url))
    async with Management(str(settings.broker_admin_url)) as api:
        await api.ensure_vhost(vhost)
        await api.grant(vhost, api.admin_user)
        if user != api.admin_user:
            await api.ensure_user(user, password)
            await api.grant(vhost, user)
        for service, url in settings.service_amqp_urls().items():
            _, own_user, own_password = _split_amqp(url)
            rights = SERVICE_PERMISSIONS[service]
            await api.ensure_user(own_user, own_password)
            await api.grant(vhost, own_user, rights.configure, rights.write, rights.read)
        if settings.monitoring_password is not None:
            await api.ensure_user(
                MONITORING_USER, settings.monitoring_password.get_secret_value(), tags="monitoring"
            )
            rights = MONITORING_PERMISSIONS
            await api.grant(vhost, MONITORING_USER, rights.configure, rights.write, rights.read)
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
    asyncio.run(bootstrap(settings))


if __name__ == "__main__":
    main()
