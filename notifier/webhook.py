"""Sending one webhook: POST, time it, keep the start of the answer, never follow redirects.

``WebhookSender`` posts through a :class:`Poster`: :func:`guarded_client` builds the real one
(``notifier/transport.py``), whose connections go only where ``shared/destinations.py``
allows; :class:`HttpxPoster` posts through any ``httpx.AsyncClient`` (tests inject
``httpx.MockTransport``). The outcome is data (:class:`DeliveryResult`); deciding to retry is
the handler's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx

from notifier.settings import NotifierSettings
from notifier.transport import Answer, WebhookTransport
from shared.destinations import DestinationGuard
from shared.errors import ForbiddenDestination

USER_AGENT = "vidq-webhooks/1.0 (+https://www.standardwebhooks.com)"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    status_code: int | None
    latency_ms: int
    error: str | None = None
    response_body: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300  # noqa: PLR2004


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Poster(Protocol):
    """POSTs a JSON body; the answer with at most ``keep`` bytes of its body (decoded).

    ``TimeoutError`` when the whole exchange takes longer than ``timeout`` seconds.
    """

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, keep: int, timeout: float
    ) -> Answer: ...


class HttpxPoster:
    """A :class:`Poster` over an ``httpx.AsyncClient`` (redirects are never followed)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, keep: int, timeout: float
    ) -> Answer:
        request_headers = {"content-type": "application/json", **headers}
        async with (
            asyncio.timeout(timeout),
            self.client.stream(
                "POST", url, content=body, headers=request_headers, follow_redirects=False
            ) as response,
        ):
            kept = bytearray()
            async for chunk in response.aiter_bytes():
                kept += chunk
                if len(kept) >= keep:
                    break
            return Answer(response.status_code, dict(response.headers), bytes(kept[:keep]))


class WebhookSender:
    def __init__(self, poster: Poster, *, timeout: float = 15.0, log_bytes: int = 2048) -> None:
        self.poster = poster
        self.timeout = timeout
        self.log_bytes = log_bytes

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> DeliveryResult:
        """POST ``body``; any answer or failure is a result, except a forbidden destination."""
        started = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            answer = await self.poster.post(url, body, headers, keep=self.log_bytes, timeout=self.timeout)
        except ForbiddenDestination:
            raise
        except httpx.InvalidURL as exc:  # never sendable (the gateway refuses such URLs now):
            # logged failed and parked, as a forbidden destination is, never retried in a loop
            raise ForbiddenDestination(f"the URL cannot be requested: {exc}") from exc
        except TimeoutError:
            return DeliveryResult(None, elapsed(), f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return DeliveryResult(None, elapsed(), f"{type(exc).__name__}: {exc}"[:500])
        ok = 200 <= answer.status < 300  # noqa: PLR2004
        return DeliveryResult(
            status_code=answer.status,
            latency_ms=elapsed(),
            error=None if ok else f"HTTP {answer.status}",
            response_body=answer.body.decode(errors="replace"),
            retry_after=parse_retry_after(answer.headers.get("retry-after")),
        )


@dataclass(slots=True)
class _Wait:
    """A delivery waiting for one of its endpoint's slots: ``True`` once handed one."""

    future: asyncio.Future[bool]
    timer: asyncio.TimerHandle | None = None


class EndpointLimiter:
    """Counts deliveries in flight per endpoint (its URL) in this process.

    An endpoint has at most ``limit`` deliveries in flight. Another one waits for a slot for as
    long as the endpoint is lively: a request to it started or ended less than ``patience``
    ago. Slots of a fast endpoint turn over in milliseconds, so a burst to it waits its turn
    however long the line (hundreds of an event batch's deliveries to one endpoint), instead of
    being deferred; a hanging endpoint shows no such sign, so deliveries to it are refused at
    once, or as soon as it stops answering, and never hold a consumer slot waiting. A freed slot
    goes to the longest waiting delivery.
    """

    def __init__(self, limit: int, patience: float = 0.0) -> None:
        self.limit = limit
        self.patience = patience
        self.active: dict[str, int] = {}
        self._activity: dict[str, float] = {}
        self._waiters: dict[str, deque[asyncio.Future[bool]]] = {}

    def try_acquire(self, url: str) -> str | None:
        """Take a slot for the endpoint ``url``; ``None`` when it already has ``limit`` in flight."""
        key = url
        if self.active.get(key, 0) >= self.limit:
            return None
        self.active[key] = self.active.get(key, 0) + 1
        self._activity[key] = time.monotonic()
        return key

    async def acquire(self, url: str) -> str | None:
        """Take a slot, waiting up to ``patience`` for one while the endpoint is lively."""
        key = self.try_acquire(url)
        if key is not None or not self._lively(url):
            return key
        wait = _Wait(asyncio.get_running_loop().create_future())
        waiter = wait.future
        self._waiters.setdefault(url, deque()).append(waiter)
        self._arm(url, wait, self.patience)
        try:
            handed_over = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release(url)  # the slot was handed over just as we were cancelled
            self._forget(url, waiter)
            raise
        finally:
            if wait.timer is not None:
                wait.timer.cancel()
        if handed_over:
            return url
        self._forget(url, waiter)
        return None

    def release(self, key: str) -> None:
        self._activity[key] = time.monotonic()
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes to it, still counted
                return
        self._waiters.pop(key, None)
        self.active[key] -= 1
        if not self.active[key]:
            del self.active[key]
            self._activity.pop(key, None)

    def _arm(self, key: str, wait: _Wait, delay: float) -> None:
        wait.timer = asyncio.get_running_loop().call_later(delay, self._check, key, wait)

    def _check(self, key: str, wait: _Wait) -> None:
        """A waiter's patience ran out: it waits on while the endpoint is lively, else gives up."""
        if wait.future.done():
            return
        quiet = time.monotonic() - self._activity.get(key, -math.inf)
        if quiet < self.patience:
            self._arm(key, wait, self.patience - quiet)
        else:
            wait.future.set_result(False)

    def _lively(self, key: str) -> bool:
        return time.monotonic() - self._activity.get(key, -math.inf) < self.patience

    def _forget(self, key: str, waiter: asyncio.Future[bool]) -> None:
        waiter.cancel()
        waiters = self._waiters.get(key)
        if waiters is not None:
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            if not waiters:
                del self._waiters[key]


def guarded_client(settings: NotifierSettings) -> WebhookTransport:
    """One pooled client for every endpoint, connecting only to allowed addresses."""
    return WebhookTransport(
        DestinationGuard(settings.webhook_allow_hosts),
        ssl_context=httpx.create_ssl_context(),
        max_connections=settings.notifier_max_connections,
        keepalive_expiry=30.0,
        user_agent=USER_AGENT,
    )
