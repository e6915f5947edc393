"""ffmpeg that hangs is killed and the rendition retried; one past its time limit fails with the reason."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import World, clip, wait_and_count

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

STACK_ENV = {"VIDQ_TRANSCODER_REALTIME": "true", "VIDQ_TRANSCODER_STALL_TIMEOUT_S": "3"}


def _encoder_of(video_id: str) -> int | None:
    """The transcoder's ffmpeg for the video (the thumbnailer's reads the same source)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if (
                cmdline.startswith(b"ffmpeg")
                and f"{video_id}/source".encode() in cmdline
                and b"libx264" in cmdline
            ):
                return int(proc.name)
    return None


async def test_a_hung_ffmpeg_is_killed_and_the_rendition_retried(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    source = clip(world, tmp_path, seconds=4)
    async with world.client() as api:
        video_id = await world.upload(api, source, qualities="144p")
    deadline = time.monotonic() + 30
    pid = None
    while pid is None and time.monotonic() < deadline:
        pid = _encoder_of(video_id)
        await asyncio.sleep(0.05)
    assert pid is not None, "no ffmpeg started"
    started = time.monotonic()
    os.kill(pid, signal.SIGSTOP)  # a hang: the process is alive but makes no progress
    tally = await wait_and_count(world, [video_id], since=started)
    figures.append(tally.line("ffmpeg hung (SIGSTOP), watchdog at 3 s"))
    assert tally.perfect, tally
    async with world.client() as api:
        rendition = (await api.get(f"/v1/videos/{video_id}")).json()["renditions"][0]
    assert rendition["status"] == "ready"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the hung ffmpeg was killed, not left behind


async def test_an_encode_past_its_time_limit_fails_with_the_reason(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    for name in [n for n in world.stack.processes if n.startswith("transcoder")]:
        await world.stack.stop(name)
    await world.start(
        "transcoder",
        name="transcoder-strict",
        VIDQ_TRANSCODER_MIN_TIMEOUT_S="2",
        VIDQ_TRANSCODER_TIMEOUT_FACTOR="0.1",
    )
    try:
        source = clip(world, tmp_path, seconds=6)
        started = time.monotonic()
        async with world.client() as api:
            video_id = await world.upload(api, source, qualities="144p")
        tally = await wait_and_count(world, [video_id], since=started)
        async with world.client() as api:
            video = (await api.get(f"/v1/videos/{video_id}")).json()
    finally:
        await world.stack.stop("transcoder-strict")
        await world.start("transcoder")
    assert video["status"] == "failed"
    assert "144p" in video["error"]
    assert "2 s limit" in video["error"]
    assert video["renditions"][0]["attempts"] == 3
    assert tally.stuck == 0
    figures.append(
        f"ffmpeg past its 2 s limit: 1 video, failed after {video['renditions'][0]['attempts']} attempts "
        f"with the reason, 0 stuck, in {tally.seconds:.0f} s"
    )


async def test_a_poster_whose_ffmpeg_failed_is_made_again_on_the_clients_retry(
    world: World, figures: list[str], tmp_path: Path
) -> None:
    # The thumbnailer's ffmpeg fails (a stand-in first on its PATH): the video fails by its
    # thumbnail, and the client's POST …/thumbnail/retry, once ffmpeg works, makes it ready.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    broken = bin_dir / "ffmpeg"
    broken.write_text("#!/bin/sh\necho 'ffmpeg stand-in: no picture today' >&2\nexit 1\n")
    broken.chmod(0o755)
    await world.stack.stop("thumbnailer")
    await world.start("thumbnailer", name="thumbnailer-broken", PATH=f"{bin_dir}:{os.environ['PATH']}")
    try:
        async with world.client() as api:
            video_id = await world.upload(api, clip(world, tmp_path, seconds=2), qualities="144p")
        await wait_and_count(world, [video_id], since=time.monotonic())
        async with world.client() as api:
            failed = (await api.get(f"/v1/videos/{video_id}")).json()
    finally:
        await world.stack.stop("thumbnailer-broken")
        await world.start("thumbnailer")
    assert failed["status"] == "failed"
    assert failed["thumbnail"]["status"] == "failed"
    assert "thumbnail failed" in failed["error"]
    assert "no picture today" in failed["error"]

    started = time.monotonic()
    async with world.client() as api:
        response = await api.post(f"/v1/videos/{video_id}/thumbnail/retry")
        assert response.status_code == 202, response.text
        assert (response.json()["status"], response.json()["thumbnail"]["status"]) == ("processing", "queued")
        tally = await wait_and_count(world, [video_id], since=started)
        video = (await api.get(f"/v1/videos/{video_id}")).json()
        poster = await api.get(f"/v1/videos/{video_id}/thumbnail", params={"width": 320})
        again = await api.post(f"/v1/videos/{video_id}/thumbnail/retry")
    assert (video["status"], video["error"], video["thumbnail"]["status"]) == ("ready", None, "ready")
    assert poster.status_code == 200
    assert poster.headers["content-type"] == "image/jpeg"
    assert again.status_code == 409  # only a failed thumbnail runs again
    assert tally.perfect, tally  # one video.ready, no gap in the events' sequence
    figures.append(f"thumbnail failed, retried by the client: ready {tally.seconds:.1f} s after the retry")
