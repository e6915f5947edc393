"""Publishing with publisher confirms: a publish returns only once the broker has the message.

``AmqpPublisher`` opens its channel with ``publisher_confirms=True, on_return_raises=True`` and
publishes with ``mandatory=True``, so an unroutable, nacked or unconfirmed message is an
exception (:class:`~shared.errors.TransientError`), never a silent loss. A publish never waits
longer than its timeout, even for a channel that is being restored, and a channel that the robust
layer failed to bring back is replaced (``shared/messaging/channels.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError

from shared.errors import TransientError
from shared.messaging.channels import CHANNEL_STALE_S, StaleChannel
from shared.messaging.codec import OutgoingMessage, amqp_properties
from shared.metrics import PUBLISHED

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Anything that can publish a message to an exchange and wait for the broker's confirm."""

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None: ...


class AmqpPublisher:
    """The real publisher, on its own channel of a robust connection."""

    def __init__(
        self,
        channel: AbstractChannel,
        *,
        timeout: float = 10.0,
        connection: AbstractConnection | None = None,
        stale_s: float = CHANNEL_STALE_S,
    ) -> None:
        self._channel = channel
        self._timeout = timeout
        self._connection = connection
        self._checked: set[str] = set()  # exchanges known to exist
        self._stale = StaleChannel(stale_s)
        self._replacing = asyncio.Lock()

    @classmethod
    async def open(
        cls, connection: AbstractConnection, *, timeout: float = 10.0, stale_s: float = CHANNEL_STALE_S
    ) -> AmqpPublisher:
        return cls(
            await cls._new_channel(connection), timeout=timeout, connection=connection, stale_s=stale_s
        )

    @staticmethod
    async def _new_channel(connection: AbstractConnection) -> AbstractChannel:
        return await connection.channel(publisher_confirms=True, on_return_raises=True)

    async def _replace_lost_channel(self) -> None:
        """After a failed publish: a channel lost for good (see channels.py) is replaced."""
        async with self._replacing:  # concurrent publishers replace it once
            if self._connection is not None and self._stale.lost(self._channel, self._connection):
                await self._replace(self._connection)

    async def _replace(self, connection: AbstractConnection) -> None:
        log.warning("the publishing channel did not come back after a reconnect; opening a new one")
        lost, self._checked = self._channel, set()
        with contextlib.suppress(Exception):
            await lost.close()
        try:
            self._channel = await asyncio.wait_for(self._new_channel(connection), self._timeout)
        except (TimeoutError, AMQPError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            log.warning("could not open a new publishing channel yet: %r", exc)
            self._channel = lost
        else:
            self._stale.reset()

    async def _check_exchange(self, name: str) -> None:
        if name not in self._checked:
            # Checked once, passively: a missing exchange means the bootstrap never ran.
            await self._channel.get_exchange(name, ensure=bool(name))
            self._checked.add(name)

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        try:
            # The whole publish, waiting for a channel being restored included, is bounded.
            async with asyncio.timeout(self._timeout):
                await self._check_exchange(exchange)
                # the broker client's own publish, which aio-pika's Exchange.publish wraps
                channel = await self._channel.get_underlay_channel()
                await channel.basic_publish(
                    message.body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=amqp_properties(message),
                    mandatory=True,
                    timeout=self._timeout,
                )
        except PublishError as exc:
            raise TransientError(
                f"unroutable: no queue bound to {exchange!r} with key {routing_key!r}"
            ) from exc
        except DeliveryError as exc:
            raise TransientError(f"broker refused the message for {exchange!r}") from exc
        except TimeoutError as exc:
            self._checked.discard(exchange)
            await self._replace_lost_channel()
            raise TransientError(f"no confirm from the broker within {self._timeout} s") from exc
        except (AMQPError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            # Outcome unknown (channel or connection lost): the caller republishes the same
            # message_id and the consumer deduplicates.
            self._checked.discard(exchange)
            await self._replace_lost_channel()
            raise TransientError(f"publish to {exchange!r} failed: {exc!r}") from exc
        PUBLISHED.labels(exchange).inc()

    async def close(self) -> None:
        await self._channel.close()
