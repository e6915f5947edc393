"""The SSRF guard through the real client (``guarded_client``) and a real HTTP receiver (uvicorn).

Names under ``.test`` are answered by a stand-in for the event loop's ``getaddrinfo`` (the guard
resolves through ``loop.getaddrinfo``); every other name and address goes to the real resolver.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import string
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from notifier import signing
from notifier.settings import NotifierSettings
from notifier.webhook import USER_AGENT, WebhookSender, guarded_client
from shared.errors import ForbiddenDestination
from tests.e2e.harness import WebhookReceiver, serve
from tests.realdeps import free_port
from tests.settings import make

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"id": "evt_1", "type": "video.ready", "data": {}}'
#: A body longer than any log limit used here, distinct at every offset.
BIG = (string.ascii_letters * 200).encode()
#: What ``/gzip`` answers, compressed (a proxy's error page, say).
PAGE = b"<html>upstream is down</html>" * 50


@dataclass
class Site:
    receiver: WebhookReceiver
    port: int

    def url(self, path: str = "/x", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@dataclass
class Resolver:
    """Answers for names under ``.test``, in order (the last answer repeats); records every name asked."""

    answers: dict[str, list[list[str] | None]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """A recording receiver on 127.0.0.1; ``/big`` answers with ``BIG`` (and records nothing)."""
    receiver = WebhookReceiver()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("path") == "/gzip":
            headers = [(b"content-encoding", b"gzip"), (b"retry-after", b"30")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": gzip.compress(PAGE)})
            return
        if scope.get("path") != "/big":
            await receiver(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for start in range(0, len(BIG), 1000):
            await send({"type": "http.response.body", "body": BIG[start : start + 1000], "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    async with serve(app, port):
        yield Site(receiver, port)


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    resolver = Resolver(
        answers={"metadata.test": [["169.254.169.254"]], "rebind.test": [["127.0.0.1"]]},
    )
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        resolver.asked.append(str(host))
        if not str(host).endswith(".test"):
            return await real(host, port, *args, **kwargs)
        queue = resolver.answers.get(str(host), [None])
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answer]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return resolver


@asynccontextmanager
async def sender(*allow: str, timeout: float = 5.0, log_bytes: int = 2048) -> AsyncIterator[WebhookSender]:
    """The notifier's real client, allowlisting ``allow``, in a ``WebhookSender``."""
    async with guarded_client(make(NotifierSettings, webhook_allow_hosts=allow)) as transport:
        yield WebhookSender(transport, timeout=timeout, log_bytes=log_bytes)


def signed(body: bytes = BODY) -> dict[str, str]:
    return signing.headers([SECRET], "evt_1", int(time.time()), body)


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "127.8.9.10"])
async def test_a_loopback_address_is_refused_before_any_request(site: Site, host: str) -> None:
    async with sender() as webhooks:
        with pytest.raises(ForbiddenDestination, match="VIDQ_WEBHOOK_ALLOW_HOSTS") as refused:
            await webhooks.send(site.url(host=host), BODY, signed())

    assert host.strip("[]") in str(refused.value)
    assert site.receiver.requests == []


async def test_a_name_resolving_to_loopback_is_refused(site: Site) -> None:
    infos = await asyncio.get_running_loop().getaddrinfo("localhost", site.port, type=socket.SOCK_STREAM)
    answers = {str(info[4][0]) for info in infos}
    assert answers
    assert all(ipaddress.ip_address(a).is_loopback for a in answers)

    async with sender() as webhooks:
        with pytest.raises(ForbiddenDestination, match="VIDQ_WEBHOOK_ALLOW_HOSTS") as refused:
            await webhooks.send(site.url(host="localhost"), BODY, signed())

    for address in answers:  # every loopback answer is named, not only the first
        assert address in str(refused.value)
    assert site.receiver.requests == []


@pytest.mark.parametrize(
    ("host", "address"),
    [("metadata.test", "169.254.169.254"), ("rebind.test", "127.0.0.1")],
)
async def test_names_resolving_to_metadata_or_loopback_are_refused(
    site: Site, dns: Resolver, host: str, address: str
) -> None:
    async with sender() as webhooks:
        with pytest.raises(ForbiddenDestination) as refused:
            await webhooks.send(site.url(host=host), BODY, signed())

    message = str(refused.value)
    assert host in message
    assert address in message
    assert "VIDQ_WEBHOOK_ALLOW_HOSTS" in message
    assert host in dns.asked
    assert site.receiver.requests == []


async def test_a_mixed_answer_is_refused_when_any_address_is_private(site: Site, dns: Resolver) -> None:
    dns.answers["mixed.test"] = [["93.184.216.34", "10.0.0.5"]]

    async with sender() as webhooks:
        with pytest.raises(ForbiddenDestination, match=r"10\.0\.0\.5"):
            await webhooks.send(site.url(host="mixed.test"), BODY, signed())

    assert site.receiver.requests == []


async def test_a_mixed_answer_goes_only_to_the_allowlisted_address(site: Site, dns: Resolver) -> None:
    # ``localhost`` answers 127.0.0.1 and ::1; allowlisting 127.0.0.1 sends there, never to ::1
    # (nothing listens on ::1 here, so a connection tried there first would fail the send).
    dns.answers["both.test"] = [["10.0.0.5", "127.0.0.1"]]

    async with sender("127.0.0.1") as webhooks:
        result = await webhooks.send(site.url("/x", host="both.test"), BODY, signed())

    assert result.ok, result.error
    assert [r.path for r in site.receiver.requests] == ["/x"]


async def test_localhost_reaches_an_allowlisted_127_0_0_1(site: Site) -> None:
    async with sender("127.0.0.1") as webhooks:
        result = await webhooks.send(site.url("/x", host="localhost"), BODY, signed())

    assert result.ok, result.error
    [request] = site.receiver.requests
    assert request.headers["host"] == f"localhost:{site.port}"


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8"], ids=["address", "network"])
async def test_an_allowlisted_address_gets_the_signed_post(site: Site, allow: str) -> None:
    headers = signed()
    async with sender(allow) as webhooks:
        result = await webhooks.send(site.url("/x"), BODY, headers)

    assert result.ok
    assert result.status_code == 200
    assert result.error is None
    assert result.response_body == "ok"
    [request] = site.receiver.requests
    assert request.path == "/x"
    assert request.body == BODY
    for name, value in headers.items():
        assert request.headers[name] == value
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    Webhook(SECRET).verify(request.body, request.headers)


async def test_an_allowlisted_name_connects_to_the_address_that_was_checked(
    site: Site, dns: Resolver
) -> None:
    # Resolved once to 127.0.0.1; any second resolution (a re-resolve at connect) would fail.
    dns.answers["rebind.test"] = [["127.0.0.1"], None]

    async with sender("rebind.test") as webhooks:
        result = await webhooks.send(site.url("/x", host="rebind.test"), BODY, signed())

    assert result.ok, result.error
    [request] = site.receiver.requests
    assert request.headers["host"] == f"rebind.test:{site.port}"
    assert dns.asked == ["rebind.test"]  # the connection went to the literal address checked


async def test_an_allowlisted_name_does_not_open_other_names(site: Site, dns: Resolver) -> None:
    async with sender("rebind.test") as webhooks:
        with pytest.raises(ForbiddenDestination, match=r"169\.254\.169\.254"):
            await webhooks.send(site.url(host="metadata.test"), BODY, signed())

    assert site.receiver.requests == []


async def test_a_redirect_is_not_followed(site: Site) -> None:
    site.receiver.script["/x"] = [(302, {"location": site.url("/elsewhere")})]

    async with sender("127.0.0.1") as webhooks:
        result = await webhooks.send(site.url("/x"), BODY, signed())

    assert result.status_code == 302
    assert not result.ok
    assert result.error == "HTTP 302"
    assert [r.path for r in site.receiver.requests] == ["/x"]
    assert site.receiver.at("/elsewhere") == []


async def test_a_slow_receiver_times_out_without_a_status(site: Site) -> None:
    site.receiver.hang["/slow"] = 1.0

    async with sender("127.0.0.1", timeout=0.5) as webhooks:
        result = await webhooks.send(site.url("/slow"), BODY, signed())

    assert result.status_code is None
    assert not result.ok
    assert result.error == "no answer within 0.5 s"
    assert 450 <= result.latency_ms < 1000
    assert len(site.receiver.at("/slow")) == 1  # it arrived; the answer did not


async def test_the_kept_response_body_is_cut_to_log_bytes(site: Site) -> None:
    async with sender("127.0.0.1", log_bytes=100) as webhooks:
        result = await webhooks.send(site.url("/big"), BODY, signed())

    assert result.ok
    assert result.response_body == BIG[:100].decode()


async def test_one_connection_serves_deliveries_one_after_another(site: Site) -> None:
    async with guarded_client(make(NotifierSettings, webhook_allow_hosts=("127.0.0.1",))) as transport:
        webhooks = WebhookSender(transport)
        results = [await webhooks.send(site.url(f"/k{i}"), BODY, signed()) for i in range(3)]
        assert transport.open == 1  # kept alive and reused

    assert all(r.ok for r in results)
    assert [r.path for r in site.receiver.requests] == ["/k0", "/k1", "/k2"]


async def test_a_delivery_after_an_answer_read_in_part_gets_a_sound_connection(site: Site) -> None:
    async with guarded_client(make(NotifierSettings, webhook_allow_hosts=("127.0.0.1",))) as transport:
        webhooks = WebhookSender(transport, log_bytes=100)
        big = await webhooks.send(site.url("/big"), BODY, signed())
        small = await webhooks.send(site.url("/after"), BODY, signed())
        # reused only if the whole answer had arrived; closed (and a new one opened) otherwise
        assert transport.open == 1

    assert big.ok
    assert big.response_body == BIG[:100].decode()
    assert small.ok
    assert small.response_body == "ok"


async def test_a_compressed_answer_is_logged_decoded(site: Site) -> None:
    async with sender("127.0.0.1", log_bytes=100) as webhooks:
        result = await webhooks.send(site.url("/gzip"), BODY, signed())

    assert result.status_code == 503
    assert result.retry_after == 30.0
    assert result.response_body == PAGE[:100].decode()


async def test_a_header_that_would_split_the_request_is_refused_unsent(site: Site) -> None:
    headers = {**signed(), "webhook-id": "evt_1\r\nx-injected: 1"}
    async with sender("127.0.0.1") as webhooks:
        result = await webhooks.send(site.url("/x"), BODY, headers)
        again = await webhooks.send(site.url("/x?after=1"), BODY, signed())

    assert not result.ok
    assert result.status_code is None
    assert result.error is not None
    assert "line break" in result.error
    assert again.ok  # the refusal left the connection pool sound
    [request] = site.receiver.requests
    assert "x-injected" not in request.headers


async def test_a_url_no_client_can_request_is_refused_like_a_forbidden_one(site: Site) -> None:
    # registered before the gateway capped URLs at 2,048 characters: never sent, never looped on
    async with sender("127.0.0.1") as webhooks:
        with pytest.raises(ForbiddenDestination, match="cannot be requested"):
            await webhooks.send(site.url("/" + "x" * 70_000), BODY, signed())
    assert site.receiver.requests == []
