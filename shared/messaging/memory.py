"""In-memory fakes of the messaging layer, for fast unit tests.

``InMemoryPublisher`` records what was published; ``FakeDelivery`` stands for an incoming
message so the consumer policy can be driven without a broker. Both follow the behaviour suite
in ``tests/contracts/`` that the real implementations also pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter

from shared.errors import TransientError
from shared.messaging.codec import CONTENT_TYPE, OutgoingMessage, decode

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Published:
    exchange: str
    routing_key: str
    message: OutgoingMessage

    def decode(self, target: type[M] | TypeAdapter[M]) -> M:
        return decode(self.message.body, target)


class InMemoryPublisher:
    """Records publishes; ``fail_next`` makes the next N publishes raise ``TransientError``."""

    def __init__(self) -> None:
        self.published: list[Published] = []
        self.fail_next = 0

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise TransientError("in-memory publisher told to fail")
        self.published.append(Published(exchange, routing_key, message))

    def to(self, exchange: str, routing_key: str | None = None) -> list[Published]:
        return [
            p
            for p in self.published
            if p.exchange == exchange and (routing_key is None or p.routing_key == routing_key)
        ]

    def types(self) -> list[str]:
        return [p.message.type for p in self.published]


@dataclass
class FakeDelivery:
    """An incoming message with the attributes the consumer policy reads."""

    body: bytes
    message_id: str | None = "msg_1"
    type: str | None = None
    correlation_id: str | None = None
    content_type: str | None = CONTENT_TYPE
    app_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    routing_key: str | None = ""
    settled: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, model: BaseModel, **kwargs: Any) -> FakeDelivery:
        return cls(body=model.model_dump_json().encode(), **kwargs)

    async def ack(self, multiple: bool = False) -> None:  # noqa: ARG002
        self.settled.append("ack")

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append("reject-requeue" if requeue else "reject")

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:  # noqa: ARG002
        self.settled.append("nack-requeue" if requeue else "nack")
