from __future__ import annotations

import io
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress

from shared.events import RenditionCompleted, RenditionFailed, RenditionProgress, ThumbnailCompleted
from shared.resources import Thumbnail, Video
from tests.unit.vidq.fakeapi import event, rendition, video
from vidq.progress import CountingFile, RenditionBoard, bars


def _board() -> tuple[Progress, RenditionBoard]:
    progress = bars(Console(file=io.StringIO())).__enter__()
    return progress, RenditionBoard(progress)


def _tasks(progress: Progress) -> dict[str, tuple[float, float | None, str]]:
    return {str(t.description): (t.completed, t.total, str(t.fields["note"])) for t in progress.tasks}


def test_a_video_makes_a_bar_per_rendition_and_one_for_the_thumbnail() -> None:
    progress, board = _board()
    board.video(video("vid_1"))
    assert _tasks(progress) == {
        "720p": (0.0, 100.0, "queued"),
        "360p": (0.0, 100.0, "queued"),
        "thumbnail": (0.0, 1.0, "queued"),
    }


def test_events_move_the_bars() -> None:
    progress, board = _board()
    board.video(video("vid_1"))
    board.apply(event(RenditionProgress, 2, rendition("vid_1", "720p", status="processing", progress=42.5)))
    board.apply(
        event(
            RenditionCompleted,
            3,
            rendition("vid_1", "360p", status="ready", size_bytes=1_500_000, width=640, height=360),
        )
    )
    broken = rendition("vid_1", "720p", status="failed", progress=60.0, error="ffmpeg exited 1")
    board.apply(event(RenditionFailed, 4, broken))
    done = Video.model_validate(video("vid_1", thumbnail=Thumbnail(status="ready", widths=[320])))
    board.apply(event(ThumbnailCompleted, 5, done))
    tasks = _tasks(progress)
    assert tasks["720p"] == (60.0, 100.0, "failed: ffmpeg exited 1")
    assert tasks["360p"] == (100.0, 100.0, "ready  640x360  1.5 MB")
    assert tasks["thumbnail"][0] == 1.0


def test_a_bar_tells_the_time_left_and_the_time_taken() -> None:
    progress, board = _board()
    for state in (
        rendition("vid_1", "720p", status="queued", queue_position=1),
        rendition("vid_1", "480p", status="queued", queue_position=3),
        rendition("vid_1", "360p", status="processing", progress=40.0, eta_s=75.0),
        rendition("vid_1", "240p", status="ready", encode_seconds=3.25, size_bytes=10, width=2, height=2),
        rendition("vid_1", "144p", status="processing", progress=1.0),  # no speed known yet
    ):
        board.rendition(state.model_dump(mode="json"))
    tasks = _tasks(progress)
    assert tasks["720p"][2] == "queued"  # an event's place is the one at upload: not shown
    assert tasks["480p"][2] == "queued"
    assert tasks["360p"][2] == "processing  about 1 min 15 s left"
    assert tasks["240p"][2] == "ready  encoded in 3.2 s  2x2  10 bytes"
    assert tasks["144p"][2] == "processing"


def test_a_counting_file_reports_its_position_and_starts_over_on_a_rewind(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"x" * 200_000)
    positions: list[int] = []
    with CountingFile(path, positions.append) as file:
        request = httpx.Request(
            "POST", "http://vidq.test/v1/videos", files={"file": ("clip.mp4", file, "video/mp4")}
        )
        body = request.read()
    assert positions[0] == 0  # httpx rewinds first
    assert positions[-1] == 200_000
    assert positions == sorted(positions)
    assert request.headers["content-length"] == str(len(body))
