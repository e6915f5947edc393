"""Where webhooks may go: never to private, loopback, link-local or metadata addresses.

The check that counts happens when the connection is made, on every address the name resolves
to, inside the notifier's HTTP client transport (``notifier/transport.py``): a name that
resolves to a public address when checked and to 127.0.0.1 when connecting (DNS rebinding) is
still refused, and the connection goes to the very address that was checked. Redirects are never
followed. The operator may allowlist hosts, IPs or networks (``VIDQ_WEBHOOK_ALLOW_HOSTS``).

The gateway also refuses, when a webhook or a ``callback_url`` is registered, a URL whose host
is by itself such an address (an IP literal, ``localhost``): the client hears of it at once,
with a 422, instead of from a delivery log of refused attempts. A name is not resolved then (DNS
may change, or not exist yet); it is checked on every connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Annotated
from urllib.parse import urlsplit

import httpx
from pydantic import BeforeValidator
from pydantic_settings import NoDecode

from shared.errors import ForbiddenDestination

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


#: ``VIDQ_WEBHOOK_ALLOW_HOSTS``: hosts, IPs or CIDR networks that webhooks may reach although
#: they are private, loopback or link-local (e.g. ``127.0.0.1,10.0.0.0/8,hooks.internal``).
#: Empty: public addresses only. Read by the gateway (registration) and the notifier (sending).
AllowHosts = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]

#: What ``localhost`` and its subdomains resolve to (RFC 6761).
_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))

#: The setting that allowlists webhook receivers; a guard for another purpose names its own.
WEBHOOK_SETTING = "VIDQ_WEBHOOK_ALLOW_HOSTS"


def _name(host: str) -> str:
    """A host as compared with the allowlist and resolved: lower case, no root dot or brackets."""
    return host.lower().rstrip(".").strip("[]")


#: IPv6 prefixes whose last 32 bits are an IPv4 address that a translator on the way connects
#: to: NAT64's well-known prefix (RFC 6052), SIIT's IPv4-translated form (``::ffff:0:a.b.c.d``,
#: RFC 2765) and the deprecated IPv4-compatible form (``::a.b.c.d``).
_IPV4_IN_LAST_32_BITS = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("::/96"),
)
#: NAT64's local-use prefix (RFC 8215): where it carries the IPv4 address depends on the site.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it stands for one (pure).

    IPv4-mapped (``::ffff:a.b.c.d``), 6to4 (``2002:AABB:CCDD::``), NAT64 (``64:ff9b::a.b.c.d``),
    SIIT's IPv4-translated (``::ffff:0:a.b.c.d``) and IPv4-compatible (``::a.b.c.d``) addresses
    all reach an IPv4 host, which is the one to judge: ``[64:ff9b::a9fe:a9fe]`` is the cloud
    metadata address behind a NAT64 gateway.
    """
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _IPV4_IN_LAST_32_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def forbidden(ip: IPAddress) -> bool:
    """Whether an address is off limits by default: anything not globally routable.

    That covers private, loopback, link-local (and so cloud metadata at 169.254.169.254),
    carrier-grade NAT (100.64.0.0/10), reserved, documentation and multicast ranges, and the
    IPv6 forms of any of them (:func:`embedded_ipv4`; Teredo's 2001::/32 is not global).
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return forbidden(inner)
        if ip in _LOCAL_NAT64:
            return True
    return not ip.is_global or ip.is_multicast


class DestinationGuard:
    """Resolves a host and returns only the addresses a webhook may connect to."""

    def __init__(self, allow: Iterable[str] = (), *, setting: str = WEBHOOK_SETTING) -> None:
        #: What a refusal advises: the setting that would allow the address.
        self.advice = f"ask the operator to allowlist it ({setting})"
        self.allowed_hosts: set[str] = set()
        self.allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            try:
                self.allowed_networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.allowed_hosts.add(entry.lower().rstrip("."))

    def _listed(self, ip: IPAddress) -> bool:
        """Whether a forbidden address is one the operator allowlisted."""
        return forbidden(ip) and any(ip in net for net in self.allowed_networks)

    def _allowed(self, ip: IPAddress) -> bool:
        return not forbidden(ip) or self._listed(ip)

    def check_literal(self, host: str) -> None:
        """Refuse a host that is by itself a forbidden address: an IP literal or ``localhost``.

        Numeric forms the resolver accepts count too (``2130706433``, ``0x7f.1``: 127.0.0.1).
        Other names pass: they are checked on every connection (:meth:`resolve`).
        """
        name = _name(host)
        if name in self.allowed_hosts:
            return
        if name == "localhost" or name.endswith(".localhost"):
            if any(self._listed(ip) for ip in _LOOPBACK):
                return  # it reaches an allowlisted loopback address (see :meth:`resolve`)
            raise ForbiddenDestination(f"{host} is a loopback name; {self.advice}")
        try:  # numeric only: never a DNS query
            infos = socket.getaddrinfo(name, None, flags=socket.AI_NUMERICHOST)
        except (socket.gaierror, UnicodeError):
            return
        for info in infos:
            address = str(info[4][0])
            if not self._allowed(ipaddress.ip_address(address)):
                named = f"{host} is" if address == name else f"{host} is {address},"
                raise ForbiddenDestination(
                    f"{named} a private, loopback or link-local address; {self.advice}"
                )

    async def resolve(self, host: str, port: int) -> list[str]:
        """Addresses to connect to; raises ``ForbiddenDestination`` when none is allowed."""
        name = _name(host)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from exc
        except UnicodeError:  # a label over 63 characters, or an empty one (a..example)
            raise httpx.ConnectError(f"cannot resolve {host}: not a valid host name") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if name in self.allowed_hosts:
            return addresses
        refused = [a for a in addresses if not self._allowed(ipaddress.ip_address(a))]
        listed = [a for a in addresses if self._listed(ipaddress.ip_address(a))]
        if refused and listed:
            # An answer with an address the operator allowlisted goes there only: ``localhost``
            # is 127.0.0.1 and ::1, and allowlisting 127.0.0.1 means "send to 127.0.0.1".
            return [a for a in addresses if a not in refused]
        if refused:
            raise ForbiddenDestination(
                f"{host} resolves to {', '.join(refused)}, a private, loopback or link-local address; "
                + self.advice
            )
        return addresses


def refusal(url: str, allow: Iterable[str] = ()) -> str | None:
    """Why a webhook URL being registered can never be delivered to (:meth:`check_literal`), or None."""
    try:
        DestinationGuard(allow).check_literal(urlsplit(url).hostname or "")
    except ForbiddenDestination as exc:
        return str(exc)
    return None
