"""The webhook client's HTTP/1.1 transport: pooled connections, only to allowed addresses.

Written for vidq, because a webhook POST is the notifier's hot path: httpx's default transport
(httpcore over anyio) scans and polls every pooled connection on every request, and its client
layers (request and response models, cookies, auth and redirect handling that webhooks never
use) cost as much again. :meth:`WebhookTransport.post` writes the request whole (its request
line and fixed headers prepared once per URL), parses the answer with httptools (uvicorn's C
parser) on a plain asyncio protocol, and keeps idle connections per origin, the most recently
used first. It connects through ``DestinationGuard.resolve`` to the very address that was
checked, so a name that rebinds to 127.0.0.1 between check and connect is still refused (TLS
verifies and sends SNI for the name). It is also an ``httpx`` transport
(``handle_async_request``), for any caller that wants httpx's models over the same pool.

A connection returns to the pool only when its answer was read to the end and both sides keep
it alive; anything else (an error, a timeout, a body left unread) closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import cast

import httptools
import httpx

from shared.destinations import DestinationGuard

Origin = tuple[str, str, int]
#: ``loop.create_connection`` as the transport calls it (tests pass a recording stand-in).
Connector = Callable[..., Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]]

_PAUSE_ABOVE = 256 * 1024  # bytes of an answer held unread before the socket is paused
_TARGETS_KEPT = 10_000  # URLs whose prepared request head is cached
#: zlib ``wbits`` per content-coding: an answer's kept body is logged decoded.
_DECODERS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True, slots=True)
class Answer:
    """An endpoint's answer: its status, headers (lower-case names) and the start of its body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL, prepared: where to connect, and the request line with the headers every POST has."""

    origin: Origin
    head: bytes


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: a request is written whole, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.paused = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.error: Exception | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # a stream transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = httpx.RemoteProtocolError(f"malformed answer: {exc}")
        if self.buffered > _PAUSE_ABOVE and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - the protocol's signature
        self.closed = True
        self._wake()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = self.status >= 200  # noqa: PLR2004 - 1xx answers are skipped

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()

    # used by the transport
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def usable(self, now: float, expiry: float) -> bool:
        return not self.closed and now - self.idle_since < expiry

    def send(self, head: bytes, body: bytes) -> None:
        self._reset()
        if self.transport is None or self.closed:
            raise httpx.WriteError("the connection is closed")
        self.transport.write(head + body)

    async def answer(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Wait for the status line and headers of the answer."""
        while not self.head_done:
            self._raise_if_broken("without answering")
            await self._wait()
        return self.status, self.headers

    async def body(self) -> AsyncGenerator[bytes, None]:
        """The answer's body, as it arrives (ends early, unmarked, if the server closes)."""
        while True:
            while self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                yield chunk
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            if self.closed:
                return  # a body delimited by the connection's end (or cut short): not reusable
            if self.paused and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
            await self._wait()

    def _raise_if_broken(self, when: str) -> None:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise httpx.RemoteProtocolError(f"the server closed the connection {when}")

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def expire(self) -> None:
        """The request's time is up: whoever waits on its answer gets ``TimeoutError``."""
        if self.error is None:
            self.error = TimeoutError()
        self._wake()


class _Body(httpx.AsyncByteStream):
    """An answer's body; closing it hands the connection back (or closes it)."""

    def __init__(self, pool: WebhookTransport, origin: Origin, connection: _Connection) -> None:
        self.pool = pool
        self.origin = origin
        self.connection = connection
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.connection.body():
            yield chunk

    async def aclose(self) -> None:
        if not self.done:
            self.done = True
            self.pool.check_in(self.origin, self.connection)


async def _kept_body(connection: _Connection, coding: str, keep: int) -> bytes:
    """Up to ``keep`` bytes of the answer's body, decoded (reading stops there)."""
    wbits = _DECODERS.get(coding.strip().lower())
    decoder = zlib.decompressobj(wbits) if wbits is not None else None
    kept = bytearray()
    async with contextlib.aclosing(connection.body()) as chunks:
        async for chunk in chunks:
            if decoder is not None:
                try:
                    chunk = decoder.decompress(chunk, keep - len(kept) + 1)  # noqa: PLW2901
                except zlib.error:
                    decoder = None  # not what it claims to be: keep it as it came
            kept += chunk
            if len(kept) >= keep:
                break
    return bytes(kept[:keep])


def _head(request: httpx.Request) -> bytes:
    """Request line and headers; refuses anything that could split the request."""
    target = request.url.raw_path
    parts = [request.method.encode(), target]
    for name, value in request.headers.raw:
        parts += [name, value]
    if any(b"\r" in part or b"\n" in part for part in parts) or b" " in target:
        raise httpx.LocalProtocolError("a header or the URL holds a line break or a space")
    lines = [b"%s %s HTTP/1.1" % (parts[0], target)]
    lines += [b"%s: %s" % (name, value) for name, value in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _safe(part: bytes) -> bytes:
    if b"\r" in part or b"\n" in part:
        raise httpx.LocalProtocolError("a header or the URL holds a line break")
    return part


def _prepare(url: str, user_agent: str) -> _Target:
    parsed = httpx.URL(url)  # normalised (percent-encoding, IDNA) as httpx would send it
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise httpx.UnsupportedProtocol(f"not an http(s) URL: {url!r}")
    target = _safe(parsed.raw_path)
    if b" " in target:
        raise httpx.LocalProtocolError("the URL holds a space")
    head = b"POST %s HTTP/1.1\r\nhost: %s\r\n" % (target, _safe(parsed.netloc))
    if user_agent:
        head += b"user-agent: %s\r\n" % _safe(user_agent.encode())
    head += b"content-type: application/json\r\n"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return _Target((parsed.scheme, parsed.host, port), head)


class WebhookTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 to webhook endpoints, at most ``max_connections`` open at once."""

    def __init__(
        self,
        guard: DestinationGuard,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int = 200,
        keepalive_expiry: float = 30.0,
        connector: Connector | None = None,
        user_agent: str = "",
    ) -> None:
        self.guard = guard
        self.user_agent = user_agent
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.connector = connector
        self.open = 0
        self._idle: dict[Origin, list[_Connection]] = {}
        self._freed = asyncio.Event()
        self._targets: dict[str, _Target] = {}

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, keep: int, timeout: float
    ) -> Answer:
        """POST ``body`` as JSON with ``headers``; the answer, with at most ``keep`` bytes of its body.

        Raises ``TimeoutError`` when the whole exchange (connecting included) takes longer than
        ``timeout`` seconds, what connecting raises (``ForbiddenDestination``,
        ``httpx.ConnectError``), and ``httpx`` transport errors for a connection that fails or
        answers nonsense. The deadline is one timer on the connection, not a cancellation scope:
        this is the notifier's hot path.
        """
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()
            target = self._targets[url] = _prepare(url, self.user_agent)
        parts = [target.head]
        for name, value in headers.items():
            if not (name.isprintable() and value.isprintable()):
                raise httpx.LocalProtocolError("a header holds a line break or a control character")
            parts.append(b"%s: %s\r\n" % (name.encode(), value.encode()))
        parts.append(b"content-length: %d\r\n\r\n" % len(body))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        connection = self._idle_connection(target.origin)
        if connection is None:
            async with asyncio.timeout_at(deadline):
                connection = await self._check_out(target.origin)
        timer = loop.call_at(deadline, connection.expire)
        try:
            connection.send(b"".join(parts), body)
            status, raw = await connection.answer()
            answer = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}
            coding = answer.get("content-encoding")
            if coding is None and connection.complete:  # the usual answer: short, and all there already
                kept = b"".join(connection.chunks)[:keep]
                connection.chunks.clear()
                connection.buffered = 0
            else:
                kept = await _kept_body(connection, coding or "", keep)
        except BaseException:
            self._discard(connection)
            raise
        finally:
            timer.cancel()
        self.check_in(target.origin, connection)
        return Answer(status, answer, kept)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        head, body = _head(request), await request.aread()
        connection = await self._check_out(origin)
        try:
            connection.send(head, body)
            status, headers = await connection.answer()
        except BaseException:
            self._discard(connection)
            raise
        return httpx.Response(
            status,
            headers=headers,
            stream=_Body(self, origin, connection),
            extensions={"http_version": b"HTTP/1.1"},
        )

    def check_in(self, origin: Origin, connection: _Connection) -> None:
        """Take a connection back after its answer: pooled if reusable, else closed."""
        if connection.complete and connection.keep_alive and not connection.closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(connection)
            return
        self._discard(connection)

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self.open = 0

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        """The most recently used idle connection to ``origin`` that is still good, if any."""
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now, self.keepalive_expiry):
                return connection
            self._discard(connection)
        return None

    async def _check_out(self, origin: Origin) -> _Connection:
        connection = self._idle_connection(origin)
        if connection is not None:
            return connection
        while self.open >= self.max_connections:
            if not self._evict_one_idle():
                self._freed.clear()
                await self._freed.wait()
        self.open += 1
        try:
            return await self._connect(origin)
        except BaseException:
            self._closed_one()
            raise

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        tls = scheme == "https"
        connect = self.connector or asyncio.get_running_loop().create_connection
        error: Exception | None = None
        for address in await self.guard.resolve(host, port):
            try:
                _, protocol = await connect(
                    _Connection,
                    address,
                    port,
                    ssl=self.ssl_context if tls else None,
                    server_hostname=host if tls else None,
                )
            except OSError as exc:
                error = exc
                continue
            if isinstance(protocol, _Connection):
                return protocol
        raise httpx.ConnectError(f"cannot connect to {host}:{port}: {error}")

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._closed_one()

    def _closed_one(self) -> None:
        self.open -= 1
        self._freed.set()

    def _evict_one_idle(self) -> bool:
        """Close the longest idle connection of any origin (to open one elsewhere)."""
        oldest: tuple[float, Origin] | None = None
        for origin, connections in self._idle.items():
            if connections and (oldest is None or connections[0].idle_since < oldest[0]):
                oldest = (connections[0].idle_since, origin)
        if oldest is None:
            return False
        self._discard(self._idle[oldest[1]].pop(0))
        return True
