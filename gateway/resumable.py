"""Resumable uploads (the tus protocol, 1.0.0): a large file sent in pieces, resumed after a break.

A client makes an upload with the file's length and the video's options (``POST /v1/tus``,
``Upload-Length``, ``Upload-Metadata``), then sends the bytes with ``PATCH`` from the offset the
gateway holds (``Upload-Offset``); after a broken connection ``HEAD`` says where to resume, and
only what is missing is sent again. When the last byte is in, the file is probed and recorded
exactly as an upload is. Every tus client speaks this (tus-js-client and Uppy in browsers,
tuspy, TUSKit, tus-android-client); Cloudflare Stream takes large files the same way.

The protocol is a handful of small handlers, written for vidq here and in
``gateway/api/resumable.py`` (Python's tus servers are plugins with storage and state of their
own, where vidq needs its own storage, limits and database). What it keeps sound:

* ``received`` in PostgreSQL is the offset the next PATCH must start at, and it moves only once
  the bytes before it are on disk (``fsync``). A PATCH starts by cutting the partial file back
  to ``received``, so bytes written by a request that died before recording them are sent again,
  never kept unaccounted.
* One request writes at a time: a PATCH holds a lease on the upload (``writer``), renewed
  while its body streams, and writes only within :data:`RENEW_EVERY_S` of a renewal that
  succeeded, straight to the file (no buffer that a late flush could empty into it). A PATCH
  that finds the upload held waits for the lease (up to :data:`WAIT_FOR_WRITER_S`) rather than
  answering ``423`` at once: after a network change the client's resume arrives while its old
  connection, dead but not closed, still holds the upload, which renews only when bytes come,
  so the resume takes over within :data:`LEASE_S`; should the old one wake, its renewal fails
  and it writes nothing more. A body that sends nothing for :data:`STALL_S` counts as ended.
* A failure while recording the finished file (the database away, ffprobe not starting) keeps
  every byte but the last: the upload answers ``Upload-Offset: length - 1``, so the client's
  retry sends one byte and the file is recorded then.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import BadRequest, InvalidRequest, PreconditionFailed

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"
#: ``Upload-Checksum`` algorithms (the checksum extension), as tusd offers them.
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
#: The media type of a PATCH body (and of a POST that carries the first bytes).
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
PREFIX = "/v1/tus"
#: How long a PATCH holds its upload without renewing (a gateway that died lets go after this).
LEASE_S = 10.0
#: A PATCH renews its lease before writing, when the last renewal is older than this.
RENEW_EVERY_S = 2.0
#: A PATCH body that sends nothing for this long is taken as ended (what arrived counts), so
#: that a connection that died without closing is let go (tusd's network timeout is as long).
STALL_S = 60.0
#: How long a PATCH waits for another request that holds the upload (its body stalled, or it
#: has just been given up by its client) before answering 423.
WAIT_FOR_WRITER_S = LEASE_S + 2.0


#: The storage folder of the partial files, one per upload still receiving.
PARTIALS = "resumable"


def partial_key(upload_id: str) -> str:
    """Where an upload's bytes gather in storage until the file is whole."""
    return f"{PARTIALS}/{upload_id}"


def check_version(tus_resumable: str | None) -> None:
    """Every tus request but ``OPTIONS`` names the protocol version it speaks."""
    if tus_resumable != TUS_VERSION:
        raise PreconditionFailed(
            f"this is a tus {TUS_VERSION} endpoint: send Tus-Resumable: {TUS_VERSION}",
            headers={"Tus-Version": TUS_VERSION},
        )


#: The largest offset or length (PostgreSQL's ``bigint``); 19 digits at most.
MAX_BYTES = 2**63 - 1


def parse_offset(value: str | None, header: str) -> int:
    if value is None or not value.isascii() or not value.isdigit() or len(value.lstrip("0")) > 19:  # noqa: PLR2004
        raise InvalidRequest(f"{header} must be a number of bytes (got {value[:40] if value else value!r})")
    number = int(value)
    if number > MAX_BYTES:
        raise InvalidRequest(f"{header} is past any file's size")
    return number


def parse_metadata(header: str) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs (a value may be absent)."""
    pairs: dict[str, str] = {}
    if not header.strip():
        return pairs
    for item in header.split(","):
        parts = item.strip().split(" ")
        if len(parts) > 2 or not parts[0]:  # noqa: PLR2004 - a key and its value
            raise InvalidRequest(f"Upload-Metadata: {item.strip()!r} is not 'key base64value'")
        key = parts[0]
        if key in pairs:
            raise InvalidRequest(f"Upload-Metadata names {key!r} twice")
        value = ""
        if len(parts) == 2:  # noqa: PLR2004
            try:
                value = base64.b64decode(parts[1], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidRequest(
                    f"Upload-Metadata: the value of {key!r} is not base64 of UTF-8 text"
                ) from None
        pairs[key] = value
    return pairs


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>`` of a PATCH body, if the client sent one."""
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:  # tus: 400 for an algorithm the server lacks
        raise BadRequest(f"Upload-Checksum: {algorithm!r} is not one of {', '.join(CHECKSUM_ALGORITHMS)}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise InvalidRequest("Upload-Checksum: the digest is not base64") from None
    if len(digest) != hashlib.new(algorithm).digest_size:
        raise InvalidRequest(f"Upload-Checksum: that is not the length of a {algorithm} digest")
    return algorithm, digest


def http_date(moment: datetime) -> str:
    """An ``Upload-Expires`` value (RFC 9110's HTTP-date)."""
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)


class PartialFileLost(Exception):
    """The partial file holds fewer bytes than the upload recorded (storage lost them)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the partial file holds {size} bytes")
        self.size = size


@dataclass(frozen=True, slots=True)
class Written:
    """What a PATCH body gave: how far the file is on disk now, and why the body stopped."""

    received: int
    gone: bool = False  # the client went away before the body ended
    stalled: bool = False  # the client sent nothing for STALL_S: the body is taken as ended
    lost: bool = False  # another request took the upload over while this one stalled
    too_long: bool = False  # the body went past the upload's length (the excess is not kept)
    #: The body did not match its ``Upload-Checksum`` (or broke off before it could be checked):
    #: none of it is kept.
    corrupt: bool = False


async def append(
    request: Request,
    path: Path,
    offset: int,
    length: int,
    renew: Callable[[], Awaitable[bool]],
    checksum: tuple[str, bytes] | None = None,
) -> Written:
    """Write ``request``'s body into ``path`` from ``offset``, never past ``length``; fsync it.

    ``renew`` extends the request's lease; it is called before a write when the last renewal
    is older than :data:`RENEW_EVERY_S`, and a lost lease stops the writing at once: the bytes
    go straight to the file (``pwrite``, no buffer left to flush later), so a request that lost
    its lease has nothing more to write. A body that sends nothing for :data:`STALL_S` counts
    as ended (``stalled``). With a ``checksum`` (algorithm, digest), the body counts only if it
    arrived whole and matches.
    """
    digest = hashlib.new(checksum[0]) if checksum else None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        size = os.fstat(fd).st_size
        if size < offset:
            raise PartialFileLost(size)
        os.ftruncate(fd, offset)  # bytes past the recorded offset were never acknowledged
        received, renewed = offset, time.monotonic()
        lost = too_long = False
        body = _Body(request)
        while (chunk := await body.next()) is not None:
            if not chunk:
                continue
            if time.monotonic() - renewed > RENEW_EVERY_S:
                if not await renew():
                    lost = True
                    break
                renewed = time.monotonic()
            piece = memoryview(chunk)[: length - received]
            _write_at(fd, piece, received)
            if digest is not None:
                digest.update(piece)
            received += len(piece)
            if len(piece) < len(chunk):
                too_long = True
                break
        if lost:
            return Written(received, lost=True)
        incomplete = body.gone or body.stalled
        corrupt = (
            checksum is not None and digest is not None and (incomplete or digest.digest() != checksum[1])
        )
        if corrupt:
            received = offset  # the next PATCH cuts the file back to here
        await asyncio.to_thread(os.fsync, fd)
    finally:
        os.close(fd)
    return Written(received, gone=body.gone, stalled=body.stalled, too_long=too_long, corrupt=corrupt)


class _Body:
    """A request's body, chunk by chunk, and how it ended."""

    def __init__(self, request: Request) -> None:
        self._chunks = request.stream().__aiter__()
        self.gone = False  # the client went away
        self.stalled = False  # nothing came for STALL_S

    async def next(self) -> bytes | None:
        """The next chunk; ``None`` once the body ended, whatever the way."""
        try:
            async with asyncio.timeout(STALL_S):
                return await anext(self._chunks)
        except StopAsyncIteration:
            return None
        except ClientDisconnect:
            self.gone = True
        except TimeoutError:
            self.stalled = True
        return None


def _write_at(fd: int, data: memoryview, position: int) -> None:
    while data:
        written = os.pwrite(fd, data, position)
        data, position = data[written:], position + written


class TusHeaders:
    """ASGI middleware for ``/v1/tus``: ``Tus-Resumable`` on every answer, and method overrides.

    tus asks ``Tus-Resumable`` of every response (but ``OPTIONS``), problems and the API key's
    401 included, which are made far from the routes. A client behind a proxy that passes only
    GET and POST sends ``X-HTTP-Method-Override: PATCH`` (or ``DELETE``, ``HEAD``) with a POST,
    which tus servers must honour: the request is routed as that method.
    """

    OVERRIDES = frozenset({"PATCH", "DELETE", "HEAD"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST":
            override = Headers(scope=scope).get("x-http-method-override", "").strip().upper()
            if override in self.OVERRIDES:
                scope = {**scope, "method": override}
        if scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"tus-resumable", TUS_VERSION.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_version)
