"""Settings shared by every vidq service, read from ``VIDQ_*`` environment variables.

Each service subclasses :class:`ServiceSettings` and adds its own knobs, named after the service
(``transcoder_qualities`` → ``VIDQ_TRANSCODER_QUALITIES``) so the environment stays one flat,
greppable namespace. Settings are built once in ``main()`` / ``create_app()`` and passed down;
nothing reads the environment at import time. Every variable is listed in
``deploy/env/example.env``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AmqpDsn, BeforeValidator, Field, HttpUrl, PostgresDsn, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def parse_duration(text: str) -> int:
    """Parse ``"30s"``, ``"5m"``, ``"2h"`` or ``"1d"`` into whole seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 2h)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _parse_delays(value: object) -> object:
    if isinstance(value, str):
        return tuple(parse_duration(part) for part in value.split(",") if part.strip())
    return value


#: A retry schedule: the delay before each retry, e.g. ``"5s,5m,30m"`` → ``(5, 300, 1800)``.
Delays = Annotated[tuple[int, ...], NoDecode, BeforeValidator(_parse_delays)]


class ServiceSettings(BaseSettings):
    """Fields every service shares. Defaults run on one machine (SPEC "Configuration")."""

    model_config = SettingsConfigDict(
        env_prefix="VIDQ_",
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    amqp_url: AmqpDsn = AmqpDsn("amqp://guest:guest@127.0.0.1:5672/vidq")
    database_url: PostgresDsn = PostgresDsn("postgresql://vidq@127.0.0.1:5432/vidq")
    storage_dir: Path = Path("var/storage")
    public_url: HttpUrl = HttpUrl("http://127.0.0.1:8000")
    #: The broker's management API, for a service whose own broker user may set its queues'
    #: policies (a user with full rights on a bare vhost; ``shared/messaging/prepare.py``).
    #: Unset: the AMQP host on port 15672, with the AMQP user's credentials.
    broker_management_url: HttpUrl | None = None
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    #: Where each service's numbered SQL migrations live (``<dir>/<service>/NNNN_*.sql``).
    migrations_dir: Path = Path(__file__).resolve().parent.parent / "deploy" / "migrations"
    db_pool_min: int = 1
    db_pool_max: int = 10
    db_command_timeout_s: float = 30.0
    #: Seconds a service waits for in-flight work after SIGTERM before it hands it back.
    shutdown_grace_s: float = 30.0
    #: Port for the Prometheus exporter of worker services (0 = off; the gateway serves /metrics).
    metrics_port: int = 0
    #: Address of that exporter (0.0.0.0 in containers, so Prometheus can scrape it).
    metrics_host: str = "127.0.0.1"

    # Retry schedules: the delay before retry 1, 2, … of a failing message. They name the delay
    # queues (``<queue>.retry.<delay>``), so every service and the bootstrap must agree on them.
    retry_transcode: Delays = (30, 300)
    retry_thumbnail: Delays = (10, 60, 300)
    retry_projection: Delays = (1, 10, 60)
    # Svix's schedule after the immediate attempt: about 27.6 hours in all.
    retry_webhook: Delays = (5, 300, 1800, 7200, 18000, 36000, 36000)
    retry_email: Delays = (30, 300, 1800, 7200)

    # Quorum-queue delivery-limit: the backstop for crash loops (a consumer dying on a message).
    delivery_limit: int = Field(default=5, ge=1)

    def management_api(self) -> str | None:
        """``VIDQ_BROKER_MANAGEMENT_URL`` as a string, if set."""
        return str(self.broker_management_url) if self.broker_management_url else None


class AdminSettings(ServiceSettings):
    """What the bootstrap and the ops tools need beyond a service: broker admin rights."""

    #: The management API with an administrator's credentials (vhost, users, policies).
    broker_admin_url: HttpUrl = HttpUrl("http://guest:guest@127.0.0.1:15672")
    #: Each service's own broker user (least privilege): when set, the bootstrap creates the user
    #: of the URL with only that service's rights, and that service is run with it as its
    #: VIDQ_AMQP_URL. When unset, the service uses VIDQ_AMQP_URL's user.
    gateway_amqp_url: AmqpDsn | None = None
    transcoder_amqp_url: AmqpDsn | None = None
    thumbnailer_amqp_url: AmqpDsn | None = None
    notifier_amqp_url: AmqpDsn | None = None
    #: Password of ``monitoring_user``, a read-only management UI user for ops (none when unset).
    monitoring_password: SecretStr | None = None
    #: That user's name. Broker users are global, not per vhost: a second stack on one broker
    #: (tests, a staging vhost) names its own, or it resets the first one's password.
    monitoring_user: str = "vidq-monitoring"

    def service_amqp_urls(self) -> dict[str, str]:
        """The services that have a broker user of their own, and its URL."""
        urls = {
            "gateway": self.gateway_amqp_url,
            "transcoder": self.transcoder_amqp_url,
            "thumbnailer": self.thumbnailer_amqp_url,
            "notifier": self.notifier_amqp_url,
        }
        return {service: str(url) for service, url in urls.items() if url is not None}


#: The gateway's port when neither ``VIDQ_GATEWAY_PORT`` nor ``VIDQ_PUBLIC_URL`` gives one.
DEFAULT_GATEWAY_PORT = 8000


def gateway_listen_port(public_url: str, gateway_port: int | None) -> int:
    """The port the gateway binds.

    ``VIDQ_GATEWAY_PORT``; else the port of ``VIDQ_PUBLIC_URL`` when that URL is this machine's
    loopback with a port of its own; else 8000. The devstack asks too, to find the port taken
    before it starts anything.
    """
    if gateway_port is not None:
        return gateway_port
    public = urlsplit(public_url)
    if public.port is not None and _loopback(public.hostname or ""):
        return public.port
    return DEFAULT_GATEWAY_PORT


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
