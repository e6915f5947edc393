"""PostgreSQL through asyncpg: the pool, the migration runner and error translation.

Repositories are modules of ``async def`` functions that take a connection; transactions are
opened by the use case (``async with conn.transaction():``), never inside a repository function.
Migrations are numbered SQL files under ``deploy/migrations/<owner>/`` applied at start-up by the
owning service, under an advisory lock so that replicas starting together apply them once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote, urlparse

import asyncpg

from shared.backoff import until_reachable
from shared.errors import StartupError, TransientError
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x76696471  # "vidq": one advisory lock key for every owner's migrations

TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    # "database … is not currently accepting connections" (ALLOW_CONNECTIONS false, as a restore
    # or a maintenance does), and a lock not available at once (55P03): both pass
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without a reset query (asyncpg still rolls back an open transaction)."""


async def create_pool(
    settings: ServiceSettings,
    service: str,
    *,
    give_up_after: float = 60.0,
    reset_sessions: bool = True,
    max_size: int | None = None,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """Open the pool, retrying while the database is not reachable yet.

    By default a connection's session is reset on release (``UNLISTEN *``, ``RESET ALL``,
    advisory locks released), which is one more round trip per use. A service that never
    changes session state (no LISTEN, SET or advisory lock on pooled connections) passes
    ``reset_sessions=False`` and saves it. Its sessions are named after the ``service``
    (``application_name`` ``vidq-notifier``: how ops tell them apart in ``pg_stat_activity``).
    """

    async def attempt() -> asyncpg.Pool:
        size = max_size or settings.db_pool_max
        pool = await asyncpg.create_pool(
            str(settings.database_url),
            min_size=min(settings.db_pool_min, size),
            max_size=size,
            server_settings={"application_name": f"vidq-{service}", **(server_settings or {})},
            command_timeout=settings.db_command_timeout_s,
            init=_init_connection,
            reset=None if reset_sessions else _keep_session,
        )
        assert pool is not None  # noqa: S101 - asyncpg types the pool as optional
        return pool

    return await until_reachable(
        attempt, errors=TRANSIENT_DB_ERRORS, what="database", give_up_after=give_up_after
    )


@contextmanager
def map_asyncpg_errors() -> Iterator[None]:
    """Translate connection-level database failures into :class:`TransientError`."""
    try:
        yield
    except TRANSIENT_DB_ERRORS as exc:
        raise TransientError(f"database unavailable: {exc!r}") from exc


P = ParamSpec("P")
T = TypeVar("T")


def db_errors_are_transient(handler: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Make a message handler's database outages ``TransientError``s (retried, not parked)."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with map_asyncpg_errors():
            return await handler(*args, **kwargs)

    return wrapper


async def migrate(conn: asyncpg.Connection, owner: str, directory: Path) -> list[str]:
    """Apply ``directory/<owner>/NNNN_*.sql`` files not applied yet; returns their names."""
    files = sorted((directory / owner).glob("*.sql"))
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS vidq_migrations (
                   owner text NOT NULL, name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (owner, name))"""
        )
        done = {
            r["name"] for r in await conn.fetch("SELECT name FROM vidq_migrations WHERE owner = $1", owner)
        }
        for path in files:
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO vidq_migrations (owner, name) VALUES ($1, $2)", owner, path.name
                )
            applied.append(path.name)
            log.info("applied migration %s/%s", owner, path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied


class DatabaseRefused(StartupError):
    """The server refused ``VIDQ_DATABASE_URL``'s role or database, and waiting will not help."""


async def connect_creating_database(url: str) -> asyncpg.Connection:
    """Connect to ``url``; a database that does not exist yet is created if the role may.

    A stock PostgreSQL has no vidq database: a role allowed to create databases (the
    superuser of a development machine) creates it, as ``make run``'s setup would, instead of
    the service stopping at its first query. A role that does not exist, a wrong password, or a
    role without CREATEDB is a :class:`DatabaseRefused` naming what to do.
    """
    try:
        return await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        await _create_database(url)
        return await asyncpg.connect(url)
    except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError) as exc:
        raise DatabaseRefused(f"{_ADVICE}: {exc}") from None


_ADVICE = (
    "the database server refused VIDQ_DATABASE_URL (run deploy/local/setup.sh, or make run, to create "
    "the vidq role and database, or set VIDQ_DATABASE_URL)"
)


async def _create_database(url: str) -> None:
    """Create the URL's database from the server's maintenance database, with the same role.

    As ``createdb`` does: from ``postgres``, else ``template1`` (a server may have dropped the
    first or refuse it to the role). Two services creating it at once: one does, the other finds
    it made, or retries while the template is in use.
    """
    name = unquote(urlparse(url).path.lstrip("/"))
    if not name:
        raise DatabaseRefused(f"{_ADVICE}: the database it names by default does not exist")
    try:
        admin = await asyncpg.connect(url, database="postgres")
    except asyncpg.PostgresError:
        try:
            admin = await asyncpg.connect(url, database="template1")
        except asyncpg.PostgresError as exc:
            raise DatabaseRefused(f"{_ADVICE}: database {name!r} does not exist ({exc})") from None
    try:
        await admin.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
        log.warning("created the database %s, which did not exist", name)
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        pass  # another service created it a moment ago (the catalog's index says so in a race)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise DatabaseRefused(f"{_ADVICE}: database {name!r} does not exist and {exc}") from None
    except asyncpg.ObjectInUseError as exc:  # the template is in use: another creation under way
        raise ConnectionError(f"creating database {name!r}: {exc}") from None
    finally:
        await admin.close()


async def migrate_all(
    settings: ServiceSettings, owners: tuple[str, ...], *, give_up_after: float = 60.0
) -> None:
    """Apply the migrations of ``owners`` over one short-lived connection.

    A service started while the database is still starting (or briefly away) waits for it, as
    :func:`create_pool` does, instead of exiting; a database that does not exist is created if
    the role may (:func:`connect_creating_database`).
    """

    async def attempt() -> Any:
        return await connect_creating_database(str(settings.database_url))

    conn: Any = await until_reachable(
        attempt, errors=TRANSIENT_DB_ERRORS, what="database", give_up_after=give_up_after
    )
    try:
        for owner in owners:
            await migrate(conn, owner, settings.migrations_dir)
    finally:
        await conn.close()
