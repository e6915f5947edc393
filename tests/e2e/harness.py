"""What an end-to-end test talks to: a webhook receiver, an SMTP server, an SSE reader.

The receiver is a real HTTP server (uvicorn) that records every request and can be told to
fail; the SMTP server is aiosmtpd; both run inside the test process, the stack outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class WebhookReceiver:
    """An ASGI app recording POSTs.

    ``fail[path] = n`` answers the next n requests to ``path`` with ``status``; ``script[path]``
    is a list of (status, headers) answers used first, one per request; ``hang[path]`` seconds
    pass before any answer to ``path``; ``hangs[path]`` is a list of such delays used first, one
    per request (e.g. ``[3.0]``: only the first request hangs).
    """

    requests: list[Received] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    status: int = 500
    hang: dict[str, float] = field(default_factory=dict)
    hangs: dict[str, list[float]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    times: list[float] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        self.requests.append(Received(path, {k.decode(): v.decode() for k, v in scope["headers"]}, body))
        self.times.append(asyncio.get_running_loop().time())
        self.arrived.set()
        delay = self.hangs[path].pop(0) if self.hangs.get(path) else self.hang.get(path, 0.0)
        if delay:
            await asyncio.sleep(delay)
        status, extra = 200, dict[str, str]()
        if self.script.get(path):
            status, extra = self.script[path].pop(0)
        elif self.fail.get(path, 0) > 0:
            self.fail[path] -= 1
            status = self.status
        headers = [(b"content-type", b"text/plain"), *((k.encode(), v.encode()) for k, v in extra.items())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok" if status == 200 else b"nope"})

    def at(self, path: str, event_type: str | None = None) -> list[Received]:
        return [
            r
            for r in self.requests
            if r.path == path and (event_type is None or r.json().get("type") == event_type)
        ]


@contextlib.asynccontextmanager
async def serve(app: Any, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


class Mailbox:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()
        #: Recipients to answer ``451`` (try again later) so many more times.
        self.defer: dict[str, int] = {}

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        with self.lock:
            if self.defer.get(address, 0) > 0:
                self.defer[address] -= 1
                return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(message)
        return "250 OK"


@contextlib.contextmanager
def smtp_server(port: int) -> Any:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


@dataclass(frozen=True)
class SseEvent:
    id: str
    event: str
    data: dict[str, Any]


async def read_sse(client: httpx.AsyncClient, url: str, *, timeout: float = 120.0) -> list[SseEvent]:
    """Read a server-sent event stream until the server ends it."""
    events: list[SseEvent] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(timeout), client.stream("GET", url, timeout=None) as response:
        response.raise_for_status()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line:
                if "data" in current:
                    events.append(
                        SseEvent(current.get("id", ""), current.get("event", ""), json.loads(current["data"]))
                    )
                current = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            current[key] = value.removeprefix(" ")
    return events


#: A Prometheus sample: its name and its labels, sorted.
Sample = tuple[str, tuple[tuple[str, str], ...]]


async def scrape(url: str) -> dict[Sample, float]:
    """Every sample a Prometheus endpoint serves (``…/metrics``), by name and labels."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url)).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def until(predicate: Any, timeout: float = 60.0, interval: float = 0.1) -> None:
    """Wait for ``predicate()`` to become true (never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met within the deadline")
        await asyncio.sleep(interval)
