"""What scripts rely on: exit codes, one error line on stderr, JSON alone on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.unit.vidq.fakeapi import FakeApi, invoke, ok, problem, video
from vidq.__main__ import app
from vidq.session import Session

PAGE = {"data": [video("vid_2"), video("vid_1", status="ready")], "next_cursor": None, "has_more": False}


def test_help_documents_the_exit_codes_and_the_configuration() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for words in ("3 not found", "4 no or wrong API key", "5 server or network unavailable", "VIDQ_API_KEY"):
        assert words in text


def test_no_arguments_shows_help_as_a_usage_error() -> None:
    assert CliRunner().invoke(app, []).exit_code == 2


def test_an_unknown_option_is_typers_usage_error() -> None:
    assert invoke(FakeApi(), "ls", "--nope").exit_code == 2


def test_json_output_is_the_apis_json_and_nothing_else() -> None:
    api = FakeApi().on("GET", "/v1/videos", ok(PAGE))
    result = invoke(api, "ls", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == PAGE
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("answer", "code", "line"),
    [
        (problem(404, "no video 'vid_x'", "Not found"), 3, "vidq: not found: no video 'vid_x'"),
        (
            problem(401, "this API key is not valid (unknown or revoked)", "Missing or invalid API key"),
            4,
            "vidq: missing or invalid API key: this API key is not valid (unknown or revoked)",
        ),
        (
            problem(503, "retry in a few seconds", "Service unavailable"),
            5,
            "vidq: service unavailable: retry in a few seconds",
        ),
        (
            problem(409, "rendition 720p is processing", "Conflict"),
            1,
            "vidq: conflict: rendition 720p is processing",
        ),
    ],
)
def test_an_api_error_is_one_stderr_line_and_an_exit_code(
    answer: httpx.Response, code: int, line: str
) -> None:
    api = FakeApi().on("GET", "/v1/videos/vid_x", answer)
    result = invoke(api, "show", "vid_x", "--json")
    assert result.exit_code == code
    assert result.stderr == line + "\n"
    assert result.stdout == ""


def test_an_unreachable_gateway_exits_5(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    monkeypatch.setenv("VIDQ_URL", "http://127.0.0.1:9")
    result = CliRunner().invoke(app, ["ls"], obj=Session(transport=httpx.MockTransport(refuse)))
    assert result.exit_code == 5
    assert result.stderr == "vidq: unavailable: cannot connect to http://127.0.0.1:9 (Connection refused)\n"


def test_no_api_key_anywhere_exits_4_and_says_where_to_put_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDQ_API_KEY")
    result = invoke(FakeApi(), "ls")
    assert result.exit_code == 4
    assert result.stderr.startswith("vidq: no API key: set VIDQ_API_KEY")
    assert result.stderr.count("\n") == 1


def test_global_options_reach_the_request(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('url = "http://from-file.test"\n')
    api = FakeApi().on("GET", "/v1/videos", ok(PAGE))
    result = CliRunner().invoke(
        app, ["--config", str(config), "--api-key", "vidq_opt", "ls"], obj=api.session()
    )
    assert result.exit_code == 0, result.output
    request = api.requests[0]
    assert request.url.host == "from-file.test"
    assert request.headers["authorization"] == "Bearer vidq_opt"


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("vidq ")
