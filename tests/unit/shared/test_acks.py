"""Coalesced acknowledgements: one frame per run of settled deliveries, never past an unsettled one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from shared.messaging.acks import CoalescedAcks


@dataclass
class FakeChannel:
    """Records the frames written, in order: ("ack", tag, multiple) or ("nack"/"reject", tag).

    Settles them as RabbitMQ does: a multiple acknowledgement takes outstanding deliveries in
    order until it meets its own tag, so a tag the broker no longer holds is a channel error.
    """

    frames: list[tuple[Any, ...]] = field(default_factory=list)
    outstanding: set[int] = field(default_factory=lambda: set(range(1, 1000)))

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        await asyncio.sleep(0)  # a real write may suspend
        self.frames.append(("ack", delivery_tag, multiple))
        self.settle(delivery_tag, multiple=multiple)

    def settle(self, tag: int, *, multiple: bool = False) -> None:
        if tag not in self.outstanding:
            raise AssertionError(f"unknown delivery tag {tag}")
        self.outstanding -= {t for t in self.outstanding if t <= tag} if multiple else {tag}

    def __hash__(self) -> int:
        return id(self)


@dataclass
class FakeMessage:
    channel: FakeChannel
    delivery_tag: int
    body: bytes = b"{}"
    message_id: str | None = None
    type: str | None = None
    correlation_id: str | None = None
    app_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)

    async def nack(self, requeue: bool = True) -> None:
        self.channel.frames.append(("nack", self.delivery_tag))
        self.channel.settle(self.delivery_tag)

    async def reject(self, requeue: bool = False) -> None:
        self.channel.frames.append(("reject", self.delivery_tag))
        self.channel.settle(self.delivery_tag)


def delivered(acks: CoalescedAcks, channel: FakeChannel, tag: int) -> Any:
    return acks.wrap(cast("AbstractIncomingMessage", FakeMessage(channel, tag)))


async def settle(acks: CoalescedAcks) -> None:
    await asyncio.sleep(0)
    await acks.drain()


async def test_deliveries_settled_together_are_acknowledged_with_one_frame() -> None:
    acks, channel = CoalescedAcks(), FakeChannel()
    deliveries = [delivered(acks, channel, tag) for tag in range(1, 6)]

    for delivery in reversed(deliveries):
        await delivery.ack()
    await settle(acks)

    assert channel.frames == [("ack", 5, True)]


async def test_an_unsettled_delivery_is_never_covered_by_a_multiple_ack() -> None:
    acks, channel = CoalescedAcks(), FakeChannel()
    first, second, third, fourth = (delivered(acks, channel, tag) for tag in range(1, 5))

    await first.ack()
    await third.ack()  # past the gap that 2 (still in hand) leaves: acknowledged alone
    await settle(acks)
    assert channel.frames == [("ack", 1, True), ("ack", 3, False)]

    await second.nack(requeue=True)  # written by the message itself, before it counts as settled
    await fourth.ack()
    await settle(acks)
    assert channel.frames[2:] == [("nack", 2), ("ack", 4, True)]
    assert min(channel.outstanding) == 5


async def test_a_delivery_that_arrived_but_was_not_handed_over_yet_is_not_covered() -> None:
    acks, channel = CoalescedAcks(), FakeChannel()
    first = delivered(acks, channel, 1)
    third = delivered(acks, channel, 3)  # tag 2 is on its way to a handler that has not started

    await first.ack()
    await third.ack()
    await settle(acks)

    assert channel.frames == [("ack", 1, True), ("ack", 3, False)]


async def test_a_new_channel_counts_its_tags_afresh() -> None:
    acks, old, new = CoalescedAcks(), FakeChannel(), FakeChannel()
    await delivered(acks, old, 1).ack()
    await delivered(acks, old, 2).ack()
    await settle(acks)

    await delivered(acks, new, 2).ack()  # tag 1 of the new channel is not settled
    await settle(acks)

    assert old.frames == [("ack", 2, True)]
    assert new.frames == [("ack", 2, False)]


async def test_acknowledgements_are_written_in_the_order_they_were_settled() -> None:
    acks, channel = CoalescedAcks(), FakeChannel()
    deliveries = [delivered(acks, channel, tag) for tag in range(1, 101)]

    for delivery in deliveries[::2]:  # the odd tags first, each past a gap
        await delivery.ack()
    await settle(acks)
    for delivery in deliveries[1::2]:
        await delivery.ack()
    await settle(acks)

    singles = [frame for frame in channel.frames if not frame[2]]
    assert [frame[1] for frame in singles] == list(range(3, 101, 2))
    assert channel.frames[0] == ("ack", 1, True)
    assert channel.frames[-1] == ("ack", 100, True)
    assert len(channel.frames) == 1 + 49 + 1
    assert min(channel.outstanding) == 101


async def test_a_multiple_ack_never_names_a_tag_already_acknowledged() -> None:
    acks, channel = CoalescedAcks(), FakeChannel()
    first, second, third = (delivered(acks, channel, tag) for tag in range(1, 4))
    await third.ack()  # alone: 1 and 2 are in hand
    await settle(acks)
    await second.reject()
    await first.ack()  # settles everything up to 3, but 3 is no longer the broker's
    await settle(acks)

    assert channel.frames == [("ack", 3, False), ("reject", 2), ("ack", 1, True)]
    assert min(channel.outstanding) == 4
