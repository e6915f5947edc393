"""Sending one webhook through ``httpx.MockTransport``: the outcome is data, never an exception."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from notifier.webhook import EndpointLimiter, HttpxPoster, WebhookSender, parse_retry_after
from shared.errors import ForbiddenDestination

URL = "https://hooks.example.com/vidq"
BODY = b'{"id": "evt_1", "type": "video.ready"}'
Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def streamed(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    """A response whose body arrives in chunks, as from the network (not read in advance)."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    return httpx.Response(status, headers=headers, content=chunks())


def sender_for(handler: Handler, *, timeout: float = 5.0, log_bytes: int = 2048) -> WebhookSender:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=True)
    return WebhookSender(HttpxPoster(client), timeout=timeout, log_bytes=log_bytes)


async def test_a_2xx_answer_is_a_success() -> None:
    result = await sender_for(lambda _: streamed(202, b"queued")).send(URL, BODY, {})

    assert result.ok
    assert result.status_code == 202
    assert result.error is None
    assert result.response_body == "queued"
    assert result.latency_ms >= 0


@pytest.mark.parametrize("status", [500, 503, 410, 404, 301, 199])
async def test_any_other_answer_is_a_failure_naming_the_status(status: int) -> None:
    result = await sender_for(lambda _: streamed(status, b"nope")).send(URL, BODY, {})

    assert not result.ok
    assert result.status_code == status
    assert result.error == f"HTTP {status}"
    assert result.response_body == "nope"


async def test_the_body_and_headers_are_posted_as_given() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    signed = {"webhook-id": "evt_1", "webhook-timestamp": "1700000000", "webhook-signature": "v1,abc"}
    await sender_for(handler).send(URL, BODY, signed)

    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.content == BODY
    assert request.headers["content-type"] == "application/json"
    for name, value in signed.items():
        assert request.headers[name] == value


async def test_a_redirect_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(307, headers={"location": "http://169.254.169.254/"})

    result = await sender_for(handler).send(URL, BODY, {})

    assert seen == [URL]
    assert not result.ok


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "read"])
async def test_the_response_body_is_cut_to_log_bytes(streaming: bool) -> None:
    body = b"e" * 10_000

    result = await sender_for(
        lambda _: streamed(500, body) if streaming else httpx.Response(500, content=body), log_bytes=100
    ).send(URL, BODY, {})

    assert result.response_body == "e" * 100


async def test_a_compressed_response_body_is_logged_decoded() -> None:
    page = b"<html>upstream is down</html>" * 10
    compressed = gzip.compress(page)

    result = await sender_for(lambda _: streamed(502, compressed, {"content-encoding": "gzip"})).send(
        URL, BODY, {}
    )

    assert result.response_body == page.decode()


async def test_a_retry_after_in_seconds_is_kept() -> None:
    result = await sender_for(lambda _: httpx.Response(429, headers={"retry-after": "120"})).send(
        URL, BODY, {}
    )

    assert result.retry_after == 120.0


async def test_a_retry_after_http_date_becomes_seconds_from_now() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)

    result = await sender_for(lambda _: httpx.Response(503, headers={"retry-after": when})).send(
        URL, BODY, {}
    )

    assert result.retry_after is not None
    assert 85 <= result.retry_after <= 90


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        (" 30 ", 30.0),
        ("soon", None),
        ("-5", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after_reads_seconds_or_a_date(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


async def test_no_answer_within_the_timeout_is_a_failure_not_an_exception() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    result = await sender_for(slow, timeout=0.05).send(URL, BODY, {})

    assert not result.ok
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("no answer within")
    assert result.latency_ms < 2000


async def test_a_connection_error_is_a_failure_naming_it() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = await sender_for(refuse).send(URL, BODY, {})

    assert not result.ok
    assert result.status_code is None
    assert result.error == "ConnectError: connection refused"


async def test_a_forbidden_destination_is_raised_for_the_handler_to_record() -> None:
    def guard(request: httpx.Request) -> httpx.Response:
        raise ForbiddenDestination("hooks.example.com resolves to 10.0.0.1")

    with pytest.raises(ForbiddenDestination):
        await sender_for(guard).send(URL, BODY, {})


def test_the_endpoint_limiter_counts_per_endpoint_url() -> None:
    limiter = EndpointLimiter(2)
    first = limiter.try_acquire("https://a.example/hook")
    second = limiter.try_acquire("https://a.example/hook")
    assert first is not None
    assert second is not None
    assert limiter.try_acquire("https://a.example/hook") is None  # a third to the same endpoint waits
    assert limiter.try_acquire("https://a.example/other") is not None  # another endpoint does not
    limiter.release(first)
    assert limiter.try_acquire("https://a.example/hook") is not None


async def test_a_delivery_to_a_lively_endpoint_waits_for_the_next_free_slot() -> None:
    limiter = EndpointLimiter(1, patience=5.0)
    first = limiter.try_acquire(URL)
    assert first is not None
    waiting = asyncio.create_task(limiter.acquire(URL))
    await asyncio.sleep(0)
    assert not waiting.done()  # its request started just now: the endpoint is lively
    limiter.release(first)
    assert await waiting == URL  # the freed slot passed to it
    assert limiter.active == {URL: 1}


async def test_a_delivery_to_an_endpoint_that_shows_no_life_is_refused_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limiter = EndpointLimiter(1, patience=0.5)
    assert limiter.try_acquire(URL) is not None
    now = time.monotonic()
    monkeypatch.setattr("notifier.webhook.time.monotonic", lambda: now + 60)  # hanging for a minute
    assert await limiter.acquire(URL) is None
    assert limiter.active == {URL: 1}


async def test_a_wait_that_runs_out_gives_up_its_place() -> None:
    limiter = EndpointLimiter(1, patience=0.01)
    first = limiter.try_acquire(URL)
    assert first is not None
    assert await limiter.acquire(URL) is None
    limiter.release(first)
    assert limiter.active == {}  # nobody was still waiting for the slot


async def test_a_line_to_an_endpoint_whose_slots_turn_over_waits_longer_than_its_patience() -> None:
    limiter = EndpointLimiter(1, patience=0.05)

    async def deliver() -> bool:
        slot = limiter.try_acquire(URL) or await limiter.acquire(URL)
        if slot is None:
            return False
        await asyncio.sleep(0.03)  # each request takes 30 ms: a slot is freed every 30 ms
        limiter.release(slot)
        return True

    started = time.monotonic()
    delivered = await asyncio.gather(*(deliver() for _ in range(8)))

    assert delivered == [True] * 8  # the last waited about 0.2 s, four times its patience
    assert time.monotonic() - started >= 0.2
    assert limiter.active == {}
