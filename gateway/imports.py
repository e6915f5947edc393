"""Importing a video from a URL: the gateway downloads it to storage, then it is an upload.

Mux (``inputs: [{url}]``), Cloudflare Stream (``/stream/copy``) and api.video (a ``source`` URL)
take a URL in place of the file; so does ``POST /v1/videos`` with a JSON body
(``docs/architecture.md``, "Import from a URL"). The download streams to the same temporary
file an upload's ``file`` part would, under the same size cap, and is then probed and recorded
exactly as an upload is, within the request: the answer says whether it is a video.

The URL is fetched with httpx, but never from an address a webhook may not reach either
(``shared/destinations.py``): the host is resolved by the same guard and the connection made to
the checked address (TLS still verifies the URL's host name), and each redirect is checked
again. Private, loopback and link-local addresses need ``VIDQ_IMPORT_ALLOW_HOSTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx

from gateway.errors import ApiError, InvalidRequest, NotAVideo, TooManyOpen, Unavailable, UploadTooLarge
from gateway.settings import GatewaySettings
from gateway.uploads import display_name
from shared.destinations import DestinationGuard
from shared.errors import ForbiddenDestination

#: Redirects followed (each checked like the URL itself), as browsers and curl -L cap them.
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1024 * 1024


#: The largest JSON body of an import: a URL, the options and 4 KiB of metadata fit well.
MAX_BODY_BYTES = 16 * 1024

#: Seconds a client refused for want of an import slot is asked to wait (``Retry-After``).
RETRY_AFTER_S = 10


class DownloadFailed(ApiError):
    """The URL could not be downloaded: it answered an error, or could not be reached."""

    status, slug, title = 422, "download-failed", "Could not download the video"


class ImportSlots:
    """The imports one gateway process downloads at once: ``total`` in all, ``per_client`` each.

    An import holds its request, a connection out and a growing file for as long as its
    download lasts (up to ``VIDQ_IMPORT_TIMEOUT_S``); unbounded, one client could start
    thousands and fill the storage or use up the gateway's sockets for everyone. One more is
    refused at once, never queued: a client over its share gets a ``429``, any client while the
    gateway is full a ``503``, both with ``Retry-After`` (a retry under the same
    ``Idempotency-Key`` is safe). Counted per process: each gateway replica has its own slots.
    A plain counter, written here: an ``asyncio.Semaphore`` would queue where this must refuse.
    """

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._by_client: dict[str, int] = {}

    @property
    def in_use(self) -> int:
        return sum(self._by_client.values())

    @contextlib.contextmanager
    def take(self, client_id: str) -> Iterator[None]:
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        held = self._by_client.get(client_id, 0)
        if held >= self.per_client:
            raise TooManyOpen(
                f"this client already has {held} imports downloading (at most {self.per_client} "
                "at once, VIDQ_MAX_IMPORTS_PER_CLIENT); retry once one has finished",
                headers=retry,
            )
        if self.in_use >= self.total:
            raise Unavailable(
                f"this gateway is downloading {self.total} imports, its most at once "
                "(VIDQ_MAX_IMPORTS); retry shortly",
                headers=retry,
            )
        self._by_client[client_id] = held + 1
        try:
            yield
        finally:
            left = self._by_client[client_id] - 1
            if left:
                self._by_client[client_id] = left
            else:
                del self._by_client[client_id]


@dataclass(frozen=True, slots=True)
class Downloaded:
    filename: str
    size_bytes: int


def fingerprint(body: dict[str, Any]) -> str:
    """What identifies an import request under an Idempotency-Key: its JSON body, canonical."""
    return hashlib.sha256(json.dumps({"import": body}, sort_keys=True).encode()).hexdigest()


async def download(url: str, path: Path, settings: GatewaySettings) -> Downloaded:
    """Download ``url`` to ``path`` (following checked redirects), within the size cap and time limit."""
    guard = DestinationGuard(settings.import_allow_hosts, setting="VIDQ_IMPORT_ALLOW_HOSTS")
    timeout = httpx.Timeout(settings.import_read_timeout_s, connect=10.0)
    # No connection is kept for the next hop: it is made to the checked address of that hop's
    # own host, and TLS verifies that host's name (a pooled connection to the same address was
    # verified for another name).
    limits = httpx.Limits(max_keepalive_connections=0)
    try:
        async with (
            asyncio.timeout(settings.import_timeout_s),
            httpx.AsyncClient(
                timeout=timeout, limits=limits, follow_redirects=False, trust_env=False
            ) as client,
        ):
            return await _follow(client, guard, url, path, settings.max_upload_bytes)
    except TimeoutError:
        raise DownloadFailed(
            f"the download of {url} did not finish within {settings.import_timeout_s:g} s"
        ) from None


async def _follow(
    client: httpx.AsyncClient, guard: DestinationGuard, url: str, path: Path, max_bytes: int
) -> Downloaded:
    first = url
    for _ in range(MAX_REDIRECTS + 1):
        async with _get(client, guard, url, redirected_from=first if url != first else None) as response:
            if response.status_code in _REDIRECTS and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            if not response.is_success:
                raise DownloadFailed(
                    f"{url} answered {response.status_code} {response.reason_phrase}".rstrip()
                )
            size = await _save(response, url, path, max_bytes)
            return Downloaded(_filename(response, url), size)
    raise DownloadFailed(f"more than {MAX_REDIRECTS} redirects, the last to {url}")


@contextlib.asynccontextmanager
async def _get(
    client: httpx.AsyncClient, guard: DestinationGuard, url: str, *, redirected_from: str | None = None
) -> AsyncIterator[httpx.Response]:
    """GET ``url`` from an address the guard allows (each in turn); the response streams."""
    hop = f" (redirected from {redirected_from})" if redirected_from else ""
    target = _Target.of(url, hop)
    try:
        guard.check_literal(target.host)
        addresses = await guard.resolve(target.host, target.port)
    except ForbiddenDestination as exc:
        raise InvalidRequest(f"url: {exc}{hop}") from None
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"could not download {url}{hop}: {_reason(exc)}") from None
    response: httpx.Response | None = None
    failure: Exception | None = None
    for address in addresses:
        try:
            request = client.build_request(
                "GET",
                target.at(address),
                # the URL's own host, for the server (Host) and for TLS (SNI and the name the
                # certificate must carry); no compressed answer: its size is not the file's
                headers={"host": target.host_header, "accept-encoding": "identity"},
                extensions={"sni_hostname": target.host},
            )
        except httpx.InvalidURL as exc:
            raise InvalidRequest(f"url: {url} is not a URL vidq can fetch{hop}: {exc}") from None
        try:
            response = await client.send(request, stream=True)
            break
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            failure = exc  # the host's next address, if it has one
        except httpx.InvalidURL as exc:  # httpx reads a redirect's Location as it answers
            raise DownloadFailed(f"{url}{hop} redirects to a URL vidq cannot follow: {exc}") from None
        except httpx.HTTPError as exc:
            raise DownloadFailed(f"could not download {url}{hop}: {_reason(exc)}") from None
    if response is None:
        raise DownloadFailed(f"could not download {url}{hop}: {_reason(failure)}")
    try:
        yield response
    finally:
        await response.aclose()


@dataclass(frozen=True, slots=True)
class _Target:
    """An http(s) URL taken apart: its host in ASCII (IDNA), its port, and the rest of it."""

    scheme: str
    host: str
    port: int
    path: str
    query: str
    host_header: str

    @classmethod
    def of(cls, url: str, hop: str) -> _Target:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"url: {url} is not an http(s) URL{hop}")
        if parts.username is not None or parts.password is not None:
            raise InvalidRequest(
                f"url: credentials in a URL (user:password@) are not sent; give a signed URL{hop}"
            )
        try:
            host = parts.hostname.encode("idna").decode("ascii")
            explicit = parts.port
        except (UnicodeError, ValueError) as exc:  # a label over 63 characters; a port over 65535
            raise InvalidRequest(f"url: {url} is not a URL vidq can fetch{hop}: {exc}") from None
        scheme = parts.scheme.lower()
        port = explicit or (443 if scheme == "https" else 80)
        named = f"[{host}]" if ":" in host else host
        host_header = f"{named}:{explicit}" if explicit else named
        return cls(scheme, host, port, parts.path or "/", parts.query, host_header)

    def at(self, address: str) -> str:
        """This URL sent to ``address`` (the host's checked address) instead of its name."""
        literal = f"[{address}]" if ":" in address else address
        return urlunsplit((self.scheme, f"{literal}:{self.port}", self.path, self.query, ""))


async def _save(response: httpx.Response, url: str, path: Path, max_bytes: int) -> int:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # asked for identity: decoding it here would hold a chunk's whole expansion in memory
        raise DownloadFailed(
            f"{url} answered compressed ({encoding}) although asked not to; vidq needs the file as it is"
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise UploadTooLarge(f"the file at the URL is {declared} bytes, over the {max_bytes}-byte limit")
    size = 0
    try:
        with path.open("wb") as out:
            async for chunk in response.aiter_raw(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLarge(f"the file at the URL is over the {max_bytes}-byte limit")
                out.write(chunk)
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"the download of {url} broke off: {_reason(exc)}") from None
    if size == 0:
        raise NotAVideo("the file at the URL is empty")
    return size


def _filename(response: httpx.Response, url: str) -> str:
    """The name the server gives (Content-Disposition), else the URL path's last part."""
    message = email.message.Message()
    message["content-disposition"] = response.headers.get("content-disposition", "")
    name = message.get_filename() or unquote(PurePosixPath(urlsplit(url).path).name)
    return display_name(name, "download")


def _reason(exc: Exception | None) -> str:
    text = str(exc) if exc is not None else ""
    return text or type(exc).__name__
