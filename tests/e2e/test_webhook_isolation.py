"""One slow endpoint never delays the others (per-endpoint concurrency, deferral not waiting)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.harness import read_sse, until
from tests.e2e.stack import Running
from tests.media import make_clip

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Four delivery slots per notifier, at most two of them for one endpoint.
STACK_ENV = {
    "VIDQ_NOTIFIER_CONCURRENCY": "4",
    "VIDQ_NOTIFIER_ENDPOINT_CONCURRENCY": "2",
    "VIDQ_WEBHOOK_TIMEOUT_S": "8",
}
HANG_S = 5.0


async def test_a_hanging_endpoint_does_not_delay_another(running: Running) -> None:
    running.receiver.hang["/slow"] = HANG_S
    async with running.client() as api:
        slow = (
            await api.post("/v1/webhooks", json={"url": f"{running.receiver_url}/slow", "events": ["*"]})
        ).json()
        fast = (
            await api.post("/v1/webhooks", json={"url": f"{running.receiver_url}/fast", "events": ["*"]})
        ).json()
        for _ in range(8):  # more than all the notifier's slots
            assert (await api.post(f"/v1/webhooks/{slow['id']}/test")).status_code == 202
        await until(lambda: len(running.receiver.at("/slow")) >= 2)
        started = asyncio.get_running_loop().time()
        assert (await api.post(f"/v1/webhooks/{fast['id']}/test")).status_code == 202
        await until(lambda: running.receiver.at("/fast"), timeout=HANG_S)
        waited = asyncio.get_running_loop().time() - started
        # The slow endpoint never had more than two requests open, so the fast one got a slot at once.
        assert waited < 2.0
        assert len(running.receiver.at("/slow")) <= 4
        # Every slow delivery is still made, in turns of two.
        await until(lambda: len(running.receiver.at("/slow")) == 8, timeout=60)


async def test_a_hanging_endpoint_does_not_delay_another_for_a_videos_own_events(
    running: Running, tmp_path: Path
) -> None:
    # Every event of a video goes to /stuck (which hangs) and video.ready to /prompt: the first
    # attempts are made by the notifier's event handler; those /stuck has no slot for wait in
    # the delay queue instead of holding the others up.
    running.receiver.hang["/stuck"] = HANG_S
    async with running.client() as api:
        for path, patterns in (("/stuck", ["*"]), ("/prompt", ["video.ready"])):
            response = await api.post(
                "/v1/webhooks", json={"url": f"{running.receiver_url}{path}", "events": patterns}
            )
            assert response.status_code == 201, response.text
        clip = make_clip(tmp_path / "clip.mp4", width=320, height=180, duration=1)
        with clip.open("rb") as f:
            video = (
                await api.post("/v1/videos", files={"file": ("clip.mp4", f)}, data={"qualities": "144p"})
            ).json()
        events = await read_sse(api, f"/v1/videos/{video['id']}/events")
        assert events[-1].event == "video.ready"
        ready_at = asyncio.get_running_loop().time()
        await until(lambda: running.receiver.at("/prompt", "video.ready"), timeout=HANG_S)
        assert asyncio.get_running_loop().time() - ready_at < 2.0
        # and /stuck still gets every event of the video, each once
        await until(lambda: len(running.receiver.at("/stuck")) >= len(events), timeout=60)
        ids = [r.headers["webhook-id"] for r in running.receiver.at("/stuck")]
        assert sorted(ids) == sorted(e.data["id"] for e in events)
