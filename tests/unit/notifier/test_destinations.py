"""Where webhooks may go: private, loopback and link-local addresses are refused unless allowlisted."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from typing import Any

import httpx
import pytest

from notifier.transport import WebhookTransport
from shared.destinations import DestinationGuard, forbidden
from shared.errors import ForbiddenDestination

DNS: dict[str, list[str]] = {
    "example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "localhost.example": ["127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "rebind.example": ["93.184.216.34", "10.0.0.5"],
    "intranet.example": ["10.1.2.3"],
    "hooks.internal": ["192.168.10.20"],
    "v6-loopback.example": ["::1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "127.0.0.1": ["127.0.0.1"],
    "::1": ["::1"],
}


@pytest.fixture
async def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the running loop's ``getaddrinfo`` answer from ``DNS``; collects the names asked for."""
    names: list[str] = []

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        names.append(host)
        if host not in DNS:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in DNS[host]
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    return names


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "224.0.0.251",
        "::1",
        "::",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
    ],
)
def test_private_loopback_link_local_and_special_addresses_are_forbidden(address: str) -> None:
    assert forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert not forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("localhost.example", "127.0.0.1"),
        ("metadata.example", "169.254.169.254"),
        ("v6-loopback.example", "::1"),
        ("mapped.example", "::ffff:127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
    ],
)
async def test_a_name_resolving_to_a_forbidden_address_is_refused(
    asked: list[str], host: str, address: str
) -> None:
    with pytest.raises(ForbiddenDestination, match="VIDQ_WEBHOOK_ALLOW_HOSTS") as caught:
        await DestinationGuard().resolve(host, 443)

    assert host in str(caught.value)
    assert address in str(caught.value)


async def test_a_name_with_one_private_address_among_public_ones_is_refused(asked: list[str]) -> None:
    with pytest.raises(ForbiddenDestination, match=r"10\.0\.0\.5"):
        await DestinationGuard().resolve("rebind.example", 443)


async def test_a_public_name_resolves_to_its_addresses(asked: list[str]) -> None:
    addresses = await DestinationGuard().resolve("Example.COM.", 443)

    assert addresses == DNS["example.com"]
    assert asked == ["example.com"]


@pytest.mark.parametrize(
    ("allow", "host"),
    [
        (["127.0.0.1"], "localhost.example"),
        (["127.0.0.0/8"], "127.0.0.1"),
        (["10.0.0.0/8"], "intranet.example"),
        (["::1"], "[::1]"),
        (["hooks.internal"], "hooks.internal"),
        (["Hooks.Internal."], "HOOKS.internal"),
    ],
)
async def test_the_allowlist_admits_ips_networks_and_host_names(
    asked: list[str], allow: list[str], host: str
) -> None:
    addresses = await DestinationGuard(allow).resolve(host, 80)

    assert addresses


@pytest.mark.parametrize(
    ("allow", "host"),
    [
        (["10.0.0.0/8"], "localhost.example"),
        (["hooks.internal"], "intranet.example"),
        (["127.0.0.1"], "metadata.example"),
    ],
)
async def test_the_allowlist_admits_nothing_else(asked: list[str], allow: list[str], host: str) -> None:
    with pytest.raises(ForbiddenDestination):
        await DestinationGuard(allow).resolve(host, 80)


async def test_a_name_that_does_not_resolve_is_a_connect_error(asked: list[str]) -> None:
    with pytest.raises(httpx.ConnectError, match=r"nowhere\.example"):
        await DestinationGuard().resolve("nowhere.example", 443)


class RecordingConnector:
    """Stands in for ``loop.create_connection``: records where it was asked to go, connects nowhere."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int, str | None]] = []

    async def __call__(self, factory: Any, host: str, port: int, **kwargs: Any) -> Any:
        self.connected.append((host, port, kwargs.get("server_hostname")))
        raise ConnectionRefusedError(f"{host}:{port}")


def transport(connector: RecordingConnector) -> WebhookTransport:
    return WebhookTransport(DestinationGuard(), ssl_context=ssl.create_default_context(), connector=connector)


async def test_the_transport_connects_to_the_checked_address_not_the_name(asked: list[str]) -> None:
    connector = RecordingConnector()

    with pytest.raises(httpx.ConnectError):
        await transport(connector).handle_async_request(httpx.Request("POST", "https://example.com/hook"))

    # every checked address is tried in turn; TLS still names the host (SNI, verification)
    assert connector.connected == [
        ("93.184.216.34", 443, "example.com"),
        ("2606:2800:220:1:248:1893:25c8:1946", 443, "example.com"),
    ]


async def test_the_transport_never_connects_to_a_forbidden_name(asked: list[str]) -> None:
    connector = RecordingConnector()

    with pytest.raises(ForbiddenDestination):
        await transport(connector).handle_async_request(httpx.Request("POST", "http://metadata.example/"))

    assert connector.connected == []


async def test_the_transport_refuses_a_header_that_would_split_the_request(asked: list[str]) -> None:
    connector = RecordingConnector()
    request = httpx.Request("POST", "https://example.com/hook", headers={"webhook-id": "evt_1"})
    request.headers["webhook-id"] = "evt_1\r\nx-injected: 1"

    with pytest.raises(httpx.LocalProtocolError):
        await transport(connector).handle_async_request(request)

    assert connector.connected == []
