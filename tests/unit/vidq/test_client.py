from __future__ import annotations

import io

import httpx
import pytest

from shared.events import TERMINAL_EVENT_TYPES, RenditionProgress, VideoReady, VideoUploaded
from shared.resources import TERMINAL_STATUSES, Video
from tests.unit.vidq.fakeapi import FakeApi, event, ok, problem, rendition, sse, video
from vidq.client import TERMINAL_EVENTS, VidqClient
from vidq.client import TERMINAL_STATUSES as CLI_TERMINAL_STATUSES
from vidq.errors import ApiError, ExitCode, Unreachable, UsageProblem, exit_code_for


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
