"""A service started before its database is up waits for it instead of exiting."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from shared import db
from shared.errors import StartupError, Unreachable
from shared.runtime import connect, run_service
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

    with pytest.raises(
        Unreachable, match=r"the database was not reachable within 0\.5 s: .*refused"
    ) as gave_up:
        await db.migrate_all(make(ServiceSettings), ("gateway",), give_up_after=0.5)
    assert isinstance(gave_up.value.__cause__, ConnectionRefusedError)

    assert len(tries) >= 2  # tried again (0.25 s later), then gave up


@pytest.mark.parametrize(
    ("error", "status"),
    [(Unreachable("the broker was not reachable within 120 s: refused"), 69), (StartupError("no vhost"), 78)],
    ids=["unreachable: restart me", "misconfigured: do not"],
)
def test_a_service_that_cannot_start_says_why_in_one_line_and_exits_with_a_status_that_says_which(
    error: Exception, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        raise error

    with pytest.raises(SystemExit) as exited:
        run_service(main)
    assert exited.value.code == status
    [record] = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert record.getMessage() == f"cannot start: {error}"
    assert record.exc_info is None  # no traceback


async def test_a_broker_not_up_yet_is_one_warning_a_try_and_not_also_aiormqs_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(Unreachable, match=r"the broker was not reachable within 0\.6 s"):
        await connect("amqp://guest:guest@127.0.0.1:9/vidq", "test", give_up_after=0.6)  # nothing on port 9
    assert [r for r in caplog.records if r.name.startswith("aiormq")] == []
    tries = [r for r in caplog.records if "broker not reachable yet" in r.getMessage()]
    assert len(tries) >= 1
    assert {r.levelname for r in tries} == {"WARNING"}
