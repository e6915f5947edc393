"""A URL being registered whose host is by itself a forbidden address is refused then and there."""

from __future__ import annotations

import pytest

from shared.destinations import DestinationGuard, refusal
from shared.errors import ForbiddenDestination


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.2",
        "2130706433",  # 127.0.0.1 as the resolver reads a bare number
        "0x7f.1",
        "10",  # 0.0.0.10
        "127.1",
        "[::1]",
        "::ffff:127.0.0.1",
        # IPv6 forms that reach an IPv4 host: NAT64, 6to4, IPv4-compatible, NAT64's local prefix
        "[64:ff9b::a9fe:a9fe]",  # 169.254.169.254 behind a NAT64 gateway
        "[64:ff9b::10.0.0.1]",
        "[2002:a9fe:a9fe::1]",
        "[2002:7f00:1::]",
        "[::a9fe:a9fe]",
        "[::127.0.0.2]",
        "[::ffff:0:a9fe:a9fe]",  # SIIT's IPv4-translated form
        "[64:ff9b:1::a00:1]",
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",  # Teredo
        "0.0.0.0",  # noqa: S104 - an address refused, not bound
        "10.0.0.1",
        "192.168.1.1",
        "172.16.5.4",
        "100.64.0.1",
        "169.254.169.254",
        "fe80::1",
        "localhost",
        "LOCALHOST.",
        "api.localhost",
    ],
)
def test_a_private_loopback_or_link_local_host_is_refused(host: str) -> None:
    with pytest.raises(ForbiddenDestination, match="VIDQ_WEBHOOK_ALLOW_HOSTS"):
        DestinationGuard().check_literal(host)


@pytest.mark.parametrize(
    "host",
    [
        "93.184.216.34",
        "[2606:2800:220:1:248:1893:25c8:1946]",
        "[64:ff9b::5db8:d822]",  # 93.184.216.34 through NAT64: public, so allowed
        "[2002:5db8:d822::1]",
        "example.com",
        "hooks.internal",
    ],
)
def test_a_public_address_or_any_name_passes(host: str) -> None:
    DestinationGuard().check_literal(host)  # a name is checked on every connection instead


@pytest.mark.parametrize(
    ("allow", "host"),
    [
        (("127.0.0.1",), "127.0.0.1"),
        (("10.0.0.0/8",), "10.9.8.7"),
        (("localhost",), "localhost"),
        (("127.0.0.1",), "localhost"),  # localhost reaches 127.0.0.1, so it may be registered
        (("::1",), "api.localhost"),
    ],
)
def test_an_allowlisted_host_or_network_passes(allow: tuple[str, ...], host: str) -> None:
    DestinationGuard(allow).check_literal(host)


def test_the_allowlist_admits_only_what_it_lists() -> None:
    with pytest.raises(ForbiddenDestination, match=r"10\.0\.0\.1"):
        DestinationGuard(("127.0.0.1", "192.168.0.0/16")).check_literal("10.0.0.1")
    with pytest.raises(ForbiddenDestination, match="loopback name"):
        DestinationGuard(("10.0.0.0/8", "127.0.0.2")).check_literal("localhost")


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://169.254.169.254/latest/meta-data", True),
        ("http://user:pw@10.1.2.3:8080/hook", True),
        ("https://[::1]:9/x", True),
        ("http://localhost:3000/hook", True),
        ("https://hooks.example.com/vidq", False),
        ("https://93.184.216.34/vidq", False),
    ],
)
def test_refusal_reads_the_urls_host(url: str, refused: bool) -> None:
    reason = refusal(url)
    assert (reason is not None) == refused
    if reason:
        assert "private, loopback or link-local" in reason or "loopback name" in reason
    assert refusal(url, ("10.1.2.3", "169.254.169.254", "::1", "localhost")) is None
