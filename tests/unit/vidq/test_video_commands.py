from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from shared.events import (
    RenditionCompleted,
    RenditionFailed,
    RenditionProgress,
    VideoFailed,
    VideoReady,
    VideoUploaded,
)
from shared.resources import Thumbnail, Video
from tests.unit.vidq.fakeapi import FakeApi, event, invoke, ok, problem, rendition, sse, video
from vidq.__main__ import app

ID = "vid_1"
EVENTS = f"/v1/videos/{ID}/events"


def _clip(tmp_path: Path) -> Path:
    clip = tmp_path / "holiday.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"x" * 5000)
    return clip


def _ready_history() -> list[dict[str, object]]:
    ready = Video.model_validate(video(ID, status="ready"))
    return [
        event(VideoUploaded, 1, Video.model_validate(video(ID))),
        event(RenditionProgress, 2, rendition(ID, "720p", status="processing", progress=40.0)),
        event(
            RenditionCompleted, 3, rendition(ID, "720p", status="ready", progress=100.0, size_bytes=2_000_000)
        ),
        event(
            RenditionCompleted,
            4,
            rendition(ID, "360p", status="ready", progress=100.0, width=640, height=360),
        ),
        event(VideoReady, 5, ready),
    ]


def _failed_history() -> list[dict[str, object]]:
    broken = rendition(ID, "720p", status="failed", error="ffmpeg exited 1: moov atom not found")
    failed = Video.model_validate(video(ID, status="failed", error="rendition 720p failed: ffmpeg exited 1"))
    return [
        event(VideoUploaded, 1, Video.model_validate(video(ID))),
        event(RenditionFailed, 2, broken),
        event(VideoFailed, 3, failed),
    ]


class TestUpload:
    def test_sends_the_file_and_options_as_multipart_and_prints_the_video(self, tmp_path: Path) -> None:
        api = FakeApi().on("POST", "/v1/videos", ok(video(ID), 202))
        result = invoke(
            api,
            "upload",
            str(_clip(tmp_path)),
            "--qualities",
            "720p,360p",
            "--metadata",
            '{"a": 1}',
            "--json",
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["id"] == ID
        body = api.requests[0].content
        assert b'name="file"; filename="holiday.mp4"' in body
        assert b"Content-Type: video/mp4" in body
        assert b"x" * 5000 in body
        assert b'name="qualities"\r\n\r\n720p,360p' in body
        assert b'name="metadata"\r\n\r\n{"a": 1}' in body
        assert api.requests[0].headers["content-length"] == str(len(body))

    @staticmethod
    def _tus(api: FakeApi) -> FakeApi:
        def appended(request: httpx.Request) -> httpx.Response:
            offset = int(request.headers["upload-offset"]) + len(request.content)
            return httpx.Response(204, headers={"upload-offset": str(offset), "tus-resumable": "1.0.0"})

        created = {"location": "/v1/tus/tus_1", "vidq-video-id": ID, "tus-resumable": "1.0.0"}
        api.on("POST", "/v1/tus", httpx.Response(201, headers=created))
        api.on("PATCH", "/v1/tus/tus_1", appended)
        return api.on("GET", f"/v1/videos/{ID}", ok(video(ID)))

    def test_resumable_sends_the_file_with_tus_and_prints_the_video(self, tmp_path: Path) -> None:
        clip = _clip(tmp_path)
        api = self._tus(FakeApi())
        result = invoke(api, "upload", str(clip), "--resumable", "-q", "360p", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["id"] == ID
        [created] = api.sent("POST", "/v1/tus")
        assert created.headers["tus-resumable"] == "1.0.0"
        assert created.headers["upload-length"] == str(clip.stat().st_size)
        assert created.headers["upload-metadata"] == "filename aG9saWRheS5tcDQ=,qualities MzYwcA=="
        patches = api.sent("PATCH", "/v1/tus/tus_1")
        assert b"".join(p.content for p in patches) == clip.read_bytes()
        assert api.sent("POST", "/v1/videos") == []

    def test_a_large_file_goes_resumable_unless_told_or_idempotent(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("vidq.commands.upload.RESUMABLE_FROM", 1000)
        clip = _clip(tmp_path)
        large = self._tus(FakeApi())
        assert invoke(large, "upload", str(clip), "--json").exit_code == 0
        assert len(large.sent("POST", "/v1/tus")) == 1
        for extra in (["--no-resumable"], ["--idempotency-key", "k-1"]):
            single = FakeApi().on("POST", "/v1/videos", ok(video(ID), 202))
            assert invoke(single, "upload", str(clip), *extra, "--json").exit_code == 0
            assert len(single.sent("POST", "/v1/videos")) == 1

    def test_resumable_with_an_idempotency_key_or_a_url_is_a_usage_error(self, tmp_path: Path) -> None:
        api = FakeApi()
        keyed = invoke(api, "upload", str(_clip(tmp_path)), "--resumable", "--idempotency-key", "k")
        assert keyed.exit_code == 2
        assert "--resumable" in keyed.output
        assert invoke(api, "upload", "https://example.com/a.mp4", "--resumable").exit_code == 2
        assert api.requests == []

    def test_idempotency_key_is_a_header(self, tmp_path: Path) -> None:
        api = FakeApi().on("POST", "/v1/videos", ok(video(ID), 202))
        invoke(api, "upload", str(_clip(tmp_path)), "--idempotency-key", "k-1", "--json")
        assert api.requests[0].headers["idempotency-key"] == "k-1"

    def test_human_output_names_the_planned_renditions(self, tmp_path: Path) -> None:
        api = FakeApi().on("POST", "/v1/videos", ok(video(ID), 202))
        result = invoke(api, "upload", str(_clip(tmp_path)))
        assert result.exit_code == 0, result.output
        assert f"{ID} queued: 720p 360p" in result.stdout
        assert "upload" in result.stderr  # the bytes bar, on stderr

    def test_watch_json_prints_each_event_as_a_line_and_exits_0_when_ready(self, tmp_path: Path) -> None:
        api = FakeApi().on("POST", "/v1/videos", ok(video(ID), 202)).on("GET", EVENTS, sse(*_ready_history()))
        result = invoke(api, "upload", str(_clip(tmp_path)), "--watch", "--json")
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [line["type"] for line in lines] == [e["type"] for e in _ready_history()]
        assert result.stderr == ""

    def test_watch_exits_1_with_the_reason_when_the_video_fails(self, tmp_path: Path) -> None:
        api = (
            FakeApi().on("POST", "/v1/videos", ok(video(ID), 202)).on("GET", EVENTS, sse(*_failed_history()))
        )
        result = invoke(api, "upload", str(_clip(tmp_path)), "--watch")
        assert result.exit_code == 1
        assert (
            result.stderr.splitlines()[-1]
            == f"vidq: video {ID} failed: rendition 720p failed: ffmpeg exited 1"
        )
        assert "failed" in result.stdout

    def test_a_file_the_api_refuses_exits_1_with_its_detail_and_no_bars(self, tmp_path: Path) -> None:
        api = FakeApi().on(
            "POST", "/v1/videos", problem(422, "not a video file ffmpeg can read", "Not a usable video")
        )
        result = invoke(api, "upload", str(_clip(tmp_path)))
        assert result.exit_code == 1
        assert result.stderr == "vidq: not a usable video: not a video file ffmpeg can read\n"

    def test_a_missing_file_is_a_usage_error(self, tmp_path: Path) -> None:
        assert invoke(FakeApi(), "upload", str(tmp_path / "nope.mp4")).exit_code == 2

    def test_a_url_is_imported_as_json_with_the_options(self) -> None:
        api = FakeApi().on("POST", "/v1/videos", ok(video(ID), 202))
        url = "https://media.example.com/holiday.mp4"
        result = invoke(
            api, "upload", url, "-q", "720p", "--metadata", '{"a": 1}', "--idempotency-key", "k-2", "--json"
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["id"] == ID
        request = api.requests[0]
        assert request.headers["content-type"] == "application/json"
        assert request.headers["idempotency-key"] == "k-2"
        assert json.loads(request.content) == {"url": url, "qualities": "720p", "metadata": {"a": 1}}

    def test_a_url_in_capitals_is_a_url_too(self) -> None:
        api = FakeApi().on("POST", "/v1/videos", ok(video(ID), 202))
        assert invoke(api, "upload", "HTTPS://media.example.com/a.mp4", "--json").exit_code == 0
        assert json.loads(api.requests[0].content) == {"url": "HTTPS://media.example.com/a.mp4"}

    def test_an_import_with_metadata_that_is_not_json_is_a_usage_error_sent_nowhere(self) -> None:
        api = FakeApi()
        result = invoke(api, "upload", "https://media.example.com/a.mp4", "--metadata", "{nope")
        assert result.exit_code == 2
        assert "--metadata is not valid JSON" in result.stderr
        assert api.requests == []

    def test_a_url_the_api_cannot_download_exits_1_with_its_detail(self) -> None:
        api = FakeApi().on(
            "POST",
            "/v1/videos",
            problem(
                422, "https://media.example.com/a.mp4 answered 404 Not Found", "Could not download the video"
            ),
        )
        result = invoke(api, "upload", "https://media.example.com/a.mp4")
        assert result.exit_code == 1
        assert "answered 404 Not Found" in result.stderr

    def test_an_import_refused_for_want_of_a_slot_is_asked_again_after_the_wait_it_names(self) -> None:
        busy = problem(429, "this client already has 4 imports downloading", "Limit reached")
        busy.headers["retry-after"] = "10"
        full = problem(503, "this gateway is downloading 32 imports", "Service unavailable")
        full.headers["retry-after"] = "7"
        api = FakeApi().on("POST", "/v1/videos", busy, full, ok(video(ID), 202))
        waited: list[float] = []
        session = api.session()
        session.pause = waited.append
        result = CliRunner().invoke(
            app,
            ["upload", "https://media.example.com/a.mp4", "--idempotency-key", "k", "--json"],
            obj=session,
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["id"] == ID
        assert waited == [10.0, 7.0]
        assert [r.headers["idempotency-key"] for r in api.requests] == ["k", "k", "k"]

    def test_an_import_still_refused_after_its_waits_exits_with_the_detail(self) -> None:
        busy = problem(429, "this client already has 4 imports downloading", "Limit reached")
        busy.headers["retry-after"] = "10"
        api = FakeApi().on("POST", "/v1/videos", busy)
        result = invoke(api, "upload", "https://media.example.com/a.mp4")
        assert result.exit_code == 1
        assert result.stderr == "vidq: limit reached: this client already has 4 imports downloading\n"
        assert len(api.requests) == 31  # the first and thirty more

    def test_a_refusal_without_retry_after_is_not_asked_again(self) -> None:
        api = FakeApi().on("POST", "/v1/videos", problem(429, "too many", "Limit reached"))
        assert invoke(api, "upload", "https://media.example.com/a.mp4").exit_code == 1
        assert len(api.requests) == 1


class TestWatch:
    def test_shows_a_bar_per_rendition_and_the_final_video(self) -> None:
        api = FakeApi().on("GET", f"/v1/videos/{ID}", ok(video(ID))).on("GET", EVENTS, sse(*_ready_history()))
        result = invoke(api, "watch", ID)
        assert result.exit_code == 0, result.output
        for quality in ("720p", "360p", "thumbnail"):
            assert quality in result.stderr
        assert "100.0%" in result.stderr
        assert "ready" in result.stdout
        assert "720p" in result.stdout

    def test_resumes_after_a_dropped_stream_without_repeating_events(self) -> None:
        history = _ready_history()

        def drop(request: httpx.Request) -> httpx.Response:
            raise httpx.RemoteProtocolError("peer closed connection", request=request)

        api = FakeApi().on("GET", EVENTS, sse(*history[:2]), drop, sse(*history[2:]))
        result = invoke(api, "watch", ID, "--json")
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["sequence"] for line in result.stdout.splitlines()] == [1, 2, 3, 4, 5]

    def test_a_missing_video_exits_3(self) -> None:
        api = FakeApi().on("GET", EVENTS, problem(404, "no video 'vid_x'", "Not found"))
        result = invoke(api, "watch", ID, "--json")
        assert result.exit_code == 3
        assert result.stderr == "vidq: not found: no video 'vid_x'\n"

    def test_a_video_already_over_reads_its_state(self) -> None:
        api = (
            FakeApi().on("GET", EVENTS, sse()).on("GET", f"/v1/videos/{ID}", ok(video(ID, status="canceled")))
        )
        result = invoke(api, "watch", ID, "--json")
        assert result.exit_code == 1
        assert result.stderr == f"vidq: video {ID} was canceled\n"


class TestReading:
    def test_ls_follows_pages_up_to_the_limit(self) -> None:
        first = {"data": [video("vid_3")], "next_cursor": "c1", "has_more": True}
        second = {"data": [video("vid_2")], "next_cursor": "c2", "has_more": True}
        api = FakeApi().on("GET", "/v1/videos", ok(first), ok(second))
        result = invoke(api, "ls", "--limit", "2", "--status", "ready", "--json")
        assert result.exit_code == 0, result.output
        assert [v["id"] for v in json.loads(result.stdout)["data"]] == ["vid_3", "vid_2"]
        assert api.requests[1].url.params["cursor"] == "c1"
        assert api.requests[0].url.params["status"] == "ready"

    def test_ls_shows_a_table(self) -> None:
        api = FakeApi().on(
            "GET", "/v1/videos", ok({"data": [video(ID, status="ready")], "next_cursor": None})
        )
        result = invoke(api, "ls")
        assert ID in result.stdout
        assert "2/2 ready" in result.stdout

    def test_ls_piped_keeps_each_video_on_one_line_however_long_its_filename(self) -> None:
        listed = video(ID, status="ready")
        name = "a-rather-long-name-for-a-holiday-video-from-the-mountains-in-the-summer-of-2026-cut-3.mp4"
        listed["source"]["filename"] = name
        api = FakeApi().on("GET", "/v1/videos", ok({"data": [listed], "next_cursor": None}))
        result = invoke(api, "ls")  # not a terminal: a program reads it
        [row] = [line for line in result.stdout.splitlines() if line.startswith(ID)]
        assert "2/2 ready" in row
        assert name in row

    def test_ls_shows_how_far_a_processing_video_is(self) -> None:
        busy = video(ID, status="processing") | {"progress": 41.2}
        api = FakeApi().on("GET", "/v1/videos", ok({"data": [busy], "next_cursor": None}))
        assert "0/2 ready, 41 %" in invoke(api, "ls").stdout

    def test_show_lists_the_renditions(self) -> None:
        api = FakeApi().on("GET", f"/v1/videos/{ID}", ok(video(ID, status="ready")))
        result = invoke(api, "show", ID)
        assert result.exit_code == 0, result.output
        assert "720p" in result.stdout
        assert "640x360" in result.stdout
        assert "without a key" not in result.stdout  # a gateway without signed links

    def test_show_tells_how_far_a_video_is_and_how_long_it_should_take(self) -> None:
        busy = video(ID, status="processing") | {"progress": 41.2, "eta_s": 75.0}
        busy["renditions"][0] |= {"status": "processing", "progress": 50.0, "eta_s": 75.0}
        busy["renditions"][1] |= {"status": "queued", "queue_position": 2}
        api = FakeApi().on("GET", f"/v1/videos/{ID}", ok(busy))
        result = invoke(api, "show", ID)
        assert result.exit_code == 0, result.output
        assert "processing  41 %, about 1 min 15 s left" in result.stdout
        assert "about 1 min 15 s left" in result.stdout.split("720p", 1)[1]
        assert "2nd in line" in result.stdout

    def test_show_gives_the_signed_links_to_share(self) -> None:
        ready = video(ID, status="ready")
        for r in ready["renditions"]:
            r["signed_url"] = (
                f"http://vidq.test/v1/videos/{ID}/renditions/{r['quality']}?expires=1&signature={'s' * 86}"
            )
        api = FakeApi().on("GET", f"/v1/videos/{ID}", ok(ready))
        result = invoke(api, "show", ID)
        assert result.exit_code == 0, result.output
        assert "without a key" in result.stdout
        # whole, on one line, although longer than the 80 columns of a pipe: people copy it
        link = f"http://vidq.test/v1/videos/{ID}/renditions/720p?expires=1&signature={'s' * 86}"
        assert any(line.split() == ["720p", link] for line in result.stdout.splitlines())


class TestDownload:
    def _api(self) -> FakeApi:
        mp4 = httpx.Response(200, content=b"MP4" * 1000, headers={"content-type": "video/mp4"})
        return (
            FakeApi()
            .on("GET", f"/v1/videos/{ID}/renditions/360p", mp4)
            .on("GET", f"/v1/videos/{ID}", ok(video(ID, status="ready")))
        )

    def test_writes_id_quality_mp4_in_the_current_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        result = invoke(self._api(), "download", ID, "--quality", "360p")
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"{ID}-360p.mp4").read_bytes() == b"MP4" * 1000
        assert not list(tmp_path.glob(".*.part"))

    def test_refuses_to_overwrite_unless_forced(self, tmp_path: Path) -> None:
        target = tmp_path / "out.mp4"
        target.write_bytes(b"mine")
        result = invoke(self._api(), "download", ID, "-q", "360p", "-o", str(target))
        assert result.exit_code == 2  # a usage error: the command as given would overwrite a file
        assert result.stderr == f"vidq: {target} exists; add --force to overwrite it\n"
        assert target.read_bytes() == b"mine"
        assert invoke(self._api(), "download", ID, "-q", "360p", "-o", str(target), "--force").exit_code == 0
        assert target.read_bytes() == b"MP4" * 1000

    def test_into_a_folder_and_the_largest_ready_rendition_by_default(self, tmp_path: Path) -> None:
        mp4 = httpx.Response(200, content=b"big")
        api = self._api().on("GET", f"/v1/videos/{ID}/renditions/720p", mp4)
        assert invoke(api, "download", ID, "-o", str(tmp_path)).exit_code == 0
        assert (tmp_path / f"{ID}-720p.mp4").read_bytes() == b"big"

    def test_a_rendition_not_ready_exits_1_and_leaves_no_file(self, tmp_path: Path) -> None:
        api = FakeApi().on(
            "GET",
            f"/v1/videos/{ID}/renditions/720p",
            problem(409, "rendition 720p is processing, not ready yet", "Conflict"),
        )
        result = invoke(api, "download", ID, "-q", "720p", "-o", str(tmp_path / "a.mp4"))
        assert result.exit_code == 1
        assert result.stderr == "vidq: conflict: rendition 720p is processing, not ready yet\n"
        assert list(tmp_path.iterdir()) == []


def test_rm_deletes_each_video() -> None:
    api = (
        FakeApi()
        .on("DELETE", "/v1/videos/vid_1", httpx.Response(204))
        .on("DELETE", "/v1/videos/vid_2", httpx.Response(204))
    )
    result = invoke(api, "rm", "vid_1", "vid_2")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["deleted vid_1", "deleted vid_2"]


class TestRetry:
    def test_with_no_part_named_every_failed_rendition_and_the_thumbnail_run_again(self) -> None:
        broken = video(
            ID,
            status="failed",
            renditions=[
                rendition(ID, "720p", status="failed", error="ffmpeg exited 1"),
                rendition(ID, "360p", status="ready", width=640, height=360),
            ],
            thumbnail=Thumbnail(status="failed", error="no frame"),
        )
        again = video(ID, status="processing")
        api = (
            FakeApi()
            .on("GET", f"/v1/videos/{ID}", ok(broken))
            .on("POST", f"/v1/videos/{ID}/renditions/720p/retry", ok(again, 202))
            .on("POST", f"/v1/videos/{ID}/thumbnail/retry", ok(again, 202))
        )

        result = invoke(api, "retry", ID)

        assert result.exit_code == 0, result.output
        assert [(r.method, r.url.path) for r in api.requests[1:]] == [
            ("POST", f"/v1/videos/{ID}/renditions/720p/retry"),
            ("POST", f"/v1/videos/{ID}/thumbnail/retry"),
        ]
        assert "720p queued again" in result.output
        assert "thumbnail queued again" in result.output

    def test_a_named_part_alone_runs_again_and_a_refusal_is_the_apis(self) -> None:
        api = (
            FakeApi()
            .on("GET", f"/v1/videos/{ID}", ok(video(ID, status="failed")))
            .on(
                "POST",
                f"/v1/videos/{ID}/thumbnail/retry",
                problem(409, "the thumbnail is ready; only a failed thumbnail can be retried"),
            )
        )

        result = invoke(api, "retry", ID, "thumbnail")

        assert result.exit_code == 1
        assert "only a failed thumbnail can be retried" in result.output

    def test_a_video_with_nothing_failed_has_nothing_to_retry(self) -> None:
        api = FakeApi().on("GET", f"/v1/videos/{ID}", ok(video(ID, status="ready")))

        result = invoke(api, "retry", ID)

        assert result.exit_code == 1
        assert "has no failed rendition or thumbnail to retry" in result.output
        assert len(api.requests) == 1
