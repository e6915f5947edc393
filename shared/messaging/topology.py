"""Every ``vidq.*`` exchange, queue, binding and policy, as data, plus :func:`declare`.

Names read well in the RabbitMQ management UI: exchanges are ``vidq.<what flows>``, queues are
``vidq.<consumer>.<purpose>`` except where SPEC fixes them (``vidq.transcode.<quality>``), and
every work queue ``Q`` comes with

* ``Q.dlq`` — where messages that can never succeed wait for a human (bound to ``vidq.dlx``
  with key ``Q``);
* ``Q.retry.<delay>`` — one delay queue per step of Q's retry schedule. A failing message is
  republished there (through ``vidq.retry``) and expires back into ``Q`` (through
  ``vidq.requeue``, key ``Q``) after the delay.

Settings that ops may change later (delivery limit, dead-letter exchange, DLQ length) live in
policies (:meth:`Topology.policies`), never in queue arguments, which are frozen at declaration.
A delay queue is the exception: its TTL and its target *are* its name, so they are arguments;
a new schedule makes new queues rather than silently changing old ones.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from shared.ladder import RUNGS, Quality
from shared.settings import ServiceSettings

ExchangeKind = Literal["direct", "fanout", "topic"]
QueueKind = Literal["work", "dlq", "delay", "broadcast"]

UPLOADS = "vidq.uploads"
TRANSCODE = "vidq.transcode"
EVENTS = "vidq.events"
RESULTS = "vidq.results"
DELIVERIES = "vidq.deliveries"
RETRY = "vidq.retry"
REQUEUE = "vidq.requeue"
DLX = "vidq.dlx"

THUMBNAILER_UPLOADS = "vidq.thumbnailer.uploads"
GATEWAY_PROJECTION = "vidq.gateway.projection"
NOTIFIER_WEBHOOKS = "vidq.notifier.webhooks"
NOTIFIER_DELIVERIES = "vidq.notifier.deliveries"
NOTIFIER_REQUESTS = "vidq.notifier.requests"
NOTIFIER_EMAIL = "vidq.notifier.email"
GATEWAY_LIVE_PREFIX = "vidq.gateway.live"
TRANSCODER_CANCELS_PREFIX = "vidq.transcoder.cancels"

QUORUM: Mapping[str, Any] = {"x-queue-type": "quorum"}


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    kind: ExchangeKind
    purpose: str


@dataclass(frozen=True, slots=True)
class Binding:
    exchange: str
    routing_key: str = ""


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue. Work queues carry their retry schedule; the rest is derived from the name."""

    name: str
    kind: QueueKind = "work"
    bindings: tuple[Binding, ...] = ()
    retry_delays: tuple[int, ...] = ()
    purpose: str = ""
    arguments: Mapping[str, Any] = field(default_factory=lambda: dict(QUORUM))

    @property
    def dlq(self) -> str:
        """Name of this work queue's dead-letter queue."""
        return f"{self.name}.dlq"

    def delay_queue(self, delay_s: int) -> str:
        """Name of the delay queue that holds a retry for ``delay_s`` seconds."""
        return f"{self.name}.retry.{format_delay(delay_s)}"

    @property
    def max_attempts(self) -> int:
        """First delivery plus one per step of the retry schedule."""
        return 1 + len(self.retry_delays)


@dataclass(frozen=True, slots=True)
class PolicySpec:
    name: str
    pattern: str
    definition: Mapping[str, Any]
    priority: int = 10
    apply_to: str = "queues"  # RabbitMQ 3.10 knows only queues / exchanges / all


def format_delay(seconds: int) -> str:
    """``5`` → ``"5s"``, ``300`` → ``"5m"``, ``7200`` → ``"2h"``, ``86400`` → ``"1d"``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def transcode_queue_name(quality: Quality | str) -> str:
    return f"{TRANSCODE}.{Quality(quality).value}"


def instance_queue_name(prefix: str) -> str:
    """A per-process queue name that tells ops which host and process owns it."""
    return f"{prefix}.{socket.gethostname()}-{os.getpid()}"


EXCHANGES: tuple[ExchangeSpec, ...] = (
    ExchangeSpec(UPLOADS, "fanout", "one video.uploaded per accepted upload"),
    ExchangeSpec(TRANSCODE, "direct", "one TranscodeRendition per rendition; key = quality"),
    ExchangeSpec(EVENTS, "topic", "every public lifecycle event; key = event type"),
    ExchangeSpec(RESULTS, "topic", "worker reports to the gateway; key = report type"),
    ExchangeSpec(DELIVERIES, "direct", "webhook work: deliver (per event and endpoint), replay, test"),
    ExchangeSpec(RETRY, "direct", "failed messages on their way to a delay queue"),
    ExchangeSpec(REQUEUE, "direct", "messages back from a delay queue or a DLQ replay; key = queue"),
    ExchangeSpec(DLX, "direct", "messages that can never succeed; key = their work queue"),
)


@dataclass(frozen=True, slots=True)
class Topology:
    """The whole broker layout for one set of retry schedules."""

    work_queues: tuple[QueueSpec, ...]
    exchanges: tuple[ExchangeSpec, ...] = EXCHANGES
    delivery_limit: int = 5

    def queue(self, name: str) -> QueueSpec:
        for spec in self.work_queues:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def transcode_queue(self, quality: Quality | str) -> QueueSpec:
        return self.queue(transcode_queue_name(quality))

    def companions(self, work: QueueSpec) -> tuple[QueueSpec, ...]:
        """The work queue itself, its DLQ and its delay queues, with their bindings."""
        own = QueueSpec(
            work.name,
            "work",
            (*work.bindings, Binding(REQUEUE, work.name)),
            work.retry_delays,
            work.purpose,
        )
        dlq = QueueSpec(work.dlq, "dlq", (Binding(DLX, work.name),), purpose=f"dead letters of {work.name}")
        delays = tuple(
            QueueSpec(
                work.delay_queue(delay),
                "delay",
                (Binding(RETRY, work.delay_queue(delay)),),
                purpose=f"retries of {work.name} wait {format_delay(delay)} here",
                arguments={
                    **QUORUM,
                    "x-message-ttl": delay * 1000,
                    "x-dead-letter-exchange": REQUEUE,
                    "x-dead-letter-routing-key": work.name,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
            for delay in sorted(set(work.retry_delays))
        )
        return (own, dlq, *delays)

    def all_queues(self) -> tuple[QueueSpec, ...]:
        return tuple(q for work in self.work_queues for q in self.companions(work))

    def policies(self) -> tuple[PolicySpec, ...]:
        """One policy per work queue (a queue gets only one policy) and one for every DLQ."""
        per_queue = tuple(
            PolicySpec(
                name=work.name,
                pattern=f"^{re.escape(work.name)}$",
                definition={
                    "delivery-limit": self.delivery_limit,
                    "dead-letter-exchange": DLX,
                    "dead-letter-routing-key": work.name,
                    "dead-letter-strategy": "at-least-once",
                    "overflow": "reject-publish",
                },
            )
            for work in self.work_queues
        )
        dlqs = PolicySpec(
            name="vidq.dlq",
            pattern=r"^vidq\..+\.dlq$",
            definition={"max-length": 1_000_000, "overflow": "reject-publish"},
            priority=5,
        )
        return (*per_queue, dlqs)


@dataclass(frozen=True, slots=True)
class Permissions:
    """A broker user's rights in the vhost: regexes over exchange and queue names."""

    configure: str
    write: str
    read: str


_RETRY_PATH = "retry|dlx|requeue"  # every service retries and dead-letters its own messages
#: Each service's broker rights, and nothing more (the bootstrap creates the users):
#: ``configure`` its own queues; ``write`` its own queues (to bind them) and the exchanges it
#: publishes to (a delay queue's dead-letter target, vidq.requeue, counts as one); ``read`` its
#: queues and the exchanges its queues are bound to. Exchanges are declared by the bootstrap
#: (or by a service whose user has full rights: ``shared/messaging/prepare.py``).
SERVICE_PERMISSIONS: dict[str, Permissions] = {
    "gateway": Permissions(
        configure=r"^vidq\.gateway\..*$",
        write=rf"^vidq\.(gateway\..*|uploads|transcode|events|deliveries|{_RETRY_PATH})$",
        read=rf"^vidq\.(gateway\..*|results|events|{_RETRY_PATH})$",
    ),
    "transcoder": Permissions(
        configure=r"^vidq\.(transcode|transcoder)\..*$",
        write=rf"^vidq\.((transcode|transcoder)\..*|results|{_RETRY_PATH})$",
        read=rf"^vidq\.((transcode|transcoder)\..*|transcode|events|{_RETRY_PATH})$",
    ),
    "thumbnailer": Permissions(
        configure=r"^vidq\.thumbnailer\..*$",
        write=rf"^vidq\.(thumbnailer\..*|results|{_RETRY_PATH})$",
        read=rf"^vidq\.(thumbnailer\..*|uploads|{_RETRY_PATH})$",
    ),
    "notifier": Permissions(
        configure=r"^vidq\.notifier\..*$",
        write=rf"^vidq\.(notifier\..*|deliveries|results|{_RETRY_PATH})$",
        read=rf"^vidq\.(notifier\..*|events|deliveries|{_RETRY_PATH})$",
    ),
}
#: Ops in the management UI: see everything, change nothing (with the ``monitoring`` tag).
MONITORING_PERMISSIONS = Permissions(configure="^$", write="^$", read="^$")


def build(settings: ServiceSettings) -> Topology:
    """The topology for ``settings`` (their retry schedules name the delay queues)."""
    transcode = tuple(
        QueueSpec(
            transcode_queue_name(q),
            bindings=(Binding(TRANSCODE, q.value),),
            retry_delays=settings.retry_transcode,
            purpose=f"{q.value} renditions to encode",
        )
        for q in RUNGS
    )
    return Topology(
        work_queues=(
            *transcode,
            QueueSpec(
                THUMBNAILER_UPLOADS,
                bindings=(Binding(UPLOADS),),
                retry_delays=settings.retry_thumbnail,
                purpose="uploads to make a poster from",
            ),
            QueueSpec(
                GATEWAY_PROJECTION,
                bindings=(Binding(RESULTS, "#"),),
                retry_delays=settings.retry_projection,
                purpose="worker reports to record and turn into events",
            ),
            QueueSpec(
                NOTIFIER_WEBHOOKS,
                bindings=(Binding(EVENTS, "#"),),
                retry_delays=settings.retry_projection,
                purpose="events to fan out to webhook endpoints",
            ),
            QueueSpec(
                NOTIFIER_DELIVERIES,
                bindings=(Binding(DELIVERIES, "webhook"),),
                retry_delays=settings.retry_webhook,
                purpose="webhook deliveries to attempt",
            ),
            QueueSpec(
                NOTIFIER_REQUESTS,
                bindings=(Binding(DELIVERIES, "replay"), Binding(DELIVERIES, "test")),
                retry_delays=settings.retry_projection,
                purpose="replays and test events clients asked for",
            ),
            QueueSpec(
                NOTIFIER_EMAIL,
                bindings=(
                    Binding(EVENTS, "video.ready"),
                    Binding(EVENTS, "video.failed"),
                    Binding(DELIVERIES, "notice"),
                ),
                retry_delays=settings.retry_email,
                purpose="events to email, and notices of disabled endpoints",
            ),
        ),
        delivery_limit=settings.delivery_limit,
    )


def broadcast_queue(prefix: str, *routing_keys: str) -> QueueSpec:
    """A per-process, exclusive, auto-delete classic queue on ``vidq.events`` (nameko BROADCAST).

    Exclusive because only this process reads it, auto-delete because it means nothing once the
    process is gone; classic because quorum queues cannot be exclusive.
    """
    return QueueSpec(
        instance_queue_name(prefix),
        "broadcast",
        tuple(Binding(EVENTS, key) for key in routing_keys),
        arguments={},
    )


async def declare_exchanges(
    channel: AbstractChannel, exchanges: Iterable[ExchangeSpec] = EXCHANGES, *, passive: bool = False
) -> None:
    """Declare (or, with ``passive``, only check) exchanges. Redeclaring is a no-op."""
    for spec in exchanges:
        if passive:
            try:
                await channel.get_exchange(spec.name, ensure=True)
            except aio_pika.exceptions.ChannelNotFoundEntity as exc:
                raise RuntimeError(
                    f"exchange {spec.name} does not exist: run python -m shared.bootstrap first"
                ) from exc
        else:
            await channel.declare_exchange(spec.name, aio_pika.ExchangeType(spec.kind), durable=True)


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    """Declare one queue with its bindings; a no-op when it already exists identically."""
    broadcast = spec.kind == "broadcast"
    queue = await channel.declare_queue(
        spec.name,
        durable=not broadcast,
        exclusive=broadcast,
        auto_delete=broadcast,
        arguments=dict(spec.arguments),
    )
    for binding in spec.bindings:
        await queue.bind(binding.exchange, routing_key=binding.routing_key)
    return queue


async def declare(
    channel: AbstractChannel,
    topology: Topology,
    *,
    only: Iterable[str] | None = None,
    exchanges: bool = True,
) -> dict[str, AbstractQueue]:
    """Declare the exchanges and the work queues (all, or those named in ``only``).

    Every work queue comes with its DLQ and delay queues, so a dead-letter or retry target
    exists before the first failure. A service passes ``exchanges=False``: its broker user may
    not create exchanges, only check them (the bootstrap creates them).
    """
    await declare_exchanges(channel, topology.exchanges, passive=not exchanges)
    wanted = None if only is None else set(only)
    declared: dict[str, AbstractQueue] = {}
    for work in topology.work_queues:
        if wanted is not None and work.name not in wanted:
            continue
        for spec in topology.companions(work):
            declared[spec.name] = await declare_queue(channel, spec)
    return declared
