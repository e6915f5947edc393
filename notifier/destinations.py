"""Where webhooks may go: never to private, loopback, link-local or metadata addresses.

The check happens when the connection is made, on every address the name resolves to, inside
the HTTP client's transport (``notifier/transport.py``): a name that resolves to a public
address when checked and to 127.0.0.1 when connecting (DNS rebinding) is still refused, and the
connection goes to the very address that was checked. Redirects are never followed. The
operator may allowlist hosts, IPs or networks (``VIDQ_WEBHOOK_ALLOW_HOSTS``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpx

from shared.errors import ForbiddenDestination

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def forbidden(ip: IPAddress) -> bool:
    """Whether an address is off limits by default: anything not globally routable.

    That covers private, loopback, link-local (and so cloud metadata at 169.254.169.254),
    carrier-grade NAT (100.64.0.0/10), reserved, documentation and multicast ranges.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return forbidden(ip.ipv4_mapped)
    return not ip.is_global or ip.is_multicast


class DestinationGuard:
    """Resolves a host and returns only the addresses a webhook may connect to."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allowed_hosts: set[str] = set()
        self.allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            try:
                self.allowed_networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.allowed_hosts.add(entry.lower().rstrip("."))

    def _allowed(self, ip: IPAddress) -> bool:
        return not forbidden(ip) or any(ip in net for net in self.allowed_networks)

    async def resolve(self, host: str, port: int) -> list[str]:
        """Addresses to connect to; raises ``ForbiddenDestination`` when none is allowed."""
        name = host.lower().rstrip(".").strip("[]")
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if name in self.allowed_hosts:
            return addresses
        refused = [a for a in addresses if not self._allowed(ipaddress.ip_address(a))]
        if refused:
            raise ForbiddenDestination(
                f"{host} resolves to {', '.join(refused)}, a private, loopback or link-local address; "
                "ask the operator to allowlist it (VIDQ_WEBHOOK_ALLOW_HOSTS)"
            )
        return addresses
