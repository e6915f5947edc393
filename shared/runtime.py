"""Running a worker service: connect robustly, declare, consume, drain on SIGTERM.

``aio_pika.connect_robust`` reconnects and restores channels, queues and consumers by itself
after the broker comes back, but its *first* connect fails fast, so :func:`connect` wraps it in a
retry loop. :class:`Consumers` runs one channel per route (prefetch per route, and a channel
error on one queue does not stop the others) and can pause and resume a route, which the
transcoder uses to stop deliveries while its encode slots are full. It also checks the robust
layer's work: a consume waits until aio-pika has finished restoring the channel (a consume racing
the restore could register one consumer twice), every consume has a consumer tag of its own, and a
route's channel that stays closed on a live connection is replaced (``shared/messaging/channels.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any

import aio_pika
import aiormq
import uvloop
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from shared.backoff import until_reachable
from shared.errors import StartupError, Unreachable
from shared.messaging.acks import CoalescedAcks
from shared.messaging.channels import CHANNEL_STALE_S, StaleChannel
from shared.messaging.consumer import Route, process
from shared.messaging.prepare import BrokerRefused, create_missing_vhost
from shared.messaging.publisher import Publisher
from shared.messaging.topology import Topology, declare, declare_queue

log = logging.getLogger(__name__)

#: A consume that the broker does not answer within this long is retried (the broker is away).
CONSUME_TIMEOUT_S = 10.0
_CONNECT_ERRORS = (ConnectionError, OSError, aiormq.exceptions.AMQPConnectionError, asyncio.TimeoutError)
_CONSUME_ERRORS = (*_CONNECT_ERRORS, aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, RuntimeError)


#: The exit status of a service whose broker or database did not answer in time (sysexits.h).
EX_UNAVAILABLE = 69

#: The exit status of a service that cannot start as configured (``EX_CONFIG`` of sysexits.h).
EX_CONFIG = 78


def run_service(
    main: Callable[[], Coroutine[Any, Any, None]], *, name: str | None = None, description: str = ""
) -> None:
    """Run a service's ``main`` on uvloop: ``python -m <service>``.

    With ``name``, the command line is read first: ``--help`` says what the service is and
    which variables configure it (and starts nothing); an argument it does not take is refused.
    A :class:`StartupError` (a missing vhost, database or role that the service may not
    create) is one log line that says what to do, and exit status 78; not a traceback.
    """
    if name is not None:
        argparse.ArgumentParser(
            prog=f"python -m {name}",
            description=description,
            epilog="Configured by VIDQ_* environment variables (and a .env file in the working "
            "directory); deploy/env/example.env lists them all.",
        ).parse_args()
    try:
        uvloop.run(main())
    except StartupError as exc:
        log.critical("cannot start: %s", exc)
        raise SystemExit(EX_CONFIG) from None
    except Unreachable as exc:  # a supervisor restarts it; the line says what it waited for
        log.critical("cannot start: %s", exc)
        raise SystemExit(EX_UNAVAILABLE) from None
    except KeyboardInterrupt:  # Ctrl-C while it waits for a broker or database
        raise SystemExit(130) from None


class _StuckChannel(Exception):
    """A route's channel that never finished its restore although its connection is back."""


_AIORMQ_CONNECTION = logging.getLogger("aiormq.connection")


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Nothing from ``logger`` meanwhile: a first connection's failure is told once, by the caller."""
    drop = logging.Filter("\0")  # a name no record has: every record is dropped

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def instance_name(service: str) -> str:
    """``gateway@host-1234``: how connections and consumers appear in the management UI."""
    return f"{service}@{socket.gethostname()}-{os.getpid()}"


async def connect(
    url: str, service: str, *, give_up_after: float = 120.0, management: str | None = None
) -> AbstractRobustConnection:
    """Connect to the broker, retrying with backoff until ``give_up_after`` seconds have passed.

    A vhost the broker refuses is created if the user may (``prepare.create_missing_vhost``);
    otherwise the error says what to do.
    """

    async def attempt() -> AbstractRobustConnection:
        try:
            with _quiet(_AIORMQ_CONNECTION):  # the one failure is this log's warning, not also aiormq's error
                return await aio_pika.connect_robust(
                    url, client_properties={"connection_name": instance_name(service)}, reconnect_interval=1.0
                )
        except aiormq.exceptions.InvalidFrameError as exc:
            if "Connection.Close" not in str(exc):  # closed as it opened: the vhost was refused
                raise
            await create_missing_vhost(url, management)
            raise ConnectionError("vhost created; connecting again") from exc
        except (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.AuthenticationError):
            raise BrokerRefused(url) from None

    return await until_reachable(attempt, errors=_CONNECT_ERRORS, what="broker", give_up_after=give_up_after)


class Consumers:
    """The consumers of one service process."""

    def __init__(
        self,
        *,
        service: str,
        connection: AbstractRobustConnection,
        topology: Topology,
        routes: Sequence[Route[Any, Any]],
        deps: Any,
        publisher: Publisher,
        channel_stale_s: float = CHANNEL_STALE_S,
    ) -> None:
        self.service = service
        self.connection = connection
        self.topology = topology
        self.routes = {route.queue.name: route for route in routes}
        self.deps = deps
        self.publisher = publisher
        self.queues: dict[str, AbstractQueue] = {}
        self.tags: dict[str, str] = {}
        self.inflight: set[asyncio.Task[Any]] = set()
        #: The routes that should be consuming (not paused).
        self.wanted: set[str] = set()
        self._resuming: dict[str, asyncio.Task[None]] = {}
        self._stale = {name: StaleChannel(channel_stale_s) for name in self.routes}
        self._consumes = 0
        self._watchdog: asyncio.Task[None] | None = None
        self._acks = CoalescedAcks()

    async def start(self) -> None:
        for name in self.routes:
            await self._open(name)
            await self.resume(name)
        self._watchdog = asyncio.create_task(self._watch_channels(), name="channel watchdog")
        log.info("consuming from %s", ", ".join(self.routes))

    async def _open(self, name: str) -> None:
        """A channel of its own for route ``name``, with its prefetch, and the queue declared."""
        route = self.routes[name]
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=route.prefetch)
        if route.queue.kind == "broadcast":
            queue = await declare_queue(channel, route.queue)
        else:
            queue = (await declare(channel, self.topology, only=[name], exchanges=False))[name]
        self.queues[name] = queue

    def _callback(self, route: Route[Any, Any]) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self.inflight.add(task)
            delivery = self._acks.wrap(message) if route.coalesce_acks else message
            try:
                await process(route, delivery, self.deps, self.publisher)
            finally:
                if task is not None:
                    self.inflight.discard(task)

        return on_message

    async def _consume(self, name: str) -> None:
        queue = self.queues[name]
        if isinstance(queue.channel, AbstractRobustChannel):
            # Not while aio-pika is restoring the channel: it may be re-registering consumers.
            try:
                await asyncio.wait_for(queue.channel.ready(), CONSUME_TIMEOUT_S)
            except TimeoutError:
                if not self.connection.is_closed and self.connection.connected.is_set():
                    # The connection is back but the channel's restore never finished (it can
                    # fail half way, leaving the channel open and never "ready"): a new one.
                    raise _StuckChannel(name) from None
                raise
        self._consumes += 1  # a tag per consume: one the broker still holds is never reused
        tag = f"{instance_name(self.service)}/{name}/{self._consumes}"
        self.tags[name] = await asyncio.wait_for(
            queue.consume(self._callback(self.routes[name]), consumer_tag=tag), CONSUME_TIMEOUT_S
        )

    async def resume(self, name: str) -> None:
        """Start (again) taking deliveries from queue ``name``.

        If the broker is away right now, keep trying in the background until it is back: a
        consumer paused during an outage must not stay paused for good.
        """
        self.wanted.add(name)
        if name in self.tags or name in self._resuming:
            return
        try:
            await self._consume(name)
        except _StuckChannel:
            await self._replace_channel(name)
        except _CONSUME_ERRORS as exc:
            log.warning("cannot consume from %s yet (%r); retrying in the background", name, exc)
            self._resuming[name] = asyncio.create_task(self._resume_later(name))

    async def _resume_later(self, name: str, *, new_channel: bool = False) -> None:
        delay = 0.5
        try:
            while name not in self.tags:
                await asyncio.sleep(delay)
                try:
                    if new_channel:
                        await self._open(name)
                        new_channel = False
                    await self._consume(name)
                except _StuckChannel:
                    log.warning("the channel of %s never finished its restore; opening a new one", name)
                    await self._close_quietly(name)
                    new_channel = True
                except _CONSUME_ERRORS as exc:
                    log.debug("still cannot consume from %s: %r", name, exc)
                    delay = min(delay * 2, 5.0)
            log.info("consuming from %s again", name)
        finally:
            if self._resuming.get(name) is asyncio.current_task():
                del self._resuming[name]

    async def _watch_channels(self, period: float = 1.0) -> None:
        """Replace the channel of a route that should consume but lost it for good."""
        while True:
            await asyncio.sleep(period)
            for name in sorted(self.wanted):
                if self._stale[name].lost(self.queues[name].channel, self.connection):
                    self._stale[name].reset()
                    await self._replace_channel(name)

    async def _replace_channel(self, name: str) -> None:
        log.warning("the channel of %s did not come back after a reconnect; opening a new one", name)
        pending = self._resuming.pop(name, None)
        if pending is not None:
            pending.cancel()
        self.tags.pop(name, None)
        await self._close_quietly(name)
        self._resuming[name] = asyncio.create_task(self._resume_later(name, new_channel=True))

    async def _close_quietly(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self.queues[name].channel.close()  # so the robust layer forgets it

    async def pause(self, name: str) -> None:
        """Stop taking deliveries from queue ``name`` (messages already delivered stay ours)."""
        self.wanted.discard(name)
        pending = self._resuming.pop(name, None)
        if pending is not None:
            pending.cancel()
        tag = self.tags.pop(name, None)
        if tag is not None:
            with contextlib.suppress(Exception):
                await self.queues[name].cancel(tag)

    async def stop(self, grace: float) -> None:
        """Stop consuming, then give in-flight handlers up to ``grace`` seconds to finish."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        for name in {*self.tags, *self._resuming}:
            await self.pause(name)
        if self.inflight:
            log.info("waiting up to %.0f s for %d in-flight message(s)", grace, len(self.inflight))
            _, pending = await asyncio.wait(set(self.inflight), timeout=grace)
            for task in pending:
                task.cancel()  # unacked: the broker redelivers them to another consumer
        await self._acks.drain()


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


#: A background task that ran this long before it failed is restarted at once, as if for the first time.
_SETTLED_S = 60.0


async def supervised(job: Callable[[], Awaitable[None]], what: str, *, first_delay_s: float = 1.0) -> None:
    """Run ``job`` until cancelled, starting it again whenever it ends or fails.

    A service's background work (the gateway's outbox relay, the notifier's listener) handles
    the failures it expects; this is for the ones nobody foresaw — a database that refuses
    connections with an error of its own — which would otherwise leave the service answering
    and consuming without that work, for good. Restarts wait 1 s, doubling up to 30 s, and
    each is logged with its traceback.
    """
    loop = asyncio.get_running_loop()
    delay = first_delay_s
    while True:
        started = loop.time()
        try:
            await job()
            log.error("%s stopped; starting it again in %.0f s", what, delay)
        except Exception:
            log.exception("%s failed; starting it again in %.0f s", what, delay)
        if loop.time() - started > _SETTLED_S:
            delay = first_delay_s
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


def _task_name(job: Callable[[], Awaitable[None]]) -> str:
    """``Audiences.listen``, ``run_retention`` (of a ``partial``): what a log line calls the task."""
    named = job.func if isinstance(job, functools.partial) else job
    return str(getattr(named, "__qualname__", "a background task"))


async def run_until_stopped(
    consumers: Consumers,
    *,
    grace: float,
    background: Iterable[Callable[[], Awaitable[None]]] = (),
    stop: asyncio.Event | None = None,
    before_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Consume (and run ``background`` tasks, :func:`supervised`) until SIGTERM/SIGINT, then drain."""
    stop = stop or stop_event()
    await consumers.start()
    tasks: list[asyncio.Task[None]] = [
        asyncio.ensure_future(supervised(job, _task_name(job))) for job in background
    ]
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("stopping: no new messages; draining")
        if before_stop is not None:
            await before_stop()
        await consumers.stop(grace)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
