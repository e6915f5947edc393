"""Serving media files: ranges, conditional requests and HEAD, as players and CDNs use them."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from gateway.api.media import MediaFile

BODY = bytes(range(256)) * 4  # 1,024 bytes


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "r.mp4"
    path.write_bytes(BODY)

    async def serve(_: Request) -> MediaFile:
        return MediaFile(path, media_type="video/mp4")

    app = Starlette(routes=[Route("/f", serve, methods=["GET", "HEAD"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


async def test_a_byte_range_is_partial_content(http: httpx.AsyncClient) -> None:
    response = await http.get("/f", headers={"range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 100-199/1024"
    assert response.content == BODY[100:200]


@pytest.mark.parametrize("header", ["items=0-5", "bytes=abc", "bytes=50-10", "bytes", "bytes=-"])
async def test_a_range_in_another_unit_or_that_does_not_parse_is_ignored(
    http: httpx.AsyncClient, header: str
) -> None:
    response = await http.get("/f", headers={"range": header})
    assert response.status_code == 200
    assert response.content == BODY


@pytest.mark.parametrize("header", ["bytes=99999-", "bytes=1024-2000"])
async def test_an_unsatisfiable_range_is_416_problem_with_the_size(
    http: httpx.AsyncClient, header: str
) -> None:
    response = await http.get("/f", headers={"range": header})
    assert response.status_code == 416
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["content-range"] == "bytes */1024"
    assert "1024 bytes" in response.json()["detail"]


async def test_a_matching_etag_or_date_is_304_without_a_body(http: httpx.AsyncClient) -> None:
    first = await http.get("/f")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for headers in (
        {"if-none-match": etag},
        {"if-none-match": f'"other", W/{etag}'},
        {"if-modified-since": modified},
    ):
        again = await http.get("/f", headers=headers)
        assert again.status_code == 304, headers
        assert again.content == b""
        assert again.headers["etag"] == etag
    changed = await http.get("/f", headers={"if-none-match": '"other"', "if-modified-since": modified})
    assert changed.status_code == 200  # If-None-Match decides when both are sent
    assert (await http.get("/f", headers={"if-modified-since": "not a date"})).status_code == 200
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await http.get("/f", headers={"if-modified-since": old})).status_code == 200


async def test_head_answers_the_headers_alone(http: httpx.AsyncClient) -> None:
    response = await http.head("/f")
    assert response.status_code == 200
    assert response.headers["content-length"] == "1024"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content == b""


async def test_a_file_deleted_meanwhile_is_404_problem(http: httpx.AsyncClient, tmp_path: Path) -> None:
    (tmp_path / "r.mp4").unlink()
    response = await http.get("/f")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "deleted" in response.json()["detail"]


@pytest.mark.parametrize(
    "range_", [None, "bytes=100-199", "bytes=0-9,20-29"], ids=["whole", "one range", "two ranges"]
)
async def test_a_file_deleted_once_its_answer_has_begun_is_still_sent_whole(
    tmp_path: Path, range_: str | None
) -> None:
    """A DELETE of the video racing a download: the file goes after the headers went out."""
    path = tmp_path / "r.mp4"
    path.write_bytes(BODY)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/f",
        "headers": [(b"range", range_.encode())] if range_ else [],
        "asgi": {"spec_version": "2.4"},
    }
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            path.unlink()  # the DELETE's rmtree, right after the status and headers
        sent.append(message)

    async def receive() -> dict[str, Any]:  # pragma: no cover - spec 2.4: never asked
        return {"type": "http.disconnect"}

    await MediaFile(path, media_type="video/mp4")(scope, receive, send)

    start, *bodies = sent
    assert start["status"] == (206 if range_ else 200)
    body = b"".join(m.get("body", b"") for m in bodies)
    length = int(dict(start["headers"])[b"content-length"])
    assert len(body) == length
    if range_ is None:
        assert body == BODY
    elif range_ == "bytes=100-199":
        assert body == BODY[100:200]
    else:
        assert BODY[0:10] in body
        assert BODY[20:30] in body


async def test_a_file_deleted_before_its_answer_began_is_a_404_problem(tmp_path: Path) -> None:
    scope = {"type": "http", "method": "GET", "path": "/f", "headers": [], "asgi": {"spec_version": "2.4"}}
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:  # pragma: no cover - never asked
        return {"type": "http.disconnect"}

    await MediaFile(tmp_path / "gone.mp4", media_type="video/mp4")(scope, receive, send)
    assert sent[0]["status"] == 404
    assert b"the video was deleted" in b"".join(m.get("body", b"") for m in sent[1:])
