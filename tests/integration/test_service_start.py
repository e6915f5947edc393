"""A service's start: a missing database is made; a refusal is one line and exit 78; --help starts nothing."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest

from shared.db import DatabaseRefused, connect_creating_database
from shared.runtime import EX_CONFIG
from tests.realdeps import BASE_DB_URL, amqp_url_for, drop_database, unique, with_database
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


def _bare_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDQ_")}
    env["PYTHONPATH"] = str(ROOT)  # run from a folder without a .env
    return {**env, **values}


async def _run(service: str, *args: str, cwd: Path, env: dict[str, str]) -> tuple[int | None, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        service,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, output.decode()


def _one_critical_line(text: str) -> str:
    assert "Traceback" not in text
    [line] = [line for line in text.splitlines() if "CRITICAL" in line]
    assert "cannot start" in line
    return line


@pytest.mark.parametrize("service", ["gateway", "transcoder", "notifier"])
async def test_a_service_refused_by_the_database_says_why_in_one_line_and_exits_78(
    service: str, tmp_path: Path
) -> None:
    host = urlparse(BASE_DB_URL).hostname
    env = _bare_env(VIDQ_DATABASE_URL=f"postgresql://{unique('nobody_')}@{host}/vidq")
    status, text = await _run(service, cwd=tmp_path, env=env)
    assert status == EX_CONFIG, text
    assert "does not exist" in _one_critical_line(text)


@pytest.mark.parametrize("service", ["gateway", "thumbnailer"])
async def test_a_service_refused_by_the_broker_says_why_at_once_and_exits_78(
    service: str, tmp_path: Path
) -> None:
    # wrong credentials do not get better with waiting (a broker that is not up yet does)
    database = unique("vidq_refused_")  # the gateway makes it, and migrates, before the broker
    env = _bare_env(
        VIDQ_AMQP_URL=amqp_url_for(unique("vidq-nowhere-"), unique("nobody-"), "wrong"),
        VIDQ_DATABASE_URL=with_database(BASE_DB_URL, database),
    )
    try:
        status, text = await _run(service, cwd=tmp_path, env=env)
    finally:
        await drop_database(database)
    assert status == EX_CONFIG, text
    assert "refused user 'nobody-" in _one_critical_line(text)


@pytest.mark.parametrize("service", ["gateway", "transcoder", "thumbnailer", "notifier", "shared.devstack"])
async def test_help_says_what_a_service_is_and_starts_nothing(service: str, tmp_path: Path) -> None:
    # nothing listens on port 9: a service that started anyway would wait for it, not print help
    env = _bare_env(
        VIDQ_AMQP_URL="amqp://guest:guest@127.0.0.1:9/", VIDQ_DATABASE_URL="postgresql://x@127.0.0.1:9/x"
    )
    status, text = await _run(service, "--help", cwd=tmp_path, env=env)
    assert status == 0, text
    assert text.startswith(f"usage: python -m {service}")
    assert list(tmp_path.iterdir()) == []
    status, text = await _run(service, "--no-such-flag", cwd=tmp_path, env=env)
    assert status == 2, text


@pytest.mark.parametrize(
    ("service", "own", "others"),
    [
        ("gateway.app", "vidq_outbox_pending", ("vidq_webhook", "vidq_ffmpeg", "vidq_delivery_log")),
        ("transcoder.app", "vidq_ffmpeg_speed_ratio", ("vidq_outbox", "vidq_sse", "vidq_webhook")),
        ("thumbnailer.app", "vidq_messages", ("vidq_outbox", "vidq_sse", "vidq_webhook", "vidq_ffmpeg")),
        ("notifier.app", "vidq_webhook_deliveries", ("vidq_outbox", "vidq_sse", "vidq_ffmpeg")),
    ],
)
async def test_a_service_exports_only_the_metrics_it_measures(
    service: str, own: str, others: tuple[str, ...], tmp_path: Path
) -> None:
    # a count() or absent() over a metric must see the processes that measure it, not all four
    script = (
        f"import {service}\n"
        "from prometheus_client import REGISTRY\n"
        "print(' '.join(m.name for m in REGISTRY.collect() if m.name.startswith('vidq_')))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=tmp_path, env=_bare_env(), stdout=asyncio.subprocess.PIPE
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    names = output.decode().split()
    assert own in names
    assert not [n for n in names if n.startswith(others)], names


async def test_api_keys_are_created_listed_rotated_and_revoked_from_the_command_line(
    tmp_path: Path, database_url: str, db: asyncpg.Pool
) -> None:
    env = _bare_env(VIDQ_DATABASE_URL=database_url)
    name = urlparse(database_url).path.lstrip("/")

    async def keys(*args: str) -> tuple[int | None, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "keys", *args, cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        return process.returncode, out.decode(), err.decode()

    status, first, said = await keys("create", "--name", "shop")
    assert status == 0, said
    assert said.startswith(f"database {name} at ")  # where it acted, first
    client = said.split("client ", 1)[1].split(" ", 1)[0]
    status, second, said = await keys("create", "--name", "shop, rotated", "--client", client)
    assert status == 0, said
    assert f"client {client} (shop)" in said
    assert first.strip() != second.strip()
    assert await db.fetchval("SELECT count(*) FROM clients") == 1  # one client, two keys

    status, listing, _ = await keys("ls")
    assert status == 0
    header, *rows = listing.splitlines()
    assert header.split()[:2] == ["KEY", "ID"]
    assert len(rows) == 2
    assert all(client in row for row in rows)
    assert first.strip()[:12] in listing
    assert first.strip() not in listing  # never the key itself

    status, _, said = await keys("revoke", first.strip()[:12])
    assert status == 0, said
    assert "is revoked" in said
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL") == 1
    status, listing, _ = await keys("ls")
    assert len(listing.splitlines()) == 2  # the header and the second key
    status, listing, _ = await keys("ls", "--all")
    assert len(listing.splitlines()) == 3

    status, _, said = await keys("revoke", "key_nope")
    assert status == EX_CONFIG
    assert "no API key 'key_nope'" in said
    assert "Traceback" not in said
    status, _, said = await keys("create", "--name", "x", "--client", "cli_nope")
    assert status == EX_CONFIG
    assert "no client 'cli_nope'" in said
