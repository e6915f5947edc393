"""Upload over HTTP to ready, with every push channel, against the whole stack as processes."""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from svix.webhooks import Webhook as SvixWebhook
from tusclient.client import TusClient

from shared.storage import source_key
from tests.e2e.harness import SseEvent, read_sse, until
from tests.e2e.stack import Running
from tests.media import BIG_BUCK_BUNNY, audio_stream, ffprobe, make_clip, moov_before_mdat, video_stream
from tests.sites import site

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROBLEM = "application/problem+json"


async def _when_over(api: httpx.AsyncClient, video_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """The video once it is ready, failed or canceled (or as it is at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        video: dict[str, Any] = (await api.get(f"/v1/videos/{video_id}")).json()
        if video["status"] in ("ready", "failed", "canceled") or time.monotonic() > deadline:
            return video
        await asyncio.sleep(0.1)


async def _upload(api: httpx.AsyncClient, path: Path, **fields: str) -> httpx.Response:
    with path.open("rb") as file:
        return await api.post("/v1/videos", files={"file": (path.name, file, "video/mp4")}, data=fields)


def _check_sse(events: list[SseEvent], planned: dict[str, tuple[int, int]]) -> None:
    types = [e.event for e in events]
    assert types[0] == "video.uploaded"
    assert types[-1] == "video.ready"
    assert types.count("video.ready") == 1
    assert types.count("rendition.completed") == len(planned)
    assert "rendition.progress" in types
    assert "thumbnail.completed" in types
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    assert all(e.data["sequence"] == int(e.id) and e.data["type"] == e.event for e in events)


async def _check_pushes(running: Running, video_id: str, hook_secret: str, callback_secret: str) -> None:
    receiver = running.receiver
    await until(lambda: receiver.at("/hooks", "video.ready") and receiver.at("/callback", "video.ready"))
    for request in receiver.at("/hooks"):
        Webhook(hook_secret).verify(request.body, request.headers)
        SvixWebhook(hook_secret).verify(request.body, request.headers)
    assert {r.json()["type"] for r in receiver.at("/hooks")} <= {
        "video.uploaded",
        "rendition.completed",
        "video.ready",
    }
    for request in receiver.at("/callback"):
        Webhook(callback_secret).verify(request.body, request.headers)
        SvixWebhook(callback_secret).verify(request.body, request.headers)
    ready = receiver.at("/callback", "video.ready")[0].json()
    assert ready["data"]["id"] == video_id
    assert ready["data"]["status"] == "ready"

    await until(lambda: running.mailbox.messages)
    mail = running.mailbox.messages[-1]
    assert "ready" in str(mail["subject"])
    assert mail["to"] == "owner@example.com"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None
    assert html is not None
    assert f"/v1/videos/{video_id}/renditions/720p" in text.get_content()


async def _check_outputs(
    api: httpx.AsyncClient, final: dict[str, Any], planned: dict[str, tuple[int, int]], tmp_path: Path
) -> None:
    for rendition in final["renditions"]:
        assert rendition["status"] == "ready"
        assert rendition["progress"] == 100
        download = await api.get(rendition["url"])
        assert download.status_code == 200
        assert download.headers["content-type"] == "video/mp4"
        out = tmp_path / f"{rendition['quality']}.mp4"
        out.write_bytes(download.content)
        info = ffprobe(out)
        stream = video_stream(info)
        assert (stream["width"], stream["height"]) == planned[rendition["quality"]]
        assert stream["codec_name"] == "h264"
        assert stream["pix_fmt"] == "yuv420p"
        sound = audio_stream(info)
        assert sound is not None
        assert sound["codec_name"] == "aac"
        assert sound["channels"] == 2
        assert abs(float(info["format"]["duration"]) - final["source"]["duration_s"]) <= 0.1
        assert moov_before_mdat(out)
    partial = await api.get(final["renditions"][0]["url"], headers={"range": "bytes=0-99"})
    assert partial.status_code == 206
    assert len(partial.content) == 100
    head = await api.head(final["renditions"][0]["url"])
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == final["renditions"][0]["size_bytes"]
    cached = await api.get(final["renditions"][0]["url"], headers={"if-none-match": head.headers["etag"]})
    assert cached.status_code == 304
    for width in (1280, 640, 320):
        thumb = await api.get(f"/v1/videos/{final['id']}/thumbnail", params={"width": width})
        assert thumb.status_code == 200
        assert thumb.headers["content-type"] == "image/jpeg"
        assert thumb.content[:2] == b"\xff\xd8"


async def test_an_upload_becomes_ready_and_is_pushed_by_sse_webhook_and_email(
    running: Running, tmp_path: Path
) -> None:
    async with running.client() as api:
        account = (await api.get("/v1/account")).json()
        made = await api.post(
            "/v1/webhooks",
            json={
                "url": f"{running.receiver_url}/hooks",
                "events": ["video.*", "rendition.completed"],
                "description": "e2e",
            },
        )
        assert made.status_code == 201
        hook = made.json()
        assert hook["secret"].startswith("whsec_")
        assert hook["enabled"] is True

        response = await _upload(
            api,
            BIG_BUCK_BUNNY,
            callback_url=f"{running.receiver_url}/callback",
            notify_email="owner@example.com",
            metadata=json.dumps({"title": "Bunny"}),
        )
        assert response.status_code == 202, response.text
        video = response.json()
        assert response.headers["location"] == f"/v1/videos/{video['id']}"
        assert video["status"] == "queued"
        assert video["metadata"] == {"title": "Bunny"}
        assert all(r["queue_position"] >= 1 for r in video["renditions"])  # its place in its rung's queue
        assert (running.storage / ".vidq-storage").is_file()  # the gateway made the storage its own
        assert (video["source"]["width"], video["source"]["height"]) == (1280, 720)
        planned = {r["quality"]: (r["width"], r["height"]) for r in video["renditions"]}
        assert planned == {
            "720p": (1280, 720),
            "480p": (852, 480),
            "360p": (640, 360),
            "240p": (426, 240),
            "144p": (256, 144),
        }

        _check_sse(await read_sse(api, f"/v1/videos/{video['id']}/events"), planned)
        await _check_pushes(running, video["id"], hook["secret"], account["callback_secret"])

        final = (await api.get(f"/v1/videos/{video['id']}")).json()
        assert final["status"] == "ready"
        assert final["thumbnail"]["status"] == "ready"
        assert final["thumbnail"]["widths"] == [1280, 640, 320]
        assert all(r["encode_seconds"] > 0 for r in final["renditions"])
        assert {(r["queue_position"], r["eta_s"]) for r in final["renditions"]} == {(None, None)}
        await _check_outputs(api, final, planned, tmp_path)

        log = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()
        ours = [d for d in log["data"] if d["video_id"] == video["id"]]
        assert {d["event_type"] for d in ours} == {"video.uploaded", "rendition.completed", "video.ready"}
        assert all(d["status"] == "succeeded" and d["attempt_log"][0]["status_code"] == 200 for d in ours)


async def test_bad_uploads_get_a_problem_and_leave_nothing_behind(running: Running, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    audio = tmp_path / "song.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(audio)],
        check=True,
    )
    async with running.client() as api:
        before = len((await api.get("/v1/videos", params={"limit": 100})).json()["data"])
        for path, needle in ((empty, "empty"), (text, "not a video"), (audio, "audio")):
            response = await _upload(api, path)
            assert response.status_code == 422, response.text
            assert response.headers["content-type"] == PROBLEM
            problem = response.json()
            assert needle in problem["detail"]
            assert {"type", "title", "status", "detail"} <= set(problem)
        too_high = await _upload(api, BIG_BUCK_BUNNY, qualities="2160p")
        assert too_high.status_code == 422
        assert "upscale" in too_high.json()["detail"]
        no_file = await api.post("/v1/videos", data={"qualities": "720p"}, files={"other": ("x", b"x")})
        assert no_file.status_code == 422
        not_multipart = await api.post(
            "/v1/videos", content=b"{}", headers={"content-type": "application/json"}
        )
        assert not_multipart.status_code == 422
        after = len((await api.get("/v1/videos", params={"limit": 100})).json()["data"])
    assert after == before
    assert not list((running.storage / "tmp").glob("*"))
    async with httpx.AsyncClient(base_url=running.url) as anonymous:
        missing = await anonymous.get("/v1/videos")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == PROBLEM
        wrong = await anonymous.get("/v1/videos", headers={"authorization": "Bearer vidq_wrong"})
        assert wrong.status_code == 401


async def test_a_client_sees_only_its_own_videos_and_webhooks(running: Running, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "mine.mp4", width=320, height=180, duration=1)
    async with running.client() as api:
        video = (await _upload(api, clip)).json()
        hook = (
            await api.post("/v1/webhooks", json={"url": f"{running.receiver_url}/x", "events": ["*"]})
        ).json()
    async with running.client(await running.new_key("other")) as other:
        for path in (
            f"/v1/videos/{video['id']}",
            f"/v1/videos/{video['id']}/events",
            f"/v1/webhooks/{hook['id']}",
        ):
            response = await other.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == PROBLEM
        assert (await other.delete(f"/v1/videos/{video['id']}")).status_code == 404
        assert (await other.get("/v1/videos")).json()["data"] == []


async def test_a_source_that_probes_but_cannot_be_encoded_fails_the_video_with_a_reason(
    running: Running, tmp_path: Path
) -> None:
    whole = tmp_path / "whole.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(BIG_BUCK_BUNNY),
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            str(whole),
        ],
        check=True,
    )
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    async with running.client() as api:
        hook = (
            await api.post(
                "/v1/webhooks", json={"url": f"{running.receiver_url}/failures", "events": ["video.failed"]}
            )
        ).json()
        response = await _upload(api, truncated, qualities="240p,144p")
        assert response.status_code == 202, response.text
        video = response.json()
        events = await read_sse(api, f"/v1/videos/{video['id']}/events")
        assert events[-1].event == "video.failed"
        failed = [e for e in events if e.event == "rendition.failed"]
        assert failed
        assert "truncated or corrupt" in failed[0].data["data"]["error"]
        final = (await api.get(f"/v1/videos/{video['id']}")).json()
        assert final["status"] == "failed"
        assert "rendition" in final["error"]
        await until(lambda: running.receiver.at("/failures", "video.failed"))
        received = running.receiver.at("/failures", "video.failed")[0]
        Webhook(hook["secret"]).verify(received.body, received.headers)
        assert received.json()["data"]["id"] == video["id"]

        # Every consumer is still running: a good upload still goes through.
        good = (
            await _upload(api, make_clip(tmp_path / "good.mp4", width=320, height=180, duration=1))
        ).json()
        events = await read_sse(api, f"/v1/videos/{good['id']}/events")
        assert events[-1].event == "video.ready"


async def test_a_webhook_is_retried_until_the_receiver_recovers(running: Running, tmp_path: Path) -> None:
    running.receiver.fail["/flaky"] = 2
    async with running.client() as api:
        hook = (
            await api.post(
                "/v1/webhooks", json={"url": f"{running.receiver_url}/flaky", "events": ["video.ready"]}
            )
        ).json()
        video = (await _upload(api, make_clip(tmp_path / "c.mp4", width=320, height=180, duration=1))).json()
        await until(lambda: len(running.receiver.at("/flaky", "video.ready")) >= 3, timeout=90)
        attempts = running.receiver.at("/flaky", "video.ready")
        assert len({a.headers["webhook-id"] for a in attempts}) == 1  # one id across retries
        assert attempts[0].json()["data"]["id"] == video["id"]
        await until(lambda: not running.receiver.fail["/flaky"])
        await asyncio.sleep(0.5)
        log = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["data"]
        [delivery] = [d for d in log if d["video_id"] == video["id"]]
        assert delivery["status"] == "succeeded"
        assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]


async def test_an_idempotency_key_returns_the_first_answer(running: Running, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "once.mp4", width=320, height=180, duration=1)
    async with running.client() as api:
        headers = {"idempotency-key": "upload-once-1"}
        with clip.open("rb") as f:
            first = await api.post("/v1/videos", files={"file": ("once.mp4", f)}, headers=headers)
        with clip.open("rb") as f:
            second = await api.post("/v1/videos", files={"file": ("once.mp4", f)}, headers=headers)
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert second.headers["idempotent-replayed"] == "true"


async def test_a_video_imported_from_a_url_becomes_ready(running: Running, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "remote.mp4", width=320, height=240, duration=1)
    with site({"/remote.mp4": (200, {"content-type": "video/mp4"}, clip.read_bytes())}) as served:
        async with running.client() as api:
            url = f"{served.url}/remote.mp4"
            created = await api.post("/v1/videos", json={"url": url, "qualities": "240p,144p"})
            assert created.status_code == 202, created.text
            video_id = created.json()["id"]

            video = await _when_over(api, video_id)
            assert video["status"] == "ready", video
            assert video["source"]["filename"] == "remote.mp4"
            for rendition in video["renditions"]:
                playable = await api.get(rendition["url"])
                assert playable.headers["content-type"] == "video/mp4"
                assert len(playable.content) == rendition["size_bytes"]


async def test_an_import_whose_client_went_away_stops_its_download_and_records_nothing(
    running: Running, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "slow.mp4", width=320, height=240, duration=1).read_bytes()
    broken = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(clip)))
            self.end_headers()
            try:
                for at in range(0, len(clip), 512):  # a minute or more for the whole clip
                    self.wfile.write(clip[at : at + 512])
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:  # the gateway closed the connection: the download stopped
                broken.set()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/slow.mp4"
        impatient = httpx.AsyncClient(
            base_url=running.url,
            headers={"authorization": f"Bearer {running.api_key}"},
            timeout=httpx.Timeout(10.0, read=1.5),
        )
        async with impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post("/v1/videos", json={"url": url})
        await until(broken.is_set, timeout=15)
        async with running.client() as api:
            listed = (await api.get("/v1/videos")).json()["data"]
        assert [v for v in listed if v["source"]["filename"] == "slow.mp4"] == []
        temporary = running.storage / "tmp"
        assert not temporary.exists() or not any(temporary.iterdir())  # the partial file removed
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_delete_cancels_the_work_and_removes_the_files(running: Running, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "long.mp4", width=640, height=360, duration=30, fps=30)
    async with running.client() as api:
        video = (await _upload(api, clip)).json()
        stream = asyncio.create_task(read_sse(api, f"/v1/videos/{video['id']}/events"))
        await until((running.storage / "videos" / video["id"] / "source").exists)
        await asyncio.sleep(1.5)  # let encodes start
        deleted = await api.delete(f"/v1/videos/{video['id']}")
        assert deleted.status_code == 204
        events = await stream
        # both events of the DELETE reach the stream, which ends after the last
        assert [e.event for e in events][-2:] == ["video.canceled", "video.deleted"]
        assert int(events[-1].id) == int(events[-2].id) + 1
        assert (await api.get(f"/v1/videos/{video['id']}")).status_code == 404
    await until(lambda: not (running.storage / "videos" / video["id"]).exists(), timeout=20)
    await until(lambda: not _ffmpeg_running_for(video["id"]), timeout=20)


def _ffmpeg_running_for(video_id: str) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ffmpeg") and video_id.encode() in cmdline:
            return True
    return False


async def test_a_resumable_upload_by_a_tus_client_survives_a_broken_connection_and_becomes_ready(
    running: Running, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "long-way.mp4", width=320, height=240, duration=2)
    data = clip.read_bytes()
    tus = TusClient(f"{running.url}/v1/tus", headers={"Authorization": f"Bearer {running.api_key}"})
    half = len(data) // 2

    # tuspy (tus-py-client) makes the upload and sends a first part in 16 KiB PATCHes
    def first_part() -> str:
        uploader = tus.uploader(
            str(clip), chunk_size=16 * 1024, metadata={"filename": "long-way.mp4", "qualities": "240p,144p"}
        )
        uploader.upload(stop_at=half)
        return str(uploader.url)

    location = await asyncio.to_thread(first_part)
    parts = urlsplit(location)

    async def offset() -> int:
        async with running.client() as api:
            head = await api.head(parts.path, headers={"Tus-Resumable": "1.0.0"})
        assert head.status_code == 200
        return int(head.headers["upload-offset"])

    done = await offset()
    assert half <= done < len(data)

    async def raw_patch(at: int, body: bytes) -> asyncio.StreamWriter:
        """A PATCH that announces the rest of the file and sends only ``body`` of it."""
        _, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(
            (
                f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Authorization: Bearer {running.api_key}\r\nTus-Resumable: 1.0.0\r\n"
                f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {at}\r\n"
                f"Content-Length: {len(data) - at}\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()
        return writer

    # then its connection breaks in the middle of a PATCH: the bytes that arrived are kept
    sent = 20_000
    broken = await raw_patch(done, data[done : done + sent])
    await asyncio.sleep(0.5)
    broken.close()
    for _ in range(100):  # the gateway records them once it sees the connection gone
        if await offset() == done + sent:
            break
        await asyncio.sleep(0.1)
    assert await offset() == done + sent

    # the next one goes quiet without closing (a network change): it holds the upload...
    stalled = await raw_patch(done + sent, b"\x00" * 5_000)  # bytes that are not the file's
    await asyncio.sleep(0.5)

    # ...and a new client resumes from the offset the gateway holds (checksums on): its first
    # PATCH waits until the stalled one's lease runs out, then the file is sent whole
    def the_rest() -> None:
        uploader = tus.uploader(str(clip), url=location, chunk_size=16 * 1024, upload_checksum=True)
        assert uploader.offset == done + sent
        uploader.upload()

    started = time.monotonic()
    await asyncio.to_thread(the_rest)
    assert time.monotonic() - started < 20
    # the stalled connection wakes and sends more: nothing of it reaches the recorded file
    stalled.write(b"\xff" * 50_000)
    await stalled.drain()
    await asyncio.sleep(1.0)
    stalled.close()
    async with running.client() as api:
        head = await api.head(parts.path, headers={"Tus-Resumable": "1.0.0"})
        video_id = head.headers["vidq-video-id"]
        video = await _when_over(api, video_id)
        assert video["status"] == "ready", video
        assert video["source"]["filename"] == "long-way.mp4"
        assert video["source"]["size_bytes"] == len(data)
        assert sorted(r["quality"] for r in video["renditions"]) == ["144p", "240p"]
    assert (running.storage / source_key(video_id)).read_bytes() == data


async def test_a_tus_client_without_the_key_uploads_through_a_direct_upload_url(
    running: Running, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "from-a-page.mp4", width=320, height=240, duration=1)
    async with running.client() as api:
        made = await api.post("/v1/uploads", json={"qualities": ["144p"]})
        assert made.status_code == 201, made.text
        upload = made.json()

    def send() -> str:  # what a page's tus client does with the URL it was handed
        uploader = TusClient(upload["url"]).uploader(
            str(clip), chunk_size=64 * 1024, metadata={"filename": clip.name}
        )
        uploader.upload()
        return str(uploader.url)

    location = await asyncio.to_thread(send)
    assert "signature=" in location
    async with running.client() as api:
        settled = (await api.get(f"/v1/uploads/{upload['id']}")).json()
        assert settled["status"] == "asset_created"
        video = await _when_over(api, settled["video_id"])
        assert video["status"] == "ready", video
        assert video["source"]["filename"] == clip.name
