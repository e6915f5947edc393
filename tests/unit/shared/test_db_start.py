"""A service started before its database is up waits for it instead of exiting."""

from __future__ import annotations

import asyncpg
import pytest

from shared import db
from shared.settings import ServiceSettings
from tests.settings import make


async def test_migrations_wait_for_a_database_that_is_not_reachable_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tries: list[str] = []

    async def refused(dsn: str) -> None:
        tries.append(dsn)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(asyncpg, "connect", refused)

    with pytest.raises(ConnectionRefusedError):
        await db.migrate_all(make(ServiceSettings), ("gateway",), give_up_after=0.5)

    assert len(tries) >= 2  # tried again (0.25 s later), then gave up
