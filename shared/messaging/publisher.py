"""Publishing with publisher confirms: a publish returns only once the broker has the message.

``AmqpPublisher`` opens its channel with ``publisher_confirms=True, on_return_raises=True`` and
publishes with ``mandatory=True``, so an unroutable, nacked or unconfirmed message is an
exception (:class:`~shared.errors.TransientError`), never a silent loss.
"""

from __future__ import annotations

from typing import Protocol

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError

from shared.errors import TransientError
from shared.messaging.codec import OutgoingMessage, to_amqp


class Publisher(Protocol):
    """Anything that can publish a message to an exchange and wait for the broker's confirm."""

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None: ...


class AmqpPublisher:
    """The real publisher, on its own channel of a robust connection."""

    def __init__(self, channel: AbstractChannel, *, timeout: float = 10.0) -> None:
        self._channel = channel
        self._timeout = timeout
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    async def open(cls, connection: AbstractConnection, *, timeout: float = 10.0) -> AmqpPublisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel, timeout=timeout)

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            # Checked once, passively: a missing exchange means the bootstrap never ran.
            exchange = await self._channel.get_exchange(name, ensure=bool(name))
            self._exchanges[name] = exchange
        return exchange

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        try:
            target = await self._exchange(exchange)
            await target.publish(to_amqp(message), routing_key, mandatory=True, timeout=self._timeout)
        except PublishError as exc:
            raise TransientError(
                f"unroutable: no queue bound to {exchange!r} with key {routing_key!r}"
            ) from exc
        except DeliveryError as exc:
            raise TransientError(f"broker refused the message for {exchange!r}") from exc
        except TimeoutError as exc:
            raise TransientError(f"no confirm from the broker within {self._timeout} s") from exc
        except (AMQPError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            # Outcome unknown (channel or connection lost): the caller republishes the same
            # message_id and the consumer deduplicates.
            self._exchanges.pop(exchange, None)
            raise TransientError(f"publish to {exchange!r} failed: {exc!r}") from exc

    async def close(self) -> None:
        await self._channel.close()
