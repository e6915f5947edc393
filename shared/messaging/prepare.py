"""What a service needs of the broker before it publishes or consumes: exchanges and policies.

Every service "declares the topology it needs idempotently at start" (SPEC). Two deployments
meet here:

* **One broker user with full rights on its vhost** (``guest`` on a fresh RabbitMQ, or any user
  an operator gives a vhost): the service declares every ``vidq.*`` exchange (a no-op when they
  exist) and, through the management API with the same credentials, sets the policies of the
  topology (dead-lettering, delivery limit, overflow; ``Topology.policies``), so a service
  started on a bare vhost has the same dead-letter paths as one set up by the bootstrap.
* **Least privilege** (``python -m shared.bootstrap`` gives each service a user that may
  configure only its own queues, as ``make run`` and the tests use them; docker-compose runs
  every service as the one user ``vidq``): the broker refuses the declarations and the
  management API the policies; the service then only checks that the exchanges exist, waiting
  for the bootstrap if it has not run yet, and leaves the policies to it.

Queues are declared by each consumer (``shared/runtime.py``), with their DLQs and delay queues.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote, urlparse

import aio_pika
import aiormq
import httpx
from aio_pika.abc import AbstractChannel, AbstractConnection

from shared.backoff import until_reachable
from shared.errors import StartupError
from shared.messaging.management import Management, ManagementRefused, split_amqp
from shared.messaging.topology import Topology, declare_exchanges
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

#: The management API's port when ``VIDQ_BROKER_MANAGEMENT_URL`` does not say.
MANAGEMENT_PORT = 15672


class MissingExchanges(StartupError):
    """The exchanges do not exist and this service's broker user may not create them."""


async def declare_or_check_exchanges(
    connection: AbstractConnection, topology: Topology, *, wait_s: float = 120.0
) -> bool:
    """Declare the exchanges; if the broker refuses, wait until they exist (the bootstrap's).

    Returns whether this service declared them. Raises :class:`MissingExchanges` after
    ``wait_s`` seconds without them.
    """
    try:
        async with _channel(connection) as channel:
            await declare_exchanges(channel, topology.exchanges)
        return True
    except aiormq.exceptions.ChannelAccessRefused:
        log.info("broker user may not declare exchanges; checking that the bootstrap made them")

    async def check() -> None:
        try:
            async with _channel(connection) as channel:
                await declare_exchanges(channel, topology.exchanges, passive=True)
        except RuntimeError as exc:
            raise MissingExchanges(str(exc)) from None

    await until_reachable(check, errors=(MissingExchanges,), what="vidq's exchanges", give_up_after=wait_s)
    return False


@contextlib.asynccontextmanager
async def _channel(connection: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    """A plain channel for the declarations, closed after (a refused one is closed already)."""
    channel = await connection.channel()
    try:
        yield channel
    finally:
        with contextlib.suppress(aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, RuntimeError):
            await channel.close()


def management_url(amqp_url: str, configured: str | None = None) -> str:
    """The management API to set policies with: ``configured``, else the AMQP host on 15672.

    Only a broker on the standard AMQP ports is assumed to have its API on the standard port.

    Without credentials of its own, the URL takes the AMQP user's: a service never holds an
    administrator's password, it sets policies only if its own user may.
    """
    amqp = urlparse(amqp_url)
    _, user, password = split_amqp(amqp_url)
    if configured is None and amqp.port not in (None, 5672, 5671):
        # a broker on another port is not the one whose management API listens on 15672
        raise ManagementRefused(
            f"the broker's AMQP port is {amqp.port}, so its management API is not assumed on port "
            f"{MANAGEMENT_PORT}: set VIDQ_BROKER_MANAGEMENT_URL"
        )
    base = urlparse(configured or f"http://{_bracketed(amqp.hostname)}:{MANAGEMENT_PORT}")
    if base.username:
        return base.geturl()
    host = _bracketed(base.hostname)
    port = base.port or MANAGEMENT_PORT
    return f"{base.scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"


def _bracketed(host: str | None) -> str:
    """A host as a URL writes it (an IPv6 address in brackets)."""
    return f"[{host}]" if host and ":" in host else host or ""


async def apply_policies(amqp_url: str, topology: Topology, configured: str | None = None) -> bool:
    """Set the topology's policies if this service's broker user may; never fails the service.

    Returns whether they are in place.
    """
    vhost, user, _ = split_amqp(amqp_url)
    try:
        async with Management(management_url(amqp_url, configured), timeout=5.0) as api:
            changed = await api.apply_policies(vhost, topology)
    except ManagementRefused as exc:
        log.info("policies not set by %s (%s): they are the bootstrap's (shared.bootstrap)", user, exc)
        return False
    except (httpx.HTTPError, RuntimeError) as exc:
        log.warning(
            "could not set the queues' policies through the management API (%r): dead-lettering by "
            "policy and the delivery limit are missing until python -m shared.bootstrap runs",
            exc,
        )
        return False
    log.info(
        "policies in vhost %s: %d of %d set, the rest in place", vhost, changed, len(topology.policies())
    )
    return True


class BrokerRefused(StartupError):
    """The broker refused ``VIDQ_AMQP_URL``'s user or password (ACCESS_REFUSED)."""

    def __init__(self, amqp_url: str) -> None:
        _, user, _ = split_amqp(amqp_url)
        super().__init__(
            f"the broker refused user {user!r} (unknown user or wrong password): check VIDQ_AMQP_URL, "
            "or run python -m shared.bootstrap, which creates the services' users (make run does)"
        )


class VhostClosed(StartupError):
    """The broker closed the connection as it opened: ``VIDQ_AMQP_URL``'s vhost refused its user."""

    def __init__(self, amqp_url: str) -> None:
        vhost, user, _ = split_amqp(amqp_url)
        super().__init__(
            f"the broker closed the connection as it opened: vhost {vhost!r} does not exist or user "
            f"{user!r} has no rights on it; check VIDQ_AMQP_URL (run this where the stack's .env is, "
            "or set it)"
        )


class MissingVhost(StartupError):
    """The broker refused the vhost of ``VIDQ_AMQP_URL`` and this user may not create it."""


class RefusedVhost(ConnectionError):
    """The vhost exists but refused this user: rights not granted (yet); worth another try."""


async def create_missing_vhost(amqp_url: str, configured: str | None = None) -> None:
    """After the broker refused a connection's vhost: create it if this broker user may.

    RabbitMQ closes a connection whose vhost does not exist (or is not the user's) before it
    opens, with no more said to the client than that. A fresh broker has only ``/``, and the
    default ``VIDQ_AMQP_URL`` names ``vidq``: a user that may (``guest`` is an administrator on
    its own machine) creates it and gives itself every right on it, as the bootstrap would.
    Otherwise :class:`MissingVhost` says what to do; a vhost that exists (another service
    created it a moment ago, or the user has no rights on it) is :class:`RefusedVhost`, which
    the caller retries until it gives up.
    """
    vhost, user, _ = split_amqp(amqp_url)
    advice = (
        f"the broker refused vhost {vhost!r} to user {user!r} (it does not exist, or the user has no "
        "rights on it): run python -m shared.bootstrap (make run does), or set VIDQ_AMQP_URL"
    )
    try:
        async with Management(management_url(amqp_url, configured), timeout=5.0) as api:
            found = await api.client.get(f"/api/vhosts/{quote(vhost, safe='')}")
            if found.status_code == 200:  # noqa: PLR2004 - made by another service a moment ago?
                raise RefusedVhost(advice)
            if found.status_code != 404:  # noqa: PLR2004
                found.raise_for_status()
            await api.ensure_vhost(vhost)
            await api.grant(vhost, user)
    except (ManagementRefused, httpx.HTTPError) as exc:
        raise MissingVhost(f"{advice} ({exc!r})") from None
    log.warning("created the broker's vhost %s, with every right on it for %s", vhost, user)


async def prepare_broker(
    connection: AbstractConnection, settings: ServiceSettings, topology: Topology
) -> None:
    """Exchanges, then policies, as this service's broker user is allowed (see the module)."""
    if await declare_or_check_exchanges(connection, topology):
        await apply_policies(str(settings.amqp_url), topology, settings.management_api())
