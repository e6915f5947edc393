"""A service's first connection to PostgreSQL: a missing database is made, a refusal is one line."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from shared.db import DatabaseRefused, connect_creating_database
from shared.runtime import EX_CONFIG
from tests.realdeps import BASE_DB_URL, drop_database, unique, with_database
from tests.settings import ROOT


async def test_a_missing_database_is_created_once_by_services_starting_together() -> None:
    name = unique("vidq_missing_")
    url = with_database(BASE_DB_URL, name)
    try:
        connections = await asyncio.gather(*(connect_creating_database(url) for _ in range(3)))
        for conn in connections:
            assert await conn.fetchval("SELECT current_database()") == name
            await conn.close()
    finally:
        await drop_database(name)


async def test_a_role_that_does_not_exist_is_refused_with_advice() -> None:
    url = urlparse(BASE_DB_URL)._replace(netloc=f"{unique('nobody_')}@{urlparse(BASE_DB_URL).hostname}")
    with pytest.raises(DatabaseRefused, match="does not exist") as refused:
        await connect_creating_database(url.geturl())
    assert "VIDQ_DATABASE_URL" in str(refused.value)


@pytest.mark.parametrize("service", ["gateway", "transcoder", "notifier"])
async def test_a_service_that_cannot_start_says_why_in_one_line_and_exits_78(
    service: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDQ_")}
    env["PYTHONPATH"] = str(ROOT)  # run from a folder without a .env
    host = urlparse(BASE_DB_URL).hostname
    env["VIDQ_DATABASE_URL"] = f"postgresql://{unique('nobody_')}@{host}/vidq"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        service,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    text = output.decode()
    assert process.returncode == EX_CONFIG, text
    assert "Traceback" not in text
    [line] = [line for line in text.splitlines() if "CRITICAL" in line]
    assert "cannot start" in line
    assert "does not exist" in line
