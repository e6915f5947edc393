"""Real dependencies, isolated per test.

* ``database_url``: a database made for this test session, with every migration applied, dropped
  at the end; ``db`` truncates it before each test and gives a pool.
* ``vhost``: a fresh RabbitMQ vhost per test (nameko's idea), deleted afterwards, so ``vidq.*``
  names never collide between tests; ``broker`` also applies the policies and declares the
  whole topology with short retry delays.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from shared.bootstrap import bootstrap_broker
from shared.db import _init_connection
from shared.settings import AdminSettings, ServiceSettings
from tests.realdeps import ADMIN_URL, create_database, drop_database, scratch_vhost, unique
from tests.settings import make

S = TypeVar("S", bound=ServiceSettings)

#: Short retry schedules, so retries come back within a test.
FAST_RETRIES: dict[str, Any] = {
    "retry_transcode": (1, 2),
    "retry_thumbnail": (1, 2),
    "retry_projection": (1, 2),
    "retry_webhook": (1, 2, 3),
    "retry_email": (1, 2),
}


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = unique("vidq_test_")
    url = asyncio.run(create_database(name))
    yield url
    asyncio.run(drop_database(name))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10, init=_init_connection)
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'vidq_migrations'"
    )
    await pool.execute("TRUNCATE " + ", ".join(f'"{t["tablename"]}"' for t in tables) + " CASCADE")
    yield pool
    await pool.close()


@pytest.fixture
async def vhost() -> AsyncIterator[str]:
    """The AMQP URL of a new, empty vhost (the administrator may use it)."""
    async with scratch_vhost("vidq-test-") as url:
        yield url


@pytest.fixture
def settings_for(vhost: str, database_url: str, tmp_path: Path) -> Callable[..., Any]:
    """Build any settings class pointed at this test's vhost, database and storage folder."""

    def build(cls: type[S] = AdminSettings, **values: Any) -> S:  # type: ignore[assignment]
        defaults: dict[str, Any] = {
            "amqp_url": vhost,
            "database_url": database_url,
            "storage_dir": tmp_path / "storage",
            "broker_admin_url": ADMIN_URL,
            **FAST_RETRIES,
        }
        fields = cls.model_fields
        return make(cls, **{k: v for k, v in {**defaults, **values}.items() if k in fields})

    return build


@pytest.fixture
async def broker(settings_for: Callable[..., AdminSettings]) -> AdminSettings:
    """This test's vhost with the policies applied and the whole topology declared."""
    settings = settings_for(AdminSettings)
    await bootstrap_broker(settings)
    return settings
