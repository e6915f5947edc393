"""Serving a rendition or a thumbnail: Starlette's ``FileResponse`` with HTTP's caching rules.

``FileResponse`` already answers ``Range`` (206, several ranges as ``multipart/byteranges``),
``If-Range`` and ``HEAD``. :class:`MediaFile` adds what players, browsers and CDNs also rely on:

* ``If-None-Match`` (or, without it, ``If-Modified-Since``) that still matches: ``304``, no body;
* a ``Range`` in a unit other than bytes, or one that does not parse, is ignored (the whole file,
  ``200``), as RFC 9110 asks, where ``FileResponse`` would answer ``400`` in plain text;
* an unsatisfiable range: ``416`` with ``Content-Range: bytes */size`` and a problem document.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime

import anyio
from starlette.datastructures import Headers
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable, Response
from starlette.types import Receive, Scope, Send

from gateway.errors import problem_response


class MediaFile(FileResponse):
    """The file is opened before the answer starts and served from that descriptor.

    A DELETE of the video may remove the file at any moment; opened first, the file is either
    gone (a ``404`` problem) or served whole from the open descriptor, whose size and dates are
    the ones the headers give. Opened by path once the ``200`` is sent, as ``FileResponse``
    does, a file removed in between cut the answer off after its headers.
    """

    _opened: anyio.AsyncFile[bytes] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            file = await anyio.open_file(self.path, mode="rb")
        except FileNotFoundError:  # deleted since the video was read (a DELETE racing this)
            gone = problem_response(404, "not-found", "Not found", "the file is gone: the video was deleted")
            await gone(scope, receive, send)
            return
        try:
            self._opened = file
            stat = await anyio.to_thread.run_sync(os.fstat, file.wrapped.fileno())
            self.stat_result = stat
            self.set_stat_headers(stat)
            await self._answer(scope, receive, send, stat.st_size)
        finally:
            self._opened = None
            with anyio.CancelScope(shield=True):
                await file.aclose()

    @contextlib.asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        """The file opened in ``__call__`` (``FileResponse`` reads through this, by path)."""
        if self._opened is None:
            async with super()._open_file() as file:
                yield file
        else:
            yield self._opened

    async def _answer(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        headers = Headers(scope=scope)
        if self._not_modified(headers):
            kept = {k: v for k, v in self.headers.items() if k in {"etag", "last-modified", "cache-control"}}
            await Response(status_code=304, headers=kept)(scope, receive, send)
            return
        http_range = headers.get("range")
        if http_range is not None:
            try:
                # FileResponse's own parser, so that what passes here is what it serves
                self._parse_range_header(http_range, size)
            except MalformedRangeHeader:
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
            except RangeNotSatisfiable:
                detail = f"the range {http_range!r} is outside the file's {size} bytes"
                response = problem_response(
                    416,
                    "range-not-satisfiable",
                    "Range not satisfiable",
                    detail,
                    headers={"Content-Range": f"bytes */{size}"},
                )
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _not_modified(self, request: Headers) -> bool:
        if_none_match = request.get("if-none-match")
        if if_none_match is not None:
            etag = self.headers["etag"]
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            return "*" in tags or etag in tags
        if_modified_since = request.get("if-modified-since")
        if if_modified_since is None:
            return False
        try:
            since = parsedate_to_datetime(if_modified_since)
            modified = parsedate_to_datetime(self.headers["last-modified"])
        except (TypeError, ValueError):
            return False
        return modified <= since
