"""Running a worker service: connect robustly, declare, consume, drain on SIGTERM.

``aio_pika.connect_robust`` reconnects and restores channels, queues and consumers by itself
after the broker comes back, but its *first* connect fails fast, so :func:`connect` wraps it in a
retry loop. :class:`Consumers` runs one channel per route (prefetch per route, and a channel
error on one queue does not stop the others) and can pause and resume a route, which the
transcoder uses to stop deliveries while its encode slots are full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from shared.backoff import until_reachable
from shared.messaging.consumer import Route, process
from shared.messaging.publisher import Publisher
from shared.messaging.topology import Topology, declare, declare_queue

log = logging.getLogger(__name__)

#: A consume that the broker does not answer within this long is retried (the broker is away).
CONSUME_TIMEOUT_S = 10.0
_CONNECT_ERRORS = (ConnectionError, OSError, aiormq.exceptions.AMQPConnectionError, asyncio.TimeoutError)


def instance_name(service: str) -> str:
    """``gateway@host-1234``: how connections and consumers appear in the management UI."""
    return f"{service}@{socket.gethostname()}-{os.getpid()}"


async def connect(url: str, service: str, *, give_up_after: float = 120.0) -> AbstractRobustConnection:
    """Connect to the broker, retrying with backoff until ``give_up_after`` seconds have passed."""

    async def attempt() -> AbstractRobustConnection:
        return await aio_pika.connect_robust(
            url, client_properties={"connection_name": instance_name(service)}, reconnect_interval=1.0
        )

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
        self._resuming: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        for name, route in self.routes.items():
            channel = await self.connection.channel()
            await channel.set_qos(prefetch_count=route.prefetch)
            if route.queue.kind == "broadcast":
                queue = await declare_queue(channel, route.queue)
            else:
                queue = (await declare(channel, self.topology, only=[name], exchanges=False))[name]
            self.queues[name] = queue
            await self.resume(name)
        log.info("consuming from %s", ", ".join(self.routes))

    def _callback(self, route: Route[Any, Any]) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self.inflight.add(task)
            try:
                await process(route, message, self.deps, self.publisher)
            finally:
                if task is not None:
                    self.inflight.discard(task)

        return on_message

    async def _consume(self, name: str) -> None:
        self.tags[name] = await asyncio.wait_for(
            self.queues[name].consume(
                self._callback(self.routes[name]), consumer_tag=f"{instance_name(self.service)}/{name}"
            ),
            CONSUME_TIMEOUT_S,
        )

    async def resume(self, name: str) -> None:
        """Start (again) taking deliveries from queue ``name``.

        If the broker is away right now, keep trying in the background until it is back: a
        consumer paused during an outage must not stay paused for good.
        """
        if name in self.tags or name in self._resuming:
            return
        try:
            await self._consume(name)
        except (*_CONNECT_ERRORS, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            log.warning("cannot consume from %s yet (%r); retrying in the background", name, exc)
            self._resuming[name] = asyncio.create_task(self._resume_later(name))

    async def _resume_later(self, name: str) -> None:
        delay = 0.5
        try:
            while name not in self.tags:
                await asyncio.sleep(delay)
                try:
                    await self._consume(name)
                except (*_CONNECT_ERRORS, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
                    log.debug("still cannot consume from %s: %r", name, exc)
                    delay = min(delay * 2, 5.0)
            log.info("consuming from %s again", name)
        finally:
            self._resuming.pop(name, None)

    async def pause(self, name: str) -> None:
        """Stop taking deliveries from queue ``name`` (messages already delivered stay ours)."""
        pending = self._resuming.pop(name, None)
        if pending is not None:
            pending.cancel()
        tag = self.tags.pop(name, None)
        if tag is not None:
            with contextlib.suppress(Exception):
                await self.queues[name].cancel(tag)

    async def stop(self, grace: float) -> None:
        """Stop consuming, then give in-flight handlers up to ``grace`` seconds to finish."""
        for name in list(self.tags):
            await self.pause(name)
        if self.inflight:
            log.info("waiting up to %.0f s for %d in-flight message(s)", grace, len(self.inflight))
            _, pending = await asyncio.wait(set(self.inflight), timeout=grace)
            for task in pending:
                task.cancel()  # unacked: the broker redelivers them to another consumer


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_until_stopped(
    consumers: Consumers,
    *,
    grace: float,
    background: Iterable[Callable[[], Awaitable[None]]] = (),
    stop: asyncio.Event | None = None,
    before_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Consume (and run ``background`` tasks) until SIGTERM/SIGINT, then drain and return."""
    stop = stop or stop_event()
    await consumers.start()
    tasks: list[asyncio.Task[None]] = [asyncio.ensure_future(job()) for job in background]
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
