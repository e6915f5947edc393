"""Transcoders told to serve different rungs share a video's work between them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.harness import read_sse
from tests.e2e.stack import Running
from tests.media import make_clip

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _queues_worked(log: Path) -> set[str]:
    """The transcode queues whose jobs this process ran (its log lines carry the queue)."""
    queues = set()
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            str(entry.get("queue", "")).startswith("vidq.transcode.")
            and entry.get("logger") == "shared.runtime"
        ):
            continue
        if str(entry.get("queue", "")).startswith("vidq.transcode."):
            queues.add(entry["queue"])
    return queues


async def test_each_transcoder_encodes_only_the_rungs_it_serves(running: Running, tmp_path: Path) -> None:
    stack = running.stack
    await stack.stop("transcoder")
    low = await stack.start_service(
        "transcoder",
        name="transcoder-low",
        extra_env={"VIDQ_TRANSCODER_QUALITIES": "144p"},
    )
    high = await stack.start_service(
        "transcoder",
        name="transcoder-high",
        extra_env={"VIDQ_TRANSCODER_QUALITIES": "240p,360p"},
    )
    clip = make_clip(tmp_path / "clip.mp4", width=640, height=360, duration=1)
    async with running.client() as api:
        with clip.open("rb") as f:
            video = (await api.post("/v1/videos", files={"file": ("clip.mp4", f)})).json()
        events = await read_sse(api, f"/v1/videos/{video['id']}/events")
    assert events[-1].event == "video.ready"
    assert low.log_path is not None
    assert high.log_path is not None
    assert _queues_worked(low.log_path) == {"vidq.transcode.144p"}
    assert _queues_worked(high.log_path) == {"vidq.transcode.240p", "vidq.transcode.360p"}


def _encodes(log: Path, video_id: str) -> list[set[str]]:
    """The rungs of ``video_id`` that each ffmpeg run of this process encoded, in order."""
    runs = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        found = _ENCODING.match(str(entry.get("message", "")))
        if found and found["video"] == video_id:
            runs.append(set(found["rungs"].split(", ")))
    return runs


_ENCODING = re.compile(r"encoding (?P<rungs>.+) of (?P<video>\S+) \(attempt")


@pytest.mark.parametrize(
    ("lowest_alone", "runs"),
    [
        ("true", [{"144p"}, {"360p", "240p"}]),
        ("idle", [{"144p"}, {"360p", "240p"}]),  # nothing else to encode: early playback
        ("false", [{"360p", "240p", "144p"}]),
    ],
)
async def test_a_transcoder_encodes_the_rungs_it_holds_from_one_decode(
    running: Running, tmp_path: Path, lowest_alone: str, runs: list[set[str]]
) -> None:
    # The three messages of a video arrive on three queues at once; the first claims its siblings,
    # so the rungs share one ffmpeg (the lowest first and apart, unless told otherwise).
    stack = running.stack
    for name in [name for name in stack.processes if name.startswith("transcoder")]:
        await stack.stop(name)
    transcoder = await stack.start_service(
        "transcoder",
        name=f"transcoder-alone-{lowest_alone}",
        extra_env={"VIDQ_TRANSCODER_LOWEST_ALONE": lowest_alone},
    )
    clip = make_clip(tmp_path / "clip.mp4", width=640, height=360, duration=1)
    async with running.client() as api:
        with clip.open("rb") as f:
            video = (await api.post("/v1/videos", files={"file": ("clip.mp4", f)})).json()
        events = await read_sse(api, f"/v1/videos/{video['id']}/events")
        finished = (await api.get(f"/v1/videos/{video['id']}")).json()
    assert events[-1].event == "video.ready"
    assert {r["quality"]: r["status"] for r in finished["renditions"]} == {
        "360p": "ready",
        "240p": "ready",
        "144p": "ready",
    }
    assert transcoder.log_path is not None
    assert _encodes(transcoder.log_path, video["id"]) == runs
