"""A video's live stream ends at its terminal event, even when its events go on after it.

When one rendition fails for good the video is ``failed`` at once, while its other renditions
go on encoding (a retry of the failed one can still make the video ready) and report progress
after ``video.failed``. The transcoder is stopped here and its reports are published on
``vidq.results`` by the test, as a transcoder would, so the order is the test's to choose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from shared.ids import new_id
from shared.messaging.publisher import AmqpPublisher
from shared.reports import RenditionFailedReport, RenditionProgressReport, publish_report
from shared.runtime import connect
from tests.e2e.harness import read_sse
from tests.e2e.stack import Running
from tests.media import make_clip

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(running: Running) -> AsyncIterator[AmqpPublisher]:
    """The transcoder stopped; a publisher on ``vidq.results`` standing in for it."""
    await running.stack.stop("transcoder")
    connection = await connect(running.env["VIDQ_AMQP_URL"], "test")
    try:
        yield await AmqpPublisher.open(connection)
    finally:
        await connection.close()


async def _logged(running: Running, video_id: str) -> list[str]:
    conn = await asyncpg.connect(running.env["VIDQ_DATABASE_URL"])
    try:
        rows = await conn.fetch(
            "SELECT type FROM video_events WHERE video_id = $1 ORDER BY sequence", video_id
        )
    finally:
        await conn.close()
    return [row["type"] for row in rows]


async def test_the_stream_ends_at_video_failed_while_a_sibling_still_reports(
    running: Running, worker: AmqpPublisher, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "c.mp4", width=640, height=360, duration=1)
    async with running.client() as api:
        with clip.open("rb") as body:
            upload = await api.post(
                "/v1/videos", files={"file": ("c.mp4", body)}, data={"qualities": "360p,144p"}
            )
        video = upload.json()
        conn = await asyncpg.connect(running.env["VIDQ_DATABASE_URL"])
        try:
            jobs = {
                row["quality"]: row["job_id"]
                for row in await conn.fetch(
                    "SELECT quality, job_id FROM renditions WHERE video_id = $1", video["id"]
                )
            }
        finally:
            await conn.close()

        def progress(percent: float) -> RenditionProgressReport:
            return RenditionProgressReport(
                id=new_id("evt"),
                timestamp=datetime.now(UTC),
                video_id=video["id"],
                job_id=jobs["360p"],
                quality="360p",
                progress=percent,
            )

        live = asyncio.create_task(read_sse(api, f"/v1/videos/{video['id']}/events", timeout=30))
        await publish_report(worker, progress(10.0), app_id="test")
        failed = RenditionFailedReport(
            id=new_id("evt"),
            timestamp=datetime.now(UTC),
            video_id=video["id"],
            job_id=jobs["144p"],
            quality="144p",
            error="the encoder gave up",
            attempts=3,
        )
        await publish_report(worker, failed, app_id="test")
        for percent in (20.0, 30.0, 40.0):  # the sibling goes on encoding
            await publish_report(worker, progress(percent), app_id="test")

        events = await live
        assert events[-1].event == "video.failed"
        assert [e.event for e in events].count("video.failed") == 1

        # the log has events after video.failed; a stream opened now replays up to it and ends
        for _ in range(100):
            logged = await _logged(running, video["id"])
            if logged[-1] == "rendition.progress" and "video.failed" in logged:
                break
            await asyncio.sleep(0.1)
        assert logged.index("video.failed") < len(logged) - 1
        replayed = await read_sse(api, f"/v1/videos/{video['id']}/events", timeout=10)
        assert replayed[-1].event == "video.failed"
        assert [e.id for e in replayed] == [str(n) for n in range(1, len(replayed) + 1)]
        # a client that saw video.failed and reconnects gets nothing more: 204, which tells a
        # browser's EventSource to stop reconnecting (an empty 200 it would retry every 3 s)
        resumed = await api.get(f"/v1/videos/{video['id']}/events?after={replayed[-1].id}")
        assert (resumed.status_code, resumed.content) == (204, b"")
        again = await api.get(f"/v1/videos/{video['id']}/events", headers={"last-event-id": replayed[-1].id})
        assert again.status_code == 204
        # from before its terminal event, a finished video's stream replays up to it
        before = await read_sse(api, f"/v1/videos/{video['id']}/events?after={replayed[-2].id}", timeout=10)
        assert [e.event for e in before] == ["video.failed"]
