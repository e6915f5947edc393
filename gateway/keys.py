"""API keys from the command line: ``python -m gateway keys create | ls | revoke``.

A client may hold several keys at once, so a key is rotated without a gap: create a second key
for the client (``--client``), move the application to it, revoke the first. A revoked key is
refused from the next request on (keys are looked up per request, never cached). The key itself
is shown once, when it is made; afterwards only its prefix (its first 12 characters) tells keys
apart. Every command names the database it acts on first, on stderr: a command run outside the
deployment's environment would otherwise act on the default database without a word.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from gateway import repository as repo
from gateway.auth import create_client_with_key, new_api_key
from gateway.repository import Client, Conn
from shared.errors import StartupError
from shared.ids import new_id


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    prefix: str
    client_id: str
    client_name: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


def where(database_url: str) -> str:
    """``database vidq at 127.0.0.1:5432 (user vidq)``, no password."""
    parts = urlsplit(database_url)
    database = parts.path.lstrip("/") or "(the user's default)"
    user = f" (user {parts.username})" if parts.username else ""
    return f"database {database} at {parts.hostname or 'localhost'}:{parts.port or 5432}{user}"


async def create_key(conn: Conn, name: str, client_id: str | None = None) -> tuple[Client, str]:
    """A new client and its key; or, with ``client_id``, one more key for that client."""
    if client_id is None:
        return await create_client_with_key(conn, name)
    client = await repo.client_by_id(conn, client_id)
    if client is None:
        raise StartupError(f"no client {client_id!r} (python -m gateway keys ls lists them)")
    api_key = new_api_key()
    await repo.insert_api_key(conn, new_id("key"), client.id, name, api_key)
    return client, api_key


async def list_keys(conn: Conn, *, revoked: bool = False) -> list[KeyRow]:
    return [KeyRow(**dict(row)) for row in await repo.api_key_rows(conn, revoked=revoked)]


async def revoke_key(conn: Conn, key: str) -> KeyRow:
    """Revoke the key with this id or prefix (exactly one key must have it)."""
    rows = [row for row in await list_keys(conn, revoked=True) if key in (row.id, row.prefix)]
    if not rows:
        raise StartupError(f"no API key {key!r} (give a key id or the prefix that keys ls shows)")
    if len(rows) > 1:
        raise StartupError(f"{len(rows)} keys have the prefix {key!r}; give the key id")
    [row] = rows
    if row.revoked_at is None:
        await repo.revoke_api_key(conn, row.id)
    return row


def print_keys(rows: list[KeyRow]) -> None:
    """A table on stdout: one key a line."""
    header = ("KEY ID", "PREFIX", "CLIENT", "CLIENT NAME", "KEY NAME", "CREATED", "REVOKED")
    lines = [
        (
            row.id,
            row.prefix,
            row.client_id,
            row.client_name,
            row.name,
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "-",
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    for cells in [header, *lines]:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n")
