from __future__ import annotations

import io

import httpx
import pytest

from shared.events import TERMINAL_EVENT_TYPES, RenditionProgress, VideoReady, VideoUploaded
from shared.resources import TERMINAL_STATUSES, Video
from tests.unit.vidq.fakeapi import FakeApi, event, ok, problem, rendition, sse, video
from vidq.client import TERMINAL_EVENTS, VidqClient
from vidq.client import TERMINAL_STATUSES as CLI_TERMINAL_STATUSES
from vidq.errors import ApiError, ExitCode, Unreachable, UsageProblem, VidqError, exit_code_for


def _client(api: FakeApi | httpx.MockTransport) -> VidqClient:
    transport = api if isinstance(api, httpx.MockTransport) else httpx.MockTransport(api)
    return VidqClient("http://vidq.test", "vidq_k", transport=transport, pause=lambda _: None)


def test_the_cli_knows_the_same_terminal_events_and_statuses_as_the_services() -> None:
    assert TERMINAL_EVENTS == TERMINAL_EVENT_TYPES
    assert CLI_TERMINAL_STATUSES == TERMINAL_STATUSES


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ExitCode.FAILED),
        (401, ExitCode.AUTH),
        (403, ExitCode.AUTH),
        (404, ExitCode.NOT_FOUND),
        (409, ExitCode.FAILED),
        (422, ExitCode.FAILED),
        (500, ExitCode.UNAVAILABLE),
        (503, ExitCode.UNAVAILABLE),
    ],
)
def test_each_http_error_status_has_its_exit_code(status: int, code: ExitCode) -> None:
    assert exit_code_for(status) == code


def test_the_api_key_goes_in_the_authorization_header() -> None:
    api = FakeApi().on("GET", "/v1/videos/vid_1", ok(video()))
    with _client(api) as client:
        assert client.video("vid_1")["id"] == "vid_1"
    assert api.requests[0].headers["authorization"] == "Bearer vidq_k"
    assert api.requests[0].headers["user-agent"].startswith("vidq-cli/")


def test_a_problem_document_becomes_one_api_error_with_status_and_detail() -> None:
    api = FakeApi().on("GET", "/v1/videos/vid_x", problem(404, "no video 'vid_x'", "Not found"))
    with _client(api) as client, pytest.raises(ApiError) as caught:
        client.video("vid_x")
    assert (caught.value.status, caught.value.detail) == (404, "no video 'vid_x'")
    assert str(caught.value) == "not found: no video 'vid_x'"
    assert caught.value.exit_code == ExitCode.NOT_FOUND


def test_an_error_that_is_not_a_problem_document_still_reads_as_one_line() -> None:
    api = FakeApi().on("GET", "/v1/videos", httpx.Response(502, text="<html>\n<b>Bad gateway</b>\n</html>"))
    with _client(api) as client, pytest.raises(ApiError) as caught:
        client.videos()
    assert str(caught.value) == "bad Gateway"
    assert caught.value.exit_code == ExitCode.UNAVAILABLE


def test_a_multi_line_detail_is_folded_into_one_line() -> None:
    api = FakeApi().on(
        "POST", "/v1/videos", problem(422, "ffprobe said:\n  moov atom\n  not found", "Not a usable video")
    )
    with _client(api) as client, pytest.raises(ApiError) as caught:
        client.upload(io.BytesIO(b"x"), "x.mp4", fields={})
    assert str(caught.value) == "not a usable video: ffprobe said: moov atom not found"


def test_a_refused_connection_is_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with _client(httpx.MockTransport(refuse)) as client, pytest.raises(Unreachable) as caught:
        client.videos()
    assert str(caught.value) == "unavailable: cannot connect to http://vidq.test (Connection refused)"
    assert caught.value.exit_code == ExitCode.UNAVAILABLE


def test_a_url_without_a_scheme_is_a_usage_problem() -> None:
    with VidqClient("vidq.test", "k") as client, pytest.raises(UsageProblem, match="not an http"):
        client.videos()


def _history(video_id: str = "vid_1") -> list[dict[str, object]]:
    uploaded = Video.model_validate(video(video_id))
    progress = rendition(video_id, "720p", status="processing", progress=50.0)
    ready = Video.model_validate(video(video_id, status="ready"))
    return [
        event(VideoUploaded, 1, uploaded),
        event(RenditionProgress, 2, progress),
        event(VideoReady, 3, ready),
    ]


def test_follow_ends_after_the_terminal_event() -> None:
    api = FakeApi().on("GET", "/v1/videos/vid_1/events", sse(*_history()))
    with _client(api) as client:
        assert [e.event for e in client.follow("vid_1")] == [
            "video.uploaded",
            "rendition.progress",
            "video.ready",
        ]


def test_follow_resumes_a_broken_stream_after_the_last_sequence_seen() -> None:
    first, second, third = _history()

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    api = FakeApi().on("GET", "/v1/videos/vid_1/events", sse(first, second), broken, sse(third))
    with _client(api) as client:
        assert [e.sequence for e in client.follow("vid_1")] == [1, 2, 3]
    afters = [r.url.params.get("after") for r in api.sent("GET", "/v1/videos/vid_1/events")]
    assert afters == [None, "2", "2"]


def test_follow_stops_without_a_terminal_event_when_the_video_is_over() -> None:
    api = (
        FakeApi()
        .on("GET", "/v1/videos/vid_1/events", sse())
        .on("GET", "/v1/videos/vid_1", ok(video(status="failed")))
    )
    with _client(api) as client:
        assert list(client.follow("vid_1")) == []


def test_follow_stops_at_a_204_for_a_video_whose_end_was_seen() -> None:
    api = (
        FakeApi()
        .on("GET", "/v1/videos/vid_1/events", httpx.Response(204))
        .on("GET", "/v1/videos/vid_1", ok(video(status="ready")))
    )
    with _client(api) as client:
        assert list(client.follow("vid_1", after=9)) == []
    assert len(api.sent("GET", "/v1/videos/vid_1/events")) == 1  # not asked again


def test_follow_gives_up_when_the_gateway_stays_down() -> None:
    api = FakeApi().on(
        "GET", "/v1/videos/vid_1/events", problem(503, "database unavailable", "Service unavailable")
    )
    with _client(api) as client, pytest.raises(ApiError) as caught:
        list(client.follow("vid_1", attempts=3))
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert len(api.sent("GET", "/v1/videos/vid_1/events")) == 3


def test_follow_does_not_retry_a_missing_video() -> None:
    api = FakeApi().on("GET", "/v1/videos/vid_x/events", problem(404, "no video 'vid_x'", "Not found"))
    with _client(api) as client, pytest.raises(ApiError, match="no video"):
        list(client.follow("vid_x"))
    assert len(api.requests) == 1


ID = "vid_1"


class TusServer:
    """A tus endpoint in memory that can break a PATCH part-way (keeping what arrived)."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.length = 0
        self.metadata = ""
        #: per PATCH, in order: None (take it whole), an int (keep that many bytes, then the
        #: connection breaks) or a status to answer without taking anything
        self.faults: list[int | tuple[str, int] | None] = []
        self.patches: list[int] = []
        self.deleted = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        headers = {"tus-resumable": "1.0.0", "vidq-video-id": ID}
        if request.method == "POST" and request.url.path == "/v1/tus":
            self.length = int(request.headers["upload-length"])
            self.metadata = request.headers["upload-metadata"]
            return httpx.Response(201, headers={**headers, "location": "/v1/tus/tus_1"})
        if request.method == "HEAD":
            return httpx.Response(200, headers={**headers, "upload-offset": str(len(self.received))})
        if request.method == "PATCH":
            offset = int(request.headers["upload-offset"])
            self.patches.append(offset)
            if offset != len(self.received):
                return problem(409, f"the upload is at byte {len(self.received)}")
            fault = self.faults.pop(0) if self.faults else None
            if isinstance(fault, tuple):
                return problem(fault[1], fault[0])
            if isinstance(fault, int):
                self.received += request.content[:fault]
                raise httpx.ReadError("connection reset by peer", request=request)
            self.received += request.content
            return httpx.Response(204, headers={**headers, "upload-offset": str(len(self.received))})
        if request.method == "DELETE":
            self.deleted = True
            return httpx.Response(204, headers=headers)
        if request.method == "GET" and request.url.path == f"/v1/videos/{ID}":
            return ok(video(ID))
        return problem(404, "no route")


def _resumable_client(server: TusServer, pauses: list[float]) -> VidqClient:
    return VidqClient(
        "http://vidq.test", "vidq_key", transport=httpx.MockTransport(server), pause=pauses.append
    )


def test_a_resumable_upload_resumes_from_the_gateways_offset_after_a_break() -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes: 11 chunks of 1,000
    server = TusServer()
    server.faults = [None, 300, ("database unavailable", 503), None]
    seen: list[int] = []
    pauses: list[float] = []
    with _resumable_client(server, pauses) as api:
        body = api.upload_resumable(
            io.BytesIO(data),
            len(data),
            "clip.mp4",
            fields={"qualities": "360p"},
            chunk_size=1000,
            on_progress=seen.append,
        )
    assert body["id"] == ID
    assert bytes(server.received) == data  # whole, in order: the break cost only what was lost
    assert server.patches[:5] == [0, 1000, 1300, 1300, 2300]
    assert pauses == [2.0, 4.0]  # growing while chunks fail in a row
    assert seen[-1] == len(data)
    assert max(seen) == len(data)
    assert "filename Y2xpcC5tcDQ=" in server.metadata  # base64 of clip.mp4
    assert "qualities MzYwcA==" in server.metadata


def test_a_resumable_upload_stops_at_a_refusal_or_after_too_many_failures() -> None:
    data = b"x" * 3000
    refused = TusServer()
    refused.faults = [None, ("not a video file ffmpeg can read", 422)]
    with _resumable_client(refused, []) as api, pytest.raises(ApiError) as exc:
        api.upload_resumable(io.BytesIO(data), len(data), "clip.mp4", fields={}, chunk_size=2000)
    assert exc.value.status == 422
    assert refused.deleted  # nothing would resume it: ended at once
    broken = TusServer()
    broken.faults = [0] * 20
    pauses: list[float] = []
    with _resumable_client(broken, pauses) as api, pytest.raises(Unreachable):
        api.upload_resumable(io.BytesIO(data), len(data), "clip.mp4", fields={}, chunk_size=2000, attempts=3)
    assert pauses == [2.0, 4.0, 8.0]


def test_a_file_that_shrinks_while_it_is_sent_fails_instead_of_looping() -> None:
    server = TusServer()
    shrunk = io.BytesIO(b"x" * 1000)  # the upload was made for 2,000 bytes
    with _resumable_client(server, []) as api, pytest.raises(VidqError, match="changed"):
        api.upload_resumable(shrunk, 2000, "clip.mp4", fields={}, chunk_size=600)
    assert server.patches == [0]  # one piece, then the short read: no empty PATCH
    assert server.deleted
