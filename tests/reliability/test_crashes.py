"""Processes die (kill -9) or are stopped (SIGTERM) mid-work: nothing lost, stuck or doubled."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from tests.reliability.conftest import World, clip, wait_and_count, webhook_ready_ids

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

# Encodes last as long as their clip, so there is always one to interrupt.
STACK_ENV = {"VIDQ_TRANSCODER_REALTIME": "true", "VIDQ_TRANSCODER_CONCURRENCY": "2"}


async def _processing(world: World) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(world.database.url)
    try:
        rows = await conn.fetch("SELECT video_id, quality FROM renditions WHERE status = 'processing'")
    finally:
        await conn.close()
    return [(r["video_id"], r["quality"]) for r in rows]


async def _until_encoding(world: World, timeout: float = 30) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = await _processing(world)
        if busy:
            return busy
        await asyncio.sleep(0.1)
    raise AssertionError("no encode started")


def _no_half_written_files(world: World, busy: list[tuple[str, str]]) -> None:
    for video_id, quality in busy:
        final = world.storage / "videos" / video_id / "renditions" / f"{quality}.mp4"
        assert not final.exists(), f"{final} exists while its rendition is still encoding"


async def test_kill_9_of_transcoders_mid_encode(world: World, figures: list[str], tmp_path: Path) -> None:
    await world.start("transcoder", name="transcoder-2")
    source = clip(world, tmp_path, seconds=3)
    async with world.client() as api:
        video_ids = [await world.upload(api, source, qualities="240p,144p") for _ in range(6)]
    started = time.monotonic()
    kills = 0
    for round_ in range(5):
        busy = await _until_encoding(world)
        victim = ["transcoder", "transcoder-2"][round_ % 2]
        await world.stack.stop(victim, sig=signal.SIGKILL)
        kills += 1
        _no_half_written_files(world, busy)
        await world.start("transcoder", name=victim)
        await asyncio.sleep(1.0)
    tally = await wait_and_count(world, video_ids, since=started)
    figures.append(tally.line(f"kill -9 transcoder x{kills}"))
    assert tally.perfect, tally


def _ffmpeg_children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid …": the name may hold spaces, so split after the last ")"
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
            if comm == "ffmpeg" and int(ppid) == pid and state not in "ZX":
                found.append(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"  # a zombie has died (nobody reaped it yet)


async def test_the_ffmpeg_of_a_killed_transcoder_dies_with_it(world: World, tmp_path: Path) -> None:
    # Otherwise it encodes to the end for nobody, beside the job's next owner.
    source = clip(world, tmp_path, seconds=6)
    async with world.client() as api:
        video_id = await world.upload(api, source, qualities="240p,144p")
    started = time.monotonic()
    # whichever transcoder took the job (an earlier test may have started a second one)
    transcoders = [name for name in world.stack.processes if name.startswith("transcoder")]
    deadline = time.monotonic() + 30
    victim, encoders = "", list[int]()
    while not encoders and time.monotonic() < deadline:
        for name in transcoders:
            encoders = _ffmpeg_children(world.stack.processes[name].pid)
            if encoders:
                victim = name
                break
        await asyncio.sleep(0.05)
    assert encoders, "no ffmpeg started"

    await world.stack.stop(victim, sig=signal.SIGKILL)

    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in encoders) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not [pid for pid in encoders if _alive(pid)]
    await world.start("transcoder", name=victim)
    tally = await wait_and_count(world, [video_id], since=started)
    assert tally.perfect, tally


async def test_kill_9_of_thumbnailer_notifier_and_gateway(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    source = clip(world, tmp_path, seconds=3)
    async with world.client() as api:
        hook = (
            await api.post(
                "/v1/webhooks", json={"url": f"{world.receiver_url}/crashes", "events": ["video.ready"]}
            )
        ).json()
        assert hook["enabled"]
        video_ids = [await world.upload(api, source, qualities="144p") for _ in range(4)]
    started = time.monotonic()
    for victim in ("thumbnailer", "notifier", "gateway"):
        await asyncio.sleep(0.7)
        await world.stack.stop(victim, sig=signal.SIGKILL)
        await asyncio.sleep(0.5)
        await world.start(victim)
    await world.stack.wait_ready(world.url)
    async with world.client() as api:
        video_ids.append(await world.upload(api, source, qualities="144p"))  # and it takes new work
    tally = await wait_and_count(world, video_ids, since=started)
    figures.append(tally.line("kill -9 thumbnailer, notifier, gateway"))
    assert tally.perfect, tally
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(webhook_ready_ids(world, "/crashes")) < len(video_ids):
        await asyncio.sleep(0.2)
    ids = webhook_ready_ids(world, "/crashes")
    assert set(ids) == set(video_ids)  # every video.ready delivered …
    assert all(len(v) == 1 for v in ids.values())  # … under one webhook-id, however often it was sent


async def test_sigterm_hands_work_back_and_exits_0(world: World, figures: list[str], tmp_path: Path) -> None:
    source = clip(world, tmp_path, seconds=6)
    async with world.client() as api:
        video_ids = [await world.upload(api, source, qualities="144p") for _ in range(2)]
    await _until_encoding(world)
    started = time.monotonic()
    victim = next(name for name in world.stack.processes if name.startswith("transcoder"))
    status = await world.stack.stop(victim, sig=signal.SIGTERM, grace=15)
    assert status == 0
    if not any(name.startswith("transcoder") for name in world.stack.processes):
        await world.start("transcoder")
    tally = await wait_and_count(world, video_ids, since=started)
    figures.append(tally.line("SIGTERM transcoder mid-encode"))
    assert tally.perfect, tally


async def test_every_service_exits_0_on_sigterm_and_the_stack_comes_back(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    source = clip(world, tmp_path, seconds=3)
    async with world.client() as api:
        video_ids = [await world.upload(api, source, qualities="144p") for _ in range(2)]
    await asyncio.sleep(1.0)  # uploads land in every service's hands
    started = time.monotonic()
    statuses = {
        name: await world.stack.stop(name, sig=signal.SIGTERM, grace=20)
        for name in list(world.stack.processes)
    }
    assert set(statuses) >= {"gateway", "thumbnailer", "notifier"}
    assert all(code == 0 for code in statuses.values()), statuses
    for service in ("gateway", "transcoder", "thumbnailer", "notifier"):
        await world.start(service)
    await world.stack.wait_ready(world.url)
    tally = await wait_and_count(world, video_ids, since=started)
    figures.append(tally.line(f"SIGTERM to all {len(statuses)} processes (all exited 0)"))
    assert tally.perfect, tally
