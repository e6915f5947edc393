"""Acknowledgements coalesced per channel: one ``basic.ack(multiple)`` for a run of settled deliveries.

Written for vidq: a queue that hands a consumer hundreds of deliveries a second (the notifier's)
pays the broker and the client a frame per acknowledgement, and a quorum queue more than a
frame (each settles through its Raft log). :class:`CoalescedAcks` sends one frame for every
delivery settled in the same turn of the event loop instead.

Delivery tags count up from 1 on each channel. The coalescer keeps the highest tag up to which
*every* delivery is settled (acknowledged here, or rejected or nacked through the message
itself) and acknowledges up to it with ``multiple=True``, so a delivery that is still being
handled, or that arrived but whose handler has not started yet, is never covered. The tag of a
``multiple`` frame is always one not acknowledged before: RabbitMQ settles a multiple
acknowledgement by taking outstanding deliveries in order until it meets that very tag, so a tag
it no longer holds would settle every outstanding delivery (and close the channel). A delivery
settled past a gap (an earlier one is still in hand) is acknowledged alone at once, so a slow
delivery never holds the others' prefetch slots. Frames are written in order by one writer per
channel; a rejection or nack is written by the message before the coalescer counts it settled.
State is kept per underlying channel, so after a reconnect the new channel's tags start afresh.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from typing import Any

import aiormq.abc
import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage

log = logging.getLogger(__name__)


class _ChannelAcks:
    """One channel's settled tags and the frames still to write."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self.settled_upto = 0  # every tag up to here is settled and acknowledged (or rejected)
        self.settled: set[int] = set()  # settled tags past a gap (acknowledged alone, or rejected)
        self.acked: list[int] = []  # acknowledged by handlers, frame not yet written
        self.writer: asyncio.Task[None] | None = None

    def ack(self, tag: int) -> None:
        self.acked.append(tag)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    def settled_elsewhere(self, tag: int) -> None:
        self.settled.add(tag)

    async def _write(self) -> None:
        try:
            await asyncio.sleep(0)  # the acknowledgements of this turn of the loop, together
            while self.acked:
                acked, self.acked = self.acked, []
                self.settled.update(acked)
                start = self.settled_upto
                while self.settled_upto + 1 in self.settled:
                    self.settled_upto += 1
                    self.settled.discard(self.settled_upto)
                covered = [tag for tag in acked if start < tag <= self.settled_upto]
                frames = [(max(covered), True)] if covered else []
                frames += [(tag, False) for tag in sorted(acked) if tag > self.settled_upto]
                for tag, multiple in frames:
                    await self.channel.basic_ack(tag, multiple=multiple)
        except Exception:
            # The channel is gone: the broker redelivers what it did not hear about.
            log.critical("could not acknowledge deliveries; the broker will redeliver them", exc_info=True)
        finally:
            self.writer = None

    async def drain(self) -> None:
        while self.writer is not None:
            await asyncio.shield(self.writer)


class CoalescedAcks:
    """The coalescers of a process's channels (one per underlying AMQP channel)."""

    def __init__(self) -> None:
        self._channels: weakref.WeakKeyDictionary[aiormq.abc.AbstractChannel, _ChannelAcks] = (
            weakref.WeakKeyDictionary()
        )

    def wrap(self, message: AbstractIncomingMessage) -> CoalescedDelivery | AbstractIncomingMessage:
        """The delivery to hand the policy (the message itself if its channel is already closed)."""
        try:
            channel = message.channel
        except aiormq.exceptions.ChannelInvalidStateError:
            return message
        acks = self._channels.get(channel)
        if acks is None:
            acks = self._channels[channel] = _ChannelAcks(channel)
        return CoalescedDelivery(message, acks)

    async def drain(self) -> None:
        """Wait until every acknowledgement asked for has been written (or its channel lost)."""
        for acks in list(self._channels.values()):
            await acks.drain()


class CoalescedDelivery:
    """A delivery whose ``ack`` goes through its channel's coalescer (``consumer.Delivery``)."""

    def __init__(self, message: AbstractIncomingMessage, acks: _ChannelAcks) -> None:
        self.message = message
        self._acks = acks
        self._tag = message.delivery_tag or 0

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def message_id(self) -> str | None:
        return self.message.message_id

    @property
    def type(self) -> str | None:
        return self.message.type

    @property
    def correlation_id(self) -> str | None:
        return self.message.correlation_id

    @property
    def app_id(self) -> str | None:
        return self.message.app_id

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.message.headers

    async def ack(self, multiple: bool = False) -> None:
        """Queue the acknowledgement; it is written with the others settled this turn of the loop."""
        if multiple:
            raise ValueError("a coalesced delivery is acknowledged alone")
        self._acks.ack(self._tag)

    async def reject(self, requeue: bool = False) -> None:
        await self.message.reject(requeue=requeue)
        self._acks.settled_elsewhere(self._tag)

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        if multiple:
            raise ValueError("a coalesced delivery is settled alone")
        await self.message.nack(requeue=requeue)
        self._acks.settled_elsewhere(self._tag)
