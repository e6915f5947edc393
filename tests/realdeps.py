"""Helpers to reach this machine's real broker and database, shared by integration and e2e tests."""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from urllib.parse import quote, urlparse, urlunparse

import asyncpg

from shared.bootstrap import OWNERS
from shared.db import migrate
from shared.messaging.management import Management
from tests.settings import ROOT, machine_value

ADMIN_URL = machine_value("VIDQ_BROKER_ADMIN_URL", "http://guest:guest@127.0.0.1:15672")
BASE_DB_URL = machine_value("VIDQ_DATABASE_URL", "postgresql://vidq@127.0.0.1:5432/vidq")


def with_database(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


def amqp_url_for(vhost: str, user: str | None = None, password: str | None = None) -> str:
    """An AMQP URL for ``vhost`` with the administrator's credentials, or the ones given."""
    admin = urlparse(ADMIN_URL)
    credentials = f"{user or admin.username}:{password or admin.password}"
    return f"amqp://{credentials}@{admin.hostname}:5672/{quote(vhost, safe='')}"


@contextlib.asynccontextmanager
async def scratch_vhost(prefix: str) -> AsyncIterator[str]:
    """A new, empty RabbitMQ vhost the administrator may use (its AMQP URL), deleted afterwards."""
    name = unique(prefix)
    async with Management(ADMIN_URL) as api:
        await api.ensure_vhost(name)
        await api.grant(name, api.admin_user)
        try:
            yield amqp_url_for(name)
        finally:
            await api.delete_vhost(name)


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def create_database(name: str) -> str:
    """Create a database with every service's migrations applied; returns its URL."""
    conn = await asyncpg.connect(BASE_DB_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = with_database(BASE_DB_URL, name)
    conn = await asyncpg.connect(url)
    try:
        for owner in OWNERS:
            await migrate(conn, owner, ROOT / "deploy" / "migrations")
    finally:
        await conn.close()
    return url


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(BASE_DB_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


#: Ports handed out by this process, never handed out twice.
_HANDED_OUT: set[int] = set()
#: Below Linux's ephemeral range (32768–60999), which the kernel hands to outgoing connections
#: and to servers that bind port 0 (an Erlang node's distribution listener, say): a port taken
#: from that range can be taken by one of those between this check and the server's bind.
_PORTS = range(20000, 32768)


def free_port() -> int:
    """A port nobody listens on now, outside the ephemeral range, not handed out before."""
    for _ in range(1000):
        port = secrets.choice(_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")
