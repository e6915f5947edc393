"""``vidq uploads create``: a direct-upload URL, printed alone on stdout."""

from __future__ import annotations

import json

from tests.unit.vidq.fakeapi import FakeApi, invoke, ok, problem

UPLOAD = {
    "id": "upl_1",
    "status": "waiting",
    "url": "http://vidq.test/v1/uploads/upl_1?expires=9&signature=s",
    "expires_at": "2026-12-05T11:00:00Z",
    "created_at": "2026-12-05T10:00:00Z",
    "video_id": None,
    "cors_origin": "https://app.example.com",
    "qualities": ["720p", "360p"],
    "callback_url": None,
    "notify_email": "me@example.com",
    "metadata": {"k": 1},
}


def test_create_sends_the_options_and_prints_the_url_alone() -> None:
    api = FakeApi().on("POST", "/v1/uploads", ok(UPLOAD, 201))
    result = invoke(
        api,
        "uploads",
        "create",
        "-q",
        "720p, 360p",
        "--notify-email",
        "me@example.com",
        "--metadata",
        '{"k": 1}',
        "--cors-origin",
        "https://app.example.com",
        "--timeout",
        "600",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(api.requests[0].content) == {
        "timeout_s": 600,
        "qualities": ["720p", "360p"],
        "metadata": {"k": 1},
        "notify_email": "me@example.com",
        "cors_origin": "https://app.example.com",
    }
    assert result.stdout.strip() == UPLOAD["url"]  # for $(vidq uploads create)


def test_bad_metadata_is_a_usage_error_and_a_refusal_is_shown() -> None:
    assert invoke(FakeApi(), "uploads", "create", "--metadata", "{nope").exit_code == 2
    api = FakeApi().on("POST", "/v1/uploads", problem(422, "cors_origin is an origin"))
    result = invoke(api, "uploads", "create", "--cors-origin", "nope")
    assert result.exit_code != 0
    assert "cors_origin is an origin" in result.output
