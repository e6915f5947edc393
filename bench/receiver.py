"""A webhook receiver fast enough never to be what a webhook benchmark measures.

A hand-written HTTP/1.1 server on a bare asyncio ``Protocol`` (uvloop), run as its own process
(``python -m bench.receiver --port N``): it parses just enough of a request (request line,
headers, ``Content-Length`` body; keep-alive and pipelining), answers ``200 ok`` at once and
records, per request, the path, the ``webhook-id`` header (the event id) and ``time.time()`` at
the moment the whole request was read. Every ``--sample-every``-th request is also kept whole
(headers and body), so the benchmark can verify its Standard Webhooks signature.

Control requests (``/_``-prefixed paths) are not recorded: ``GET /_count`` answers the number of
requests recorded, ``GET /_dump`` all records and samples as JSON, ``POST /_reset`` forgets them.
On 2 cores a general-purpose server (uvicorn with h11) would cost the notifier a good part of a
core; this one costs a few microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

import uvloop

_HEAD_END = b"\r\n\r\n"
_OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
_MAX_HEAD = 64 * 1024


@dataclass
class Log:
    """What the receiver saw: (receive time, path, webhook-id) per request, and samples."""

    sample_every: int
    records: list[tuple[float, str, str]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, received: float, path: str, headers: dict[str, str], body: bytes) -> None:
        self.records.append((received, path, headers.get("webhook-id", "")))
        if self.sample_every and len(self.records) % self.sample_every == 1:
            self.samples.append({"path": path, "headers": headers, "body": body.decode(errors="replace")})

    def dump(self) -> bytes:
        return json.dumps({"records": self.records, "samples": self.samples}).encode()

    def reset(self) -> None:
        self.records.clear()
        self.samples.clear()


def _response(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


class _Connection(asyncio.Protocol):
    def __init__(self, log: Log) -> None:
        self.log = log
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._one_request():
            pass
        if len(self.buffer) > _MAX_HEAD and _HEAD_END not in self.buffer and self.transport:
            self.transport.close()

    def _one_request(self) -> bool:
        """Handle one complete request from the buffer; False when it holds no whole request."""
        end = self.buffer.find(_HEAD_END)
        if end < 0:
            return False
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < end + 4 + length:
            return False
        received = time.time()
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        method, path, _ = lines[0].split(" ", 2)
        if self.transport is not None:
            self.transport.write(self._answer(method, path, headers, body, received))
        return True

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes, received: float) -> bytes:
        if not path.startswith("/_"):
            self.log.add(received, path, headers, body)
            return _OK
        if path == "/_count":
            return _response(str(len(self.log.records)).encode())
        if path == "/_dump":
            return _response(self.log.dump())
        if path == "/_reset" and method == "POST":
            self.log.reset()
            return _response(b"0")
        return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


async def serve(port: int, sample_every: int) -> None:
    log = Log(sample_every)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(log), "127.0.0.1", port, backlog=1024)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sample-every", type=int, default=50, help="keep every Nth request whole")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.sample_every))


if __name__ == "__main__":
    main()
