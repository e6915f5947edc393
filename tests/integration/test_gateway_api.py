"""The REST contract of the gateway, in process, on the real PostgreSQL and RabbitMQ test vhost.

``create_app`` runs with its whole lifespan (migrations, pool, broker connection, projection
consumer, outbox relay, live hub) and is driven through httpx's ASGI transport. No worker runs,
so videos stay queued: these tests check what the API answers and what it leaves in the database,
the outbox and storage, not the media work.

Every test gets its own database state (``db`` truncates), storage folder and gateway, but the
tests of this module share one vhost, bootstrapped once: declaring the whole topology and its
policies takes about a second, which per test would make this file slow. Nothing here reads a
queue, so what accumulates in them between tests does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from gateway.app import create_app, refresh_link_keys
from gateway.auth import create_client_with_key
from gateway.repository import Client
from gateway.settings import GatewaySettings
from shared.bootstrap import bootstrap_broker
from shared.ids import new_id
from shared.messaging.management import Management
from shared.settings import AdminSettings
from shared.storage import LocalStorage, rendition_key, thumbnail_key
from tests.integration.conftest import FAST_RETRIES
from tests.media import make_clip
from tests.realdeps import ADMIN_URL, amqp_url_for, unique
from tests.settings import make
from tests.sites import Answer, Site, site

PROBLEM = "application/problem+json"

#: Values for the path parameters of every ``/v1`` route (none of them exists).
PATH_VALUES = {
    "video_id": "vid_000000000000000000000000",
    "quality": "360p",
    "webhook_id": "whk_000000000000000000000000",
    "delivery_id": "dlv_000000000000000000000000",
    "upload_id": "upl_000000000000000000000000",
}


# -- clips ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clips:
    landscape: Path  # 640x360, 1 s, with audio (~230 kB)
    portrait: Path  # 360x640, no audio
    rotated: Path  # stored 320x240 with 90° rotation metadata: displayed 240x320
    tiny: Path  # 160x120, 0.2 s (~11 kB): quick to upload many times
    anamorphic: Path  # stored 360x240 with 32:27 pixels: displayed 427x240


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    folder = tmp_path_factory.mktemp("clips")
    return Clips(
        landscape=make_clip(folder / "landscape.mp4", width=640, height=360),
        portrait=make_clip(folder / "portrait.mp4", width=360, height=640, audio=False),
        rotated=make_clip(folder / "rotated.mp4", width=320, height=240, rotate=90, audio=False),
        tiny=make_clip(folder / "tiny.mp4", width=160, height=120, duration=0.2, audio=False),
        anamorphic=make_clip(folder / "anamorphic.mp4", width=360, height=240, sar="32/27", audio=False),
    )


# -- the broker, the app and its callers ----------------------------------------------------------


@pytest.fixture(scope="module")
def module_vhost() -> Iterator[str]:
    """One vhost for this module, with the policies applied and the whole topology declared."""
    name = unique("vidq-test-")
    url = amqp_url_for(name)
    settings = make(AdminSettings, amqp_url=url, broker_admin_url=ADMIN_URL, **FAST_RETRIES)
    asyncio.run(bootstrap_broker(settings))
    yield url

    async def delete() -> None:
        async with Management(ADMIN_URL) as api:
            await api.delete_vhost(name)

    asyncio.run(delete())


@pytest.fixture
def vhost(module_vhost: str) -> str:
    """Overrides the per-test vhost of ``conftest.py``: ``settings_for`` points at the module's."""
    return module_vhost


@pytest.fixture
def broker(settings_for: Callable[..., AdminSettings]) -> AdminSettings:
    """Overrides ``conftest.py``'s: the module's vhost is already bootstrapped."""
    return settings_for(AdminSettings)


@dataclass(frozen=True)
class Caller:
    client: Client
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def _caller(db: asyncpg.Pool, name: str) -> Caller:
    async with db.acquire() as conn:
        client, key = await create_client_with_key(conn, name)
    return Caller(client, key)


@pytest.fixture
async def alice(db: asyncpg.Pool) -> Caller:
    return await _caller(db, "alice")


@pytest.fixture
async def bob(db: asyncpg.Pool) -> Caller:
    return await _caller(db, "bob")


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """The gateway's storage folder (``settings_for`` points every service there)."""
    return tmp_path / "storage"


Start = Callable[..., contextlib.AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
def start(db: asyncpg.Pool, broker: AdminSettings, settings_for: Callable[..., Any]) -> Start:
    """Run the gateway (with its lifespan) on this test's vhost, database and storage."""

    @contextlib.asynccontextmanager
    async def run(**values: Any) -> AsyncIterator[FastAPI]:
        settings: GatewaySettings = settings_for(GatewaySettings, shutdown_grace_s=1.0, **values)
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
            yield app

    return run


@contextlib.asynccontextmanager
async def connect(app: FastAPI, caller: Caller | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = caller.headers if caller else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as http:
        yield http


@pytest.fixture
async def app(start: Start) -> AsyncIterator[FastAPI]:
    async with start() as running:
        yield running


@pytest.fixture
async def api(app: FastAPI, alice: Caller) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running gateway, authenticated as alice."""
    async with connect(app, alice) as http:
        yield http


# -- helpers --------------------------------------------------------------------------------------


async def upload(
    api: httpx.AsyncClient,
    clip: Path,
    *,
    filename: str | None = None,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    files = {"file": (filename or clip.name, clip.read_bytes(), "video/mp4")}
    return await api.post("/v1/videos", files=files, data=fields, headers=headers)


async def uploaded(api: httpx.AsyncClient, clip: Path, **options: Any) -> dict[str, Any]:
    response = await upload(api, clip, **options)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: httpx.Response, status: int, *mentions: str) -> dict[str, Any]:
    """A problem document of ``status`` whose detail names each of ``mentions``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:vidq:problem:")
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    for text in mentions:
        assert text in body["detail"]
    return body


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


async def assert_nothing_left(db: asyncpg.Pool, storage: Path) -> None:
    assert await db.fetchval("SELECT count(*) FROM videos") == 0
    assert await db.fetchval("SELECT count(*) FROM renditions") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0
    assert files_under(storage / "videos") == []
    assert not (storage / "tmp").exists() or list((storage / "tmp").iterdir()) == []


def renditions_of(video: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(r["quality"], r["width"], r["height"]) for r in video["renditions"]]


def v1_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, concrete path) of every ``/v1`` operation the app documents with the API key.

    A direct upload's URL documents none: it is signed.
    """
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/v1"):
            for method in sorted(operations):
                if operations[method].get("security") != []:
                    yield method.upper(), path.format(**PATH_VALUES)


# -- operations and the OpenAPI document -----------------------------------------------------------


async def test_healthz_answers_200_json(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_the_database_and_the_broker_ok(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


async def test_the_gateways_database_sessions_carry_its_name(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    assert (await api.get("/readyz")).status_code == 200  # a pooled connection in use once
    names = await db.fetch("SELECT application_name FROM pg_stat_activity WHERE datname = current_database()")
    assert "vidq-gateway" in {row["application_name"] for row in names}


async def test_readyz_is_503_while_the_broker_connection_is_being_restored(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    # what aio-pika's robust connection shows between losing the broker and getting it back:
    # not closed (it reconnects by itself), not connected
    connection = app.state.connection
    connection.connected.clear()
    try:
        response = await api.get("/readyz")
        assert_problem(response, 503, "broker")
        assert response.json()["checks"] == {"database": "ok", "broker": "unavailable"}
    finally:
        connection.connected.set()
    assert (await api.get("/readyz")).status_code == 200


async def test_metrics_are_prometheus_text_with_vidq_names(api: httpx.AsyncClient) -> None:
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = set(re.findall(r"^# TYPE (vidq_\w+) ", response.text, re.MULTILINE))
    assert {"vidq_outbox_pending", "vidq_published_total", "vidq_sse_clients"} <= names


async def test_the_openapi_document_lists_every_spec_route_and_docs_serve_html(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/v1/videos": {"get", "post"},
        "/v1/videos/{video_id}": {"get", "delete"},
        "/v1/videos/{video_id}/events": {"get"},
        "/v1/videos/{video_id}/renditions/{quality}": {"get"},
        "/v1/videos/{video_id}/renditions/{quality}/retry": {"post"},
        "/v1/videos/{video_id}/thumbnail": {"get"},
        "/v1/webhooks": {"get", "post"},
        "/v1/webhooks/{webhook_id}": {"get", "patch", "delete"},
        "/v1/webhooks/{webhook_id}/rotate-secret": {"post"},
        "/v1/webhooks/{webhook_id}/deliveries": {"get"},
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry": {"post"},
        "/v1/account": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path

    upload_body = paths["/v1/videos"]["post"]["requestBody"]
    schema = upload_body["content"]["multipart/form-data"]["schema"]
    assert "file" in schema["properties"]
    assert schema["required"] == ["file"]
    assert {"qualities", "callback_url", "notify_email", "metadata"} <= set(schema["properties"])

    docs = await api.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger" in docs.text.lower()


# -- authentication ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "vidq_not-a-key-of-anyone"], ids=["no key", "wrong key"])
async def test_every_v1_route_answers_401_problem_without_a_valid_key(app: FastAPI, key: str | None) -> None:
    routes = list(v1_routes(app))
    assert len(routes) >= 14
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with connect(app) as http:
        for method, path in routes:
            body: dict[str, Any] | None = {} if method in {"POST", "PATCH"} else None
            response = await http.request(method, path, headers=headers, json=body)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["content-type"] == PROBLEM, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
            if method != "HEAD":  # an answer to HEAD has no body
                assert response.json()["status"] == 401


# -- uploads that are refused leave nothing behind -------------------------------------------------------


@pytest.mark.parametrize("declared", [True, False], ids=["with Content-Length", "chunked"])
async def test_an_upload_over_the_size_limit_gets_413_and_leaves_nothing_behind(
    start: Start, alice: Caller, clips: Clips, db: asyncpg.Pool, storage: Path, declared: bool
) -> None:
    async with start(max_upload_bytes=10_000) as running, connect(running, alice) as api:
        if declared:  # the declared length alone is enough to refuse it
            response = await upload(api, clips.landscape)
            assert int(response.request.headers["content-length"]) > clips.landscape.stat().st_size
        else:  # no length: refused while streaming, once past the limit
            encoded = api.build_request(
                "POST", "/v1/videos", files={"file": ("clip.mp4", clips.landscape.read_bytes(), "video/mp4")}
            )
            body = encoded.read()

            async def chunks() -> AsyncIterator[bytes]:
                for start_at in range(0, len(body), 4096):
                    yield body[start_at : start_at + 4096]

            response = await api.post(
                "/v1/videos", content=chunks(), headers={"content-type": encoded.headers["content-type"]}
            )
            assert "content-length" not in response.request.headers
        assert_problem(response, 413, "10000", "upload is over" if declared else "file is over")
    await assert_nothing_left(db, storage)


async def test_a_small_file_over_the_size_limit_is_refused_while_streaming(
    start: Start, alice: Caller, clips: Clips, db: asyncpg.Pool, storage: Path
) -> None:
    # declared a little over the limit (inside the multipart allowance): the stream decides
    size = clips.tiny.stat().st_size
    async with start(max_upload_bytes=size - 1) as running, connect(running, alice) as api:
        assert_problem(await upload(api, clips.tiny), 413, "file is over", str(size - 1))
    await assert_nothing_left(db, storage)


async def test_a_video_over_the_duration_limit_gets_422_naming_the_limit(
    start: Start, alice: Caller, clips: Clips, db: asyncpg.Pool, storage: Path
) -> None:
    async with start(max_duration_s=0.5) as running, connect(running, alice) as api:
        response = await upload(api, clips.landscape)
        body = assert_problem(response, 422, "0.5 s")
        assert "limit" in body["detail"]
    await assert_nothing_left(db, storage)


async def test_a_frame_over_the_pixel_limit_gets_422_naming_the_limit(
    start: Start, alice: Caller, clips: Clips, db: asyncpg.Pool, storage: Path
) -> None:
    async with start(max_pixels=320 * 240) as running, connect(running, alice) as api:
        assert_problem(await upload(api, clips.landscape), 422, "640x360", "76800")
    await assert_nothing_left(db, storage)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("qualities", "720p,999p", "999p"),
        ("metadata", "[1, 2]", "JSON object"),
        ("metadata", '"text"', "JSON object"),
        ("metadata", json.dumps({"note": "x" * 4100}), "4096"),
        ("metadata", "{not json", "not valid JSON"),
        ("notify_email", "not-an-email", "notify_email"),
        ("callback_url", "ftp://example.com/hook", "callback_url"),
        ("metadata", '{"note": "a\\u0000b"}', "NUL"),
        ("metadata", '{"a\\u0000": 1}', "NUL"),
        ("notify_email", "me\x00@example.com", "notify_email"),
        ("callback_url", "https://example.com/a\x00b", "callback_url"),
        ("metadata", '{"a": "\\udc00"}', "surrogate"),
        ("callback_url", "https://example.com/" + "x" * 2100, "2048"),
        ("metadata", '{"a": ' + "[" * 1990 + "]" * 1990 + "}", "32 levels"),
        ("metadata", '{"a": 1e400}', "out of range"),
    ],
    ids=[
        "unknown quality",
        "metadata array",
        "metadata string",
        "metadata over 4 KiB",
        "bad json",
        "email",
        "url",
        "NUL in a metadata value",
        "NUL in a metadata key",
        "NUL in the email",
        "NUL in the url",
        "lone surrogate in metadata",
        "url too long",
        "metadata nested 1990 levels in 4 KiB",
        "metadata number past the float range",
    ],
)
async def test_an_invalid_upload_field_gets_422_naming_it_and_leaves_nothing_behind(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, storage: Path, field: str, value: str, named: str
) -> None:
    options: dict[str, Any] = {field: value}
    response = await upload(api, clips.tiny, **options)
    assert_problem(response, 422, named)
    await assert_nothing_left(db, storage)


async def test_an_empty_file_or_not_a_video_gets_422_and_leaves_nothing_behind(
    api: httpx.AsyncClient, tmp_path: Path, db: asyncpg.Pool, storage: Path
) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert_problem(await upload(api, empty), 422, "empty")
    text = tmp_path / "notes.mp4"
    text.write_bytes(b"this is not a video at all\n" * 100)
    assert_problem(await upload(api, text), 422)
    no_file = await api.post("/v1/videos", files={"qualities": (None, "360p")})
    assert_problem(no_file, 422, "file")
    await assert_nothing_left(db, storage)


@pytest.mark.parametrize("filename", ["../../etc/passwd.mp4", "..\\..\\windows\\passwd.mp4"])
async def test_a_filename_with_path_parts_is_only_data(
    api: httpx.AsyncClient, clips: Clips, storage: Path, filename: str
) -> None:
    video = await uploaded(api, clips.tiny, filename=filename)
    assert video["source"]["filename"] == "passwd.mp4"
    source = storage / "videos" / video["id"] / "source"
    assert files_under(storage) == [storage / ".vidq-storage", source]  # the gateway's mark, the file
    assert source.read_bytes() == clips.tiny.read_bytes()


async def test_control_characters_in_a_raw_filename_are_dropped(api: httpx.AsyncClient, clips: Clips) -> None:
    # built by hand: HTTP clients percent-encode them, a raw multipart body need not
    boundary = "vidq-test-boundary"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="pass\x00wd\x07.mp4"\r\n'
        + b"Content-Type: video/mp4\r\n\r\n"
        + clips.tiny.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = await api.post("/v1/videos", content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["source"]["filename"] == "passwd.mp4"


# -- imports from a URL ---------------------------------------------------------------------------------


@pytest.fixture
def files(clips: Clips) -> Iterator[Site]:
    """The source of imports: each path answers a status, headers and a body."""
    routes: dict[str, Answer] = {
        "/clip.mp4": (200, {"content-type": "video/mp4"}, clips.tiny.read_bytes()),
        "/named": (
            200,
            {"content-disposition": 'attachment; filename="holiday.mp4"'},
            clips.tiny.read_bytes(),
        ),
        "/moved": (302, {"location": "/clip.mp4"}, b""),
        "/loop": (302, {"location": "/loop"}, b""),
        "/notes.mp4": (200, {}, b"this is not a video at all\n" * 100),
        "/empty.mp4": (200, {}, b""),
        "/gzipped": (200, {"content-encoding": "gzip"}, gzip.compress(b"\0" * 100_000)),
        "/to-private": (302, {"location": "http://10.1.2.3/clip.mp4"}, b""),
        "/far-port": (302, {"location": "http://127.0.0.1:99999/clip.mp4"}, b""),
        "/backslash": (302, {"location": "http:\\\\10.1.2.3\\clip.mp4"}, b""),
        "/idn": (302, {"location": "http://b\u00fccher.invalid/clip.mp4"}, b""),  # sent as Latin-1
    }
    with site(routes) as served:
        yield served
    # every request asked for the file as it is, never compressed
    assert all(headers["accept-encoding"] == "identity" for _, headers in served.requests)


@pytest.fixture
async def importer(start: Start, alice: Caller) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway that may import from 127.0.0.1 (where ``files`` serves)."""
    async with start(import_allow_hosts="127.0.0.1") as running, connect(running, alice) as http:
        yield http


async def test_a_video_imported_from_a_url_is_accepted_like_an_upload(
    importer: httpx.AsyncClient, files: Site, clips: Clips, storage: Path
) -> None:
    body = {
        "url": f"{files.url}/moved",  # a redirect, followed
        "qualities": ["144p"],
        "metadata": {"order": 7},
        "notify_email": "me@example.com",
    }
    response = await importer.post("/v1/videos", json=body)

    assert response.status_code == 202, response.text
    video = response.json()
    assert response.headers["location"] == f"/v1/videos/{video['id']}"
    assert video["source"]["filename"] == "clip.mp4"
    assert video["source"]["size_bytes"] == clips.tiny.stat().st_size
    assert (video["source"]["width"], video["source"]["height"]) == (160, 120)
    assert [r["quality"] for r in video["renditions"]] == ["144p"]
    assert video["metadata"] == {"order": 7}
    assert files_under(storage / "videos") == [storage / "videos" / video["id"] / "source"]
    assert (storage / "videos" / video["id"] / "source").read_bytes() == clips.tiny.read_bytes()
    # each request named the URL's own host and port, whatever address it was sent to
    host = files.url.removeprefix("http://")
    assert [(path, headers["host"]) for path, headers in files.requests] == [
        ("/moved", host),
        ("/clip.mp4", host),
    ]

    named = await importer.post("/v1/videos", json={"url": f"{files.url}/named", "qualities": "144p"})
    assert named.status_code == 202, named.text
    assert named.json()["source"]["filename"] == "holiday.mp4"


@pytest.mark.parametrize(
    ("path", "status", "mentions"),
    [
        ("/missing.mp4", 422, ("404",)),
        ("/loop", 422, ("redirects",)),
        ("/notes.mp4", 422, ("not a video file",)),
        ("/empty.mp4", 422, ("empty",)),
        ("/gzipped", 422, ("compressed (gzip)",)),
        ("/to-private", 422, ("10.1.2.3", "VIDQ_IMPORT_ALLOW_HOSTS", "redirected from")),
        ("/far-port", 422, ("99999",)),
        ("/backslash", 422, ("redirects to a URL vidq cannot follow",)),
        ("/idn", 422, ("xn--bcher-kva.invalid",)),
    ],
    ids=["404", "redirect loop", "not a video", "empty", "gzip", "to private", "port", "backslash", "idn"],
)
async def test_a_url_that_gives_no_video_gets_a_problem_and_leaves_nothing_behind(
    importer: httpx.AsyncClient,
    files: Site,
    db: asyncpg.Pool,
    storage: Path,
    path: str,
    status: int,
    mentions: tuple[str, ...],
) -> None:
    response = await importer.post("/v1/videos", json={"url": f"{files.url}{path}"})
    assert_problem(response, status, *mentions)
    await assert_nothing_left(db, storage)


async def test_an_import_over_the_size_limit_gets_413_before_its_body_is_read(
    start: Start, alice: Caller, files: Site, db: asyncpg.Pool, storage: Path
) -> None:
    async with (
        start(import_allow_hosts="127.0.0.1", max_upload_bytes=1000) as running,
        connect(running, alice) as api,
    ):
        assert_problem(await api.post("/v1/videos", json={"url": f"{files.url}/clip.mp4"}), 413, "1000")
    await assert_nothing_left(db, storage)


async def test_an_import_from_a_private_address_is_refused_unless_allowlisted(
    api: httpx.AsyncClient, files: Site, db: asyncpg.Pool, storage: Path
) -> None:
    # the default gateway allows no private, loopback or link-local source
    for url in (f"{files.url}/clip.mp4", "http://10.1.2.3/clip.mp4", "http://localhost:9/clip.mp4"):
        refused = await api.post("/v1/videos", json={"url": url})
        assert_problem(refused, 422, "loopback" if "10." not in url else "private", "VIDQ_IMPORT_ALLOW_HOSTS")
    assert files.requests == []
    await assert_nothing_left(db, storage)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "url"),
        ({"url": "ftp://example.com/clip.mp4"}, "url"),
        ({"url": "https://me:secret@example.com/clip.mp4"}, "credentials"),
        ({"url": "https://example.com/clip.mp4", "qualities": "999p"}, "999p"),
        ({"url": "https://example.com/clip.mp4", "metadata": [1]}, "metadata"),
        ({"url": "https://example.com/clip.mp4", "metadata": {"note": "x" * 4100}}, "4096"),
        ({"url": "https://example.com/clip.mp4", "notify_email": "nope"}, "notify_email"),
        ({"url": "https://example.com/clip.mp4", "file": "x"}, "file"),
    ],
    ids=[
        "no url",
        "ftp",
        "credentials",
        "quality",
        "metadata array",
        "metadata over 4 KiB",
        "email",
        "unknown field",
    ],
)
async def test_an_invalid_import_gets_422_naming_the_field_before_any_download(
    api: httpx.AsyncClient, db: asyncpg.Pool, storage: Path, body: dict[str, Any], named: str
) -> None:
    assert_problem(await api.post("/v1/videos", json=body), 422, named)
    await assert_nothing_left(db, storage)


async def test_an_import_with_a_host_no_resolver_takes_is_a_problem_not_a_crash(
    api: httpx.AsyncClient,
) -> None:
    for host in ("a" * 64 + ".example", "a..example"):
        response = await api.post("/v1/videos", json={"url": f"http://{host}/clip.mp4"})
        assert_problem(response, 422)


async def test_import_metadata_is_measured_as_compact_json_like_a_forms(
    importer: httpx.AsyncClient, files: Site
) -> None:
    # about 4 KiB written compact; json.dumps' default separators would make it 4.8 KB
    metadata = {f"k{i:03}": 0 for i in range(450)}
    assert len(json.dumps(metadata, separators=(",", ":"))) <= 4096 < len(json.dumps(metadata))
    response = await importer.post(
        "/v1/videos", json={"url": f"{files.url}/clip.mp4", "qualities": "144p", "metadata": metadata}
    )
    assert response.status_code == 202, response.text
    assert response.json()["metadata"] == metadata


async def test_an_import_body_over_its_limit_or_not_json_gets_a_problem(api: httpx.AsyncClient) -> None:
    huge = {"url": "https://example.com/clip.mp4", "metadata": {"note": "x" * 20_000}}
    assert_problem(await api.post("/v1/videos", json=huge), 413, "16384")
    broken = await api.post("/v1/videos", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(broken, 422)
    # nested past the parser's recursion limit (json.loads raised RecursionError: a 500)
    for deep in (
        b'{"url": "https://example.com/clip.mp4", "metadata": {"a": ' + b"[" * 1990 + b"]" * 1990 + b"}}",
        b"[" * 5000 + b"]" * 5000,
    ):
        nested = await api.post("/v1/videos", content=deep, headers={"content-type": "application/json"})
        assert_problem(nested, 422)


async def test_an_import_retried_under_its_idempotency_key_gets_the_first_answer(
    importer: httpx.AsyncClient, files: Site, db: asyncpg.Pool
) -> None:
    body = {"url": f"{files.url}/clip.mp4", "qualities": "144p"}
    headers = {"idempotency-key": "import-1"}
    first = await importer.post("/v1/videos", json=body, headers=headers)
    again = await importer.post("/v1/videos", json=body, headers=headers)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(files.requests) == 1  # downloaded once
    other = await importer.post("/v1/videos", json={**body, "qualities": "144p,"}, headers=headers)
    assert_problem(other, 422)
    assert await db.fetchval("SELECT count(*) FROM videos") == 1


async def test_imports_over_a_clients_share_or_the_gateways_are_refused_at_once_then_taken_again(
    start: Start, alice: Caller, bob: Caller, clips: Clips, db: asyncpg.Pool, storage: Path
) -> None:
    carol = await _caller(db, "carol")
    release = threading.Event()
    clip = (200, {"content-type": "video/mp4"}, clips.tiny.read_bytes())
    routes = {"/slow.mp4": clip, "/clip.mp4": clip}
    with site(routes, hold={"/slow.mp4": release}) as files:
        slow, quick = {"url": f"{files.url}/slow.mp4"}, {"url": f"{files.url}/clip.mp4"}
        async with (
            start(import_allow_hosts="127.0.0.1", max_imports=2, max_imports_per_client=1) as running,
            connect(running, alice) as alices,
            connect(running, bob) as bobs,
            connect(running, carol) as carols,
        ):
            try:
                alices_first = asyncio.create_task(alices.post("/v1/videos", json=slow))
                await _until(lambda: len(files.requests) == 1)  # downloading: alice's one slot
                over_share = await alices.post("/v1/videos", json=quick)
                assert_problem(over_share, 429, "VIDQ_MAX_IMPORTS_PER_CLIENT", "1")
                assert over_share.headers["retry-after"] == "10"
                # an upload is not an import: it takes no slot
                assert (await upload(alices, clips.tiny)).status_code == 202

                bobs_first = asyncio.create_task(bobs.post("/v1/videos", json=slow))
                await _until(lambda: len(files.requests) == 2)  # the gateway's last slot
                full = await carols.post("/v1/videos", json=quick)
                assert_problem(full, 503, "VIDQ_MAX_IMPORTS")
                assert full.headers["retry-after"] == "10"
            finally:
                release.set()
            assert (await alices_first).status_code == (await bobs_first).status_code == 202
            # the slots are free again, for the clients refused before
            assert (await carols.post("/v1/videos", json=quick)).status_code == 202
            assert (await alices.post("/v1/videos", json=quick)).status_code == 202
    # refused imports downloaded nothing and left nothing: five videos, five sources
    assert [path for path, _ in files.requests].count("/clip.mp4") == 2
    assert await db.fetchval("SELECT count(*) FROM videos") == 5
    assert len(files_under(storage / "videos")) == 5


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


# -- the accepted upload --------------------------------------------------------------------------------


async def test_an_accepted_upload_answers_202_with_the_probe_and_the_planned_ladder(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool
) -> None:
    metadata = {"title": "a test", "tags": ["x", "y"], "n": 3}
    response = await upload(
        api, clips.landscape, metadata=json.dumps(metadata), notify_email="me@example.com"
    )
    assert response.status_code == 202, response.text
    video = response.json()
    assert response.headers["location"] == f"/v1/videos/{video['id']}"
    assert video["id"].startswith("vid_")
    assert video["status"] == "queued"
    assert renditions_of(video) == [("360p", 640, 360), ("240p", 426, 240), ("144p", 256, 144)]
    assert all(
        r["status"] == "queued" and r["progress"] == 0 and r["url"] is None for r in video["renditions"]
    )
    source = video["source"]
    assert source["filename"] == "landscape.mp4"
    assert source["size_bytes"] == clips.landscape.stat().st_size
    assert (source["width"], source["height"]) == (640, 360)
    assert source["duration_s"] == pytest.approx(1.0, abs=0.1)
    assert (source["video_codec"], source["audio_codec"]) == ("h264", "aac")
    assert video["thumbnail"]["status"] == "queued"
    assert video["thumbnail"]["urls"] == []
    assert video["metadata"] == metadata
    assert video["notify_email"] == "me@example.com"
    assert video["error"] is None

    again = await api.get(response.headers["location"])
    assert again.status_code == 200
    assert again.json() == video
    assert await db.fetchval("SELECT count(*) FROM videos") == 1


async def test_a_portrait_clip_plans_by_its_short_side(api: httpx.AsyncClient, clips: Clips) -> None:
    video = await uploaded(api, clips.portrait)
    assert (video["source"]["width"], video["source"]["height"]) == (360, 640)
    assert video["source"]["audio_codec"] is None
    assert renditions_of(video) == [("360p", 360, 640), ("240p", 240, 426), ("144p", 144, 256)]


async def test_a_rotated_clip_plans_by_its_displayed_short_side(api: httpx.AsyncClient, clips: Clips) -> None:
    video = await uploaded(api, clips.rotated)
    assert (video["source"]["width"], video["source"]["height"]) == (240, 320)
    assert renditions_of(video) == [("240p", 240, 320), ("144p", 144, 192)]


async def test_an_anamorphic_clip_plans_by_its_displayed_picture(
    api: httpx.AsyncClient, clips: Clips
) -> None:
    video = await uploaded(api, clips.anamorphic)
    assert (video["source"]["width"], video["source"]["height"]) == (427, 240)
    assert renditions_of(video) == [("240p", 426, 240), ("144p", 256, 144)]


async def test_asked_qualities_above_the_source_are_dropped(api: httpx.AsyncClient, clips: Clips) -> None:
    video = await uploaded(api, clips.landscape, qualities="1080p,360p,144p")
    assert [r["quality"] for r in video["renditions"]] == ["360p", "144p"]
    refused = await upload(api, clips.landscape, qualities="1080p")
    assert_problem(refused, 422, "never upscales")


# -- listing --------------------------------------------------------------------------------------------


async def test_the_listing_is_newest_first_paginated_filtered_and_per_client(
    app: FastAPI, api: httpx.AsyncClient, bob: Caller, clips: Clips, db: asyncpg.Pool
) -> None:
    ids = [(await uploaded(api, clips.tiny))["id"] for _ in range(5)]
    async with connect(app, bob) as bob_api:
        bobs = (await uploaded(bob_api, clips.tiny))["id"]
        listed = (await bob_api.get("/v1/videos")).json()
        assert [v["id"] for v in listed["data"]] == [bobs]

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await api.get("/v1/videos", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["data"]) <= 2
        assert body["has_more"] is (body["next_cursor"] is not None)
        seen += [v["id"] for v in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, each exactly once, never bob's

    await db.execute("UPDATE videos SET status = 'ready' WHERE id = $1", ids[2])
    queued = (await api.get("/v1/videos", params={"status": "queued"})).json()
    assert [v["id"] for v in queued["data"]] == [i for i in ids[::-1] if i != ids[2]]
    ready = (await api.get("/v1/videos", params={"status": "ready"})).json()
    assert [v["id"] for v in ready["data"]] == [ids[2]]

    assert (await api.get(f"/v1/videos/{bobs}")).status_code == 404
    assert_problem(await api.get("/v1/videos", params={"cursor": "garbage"}), 422, "cursor")
    assert_problem(await api.get("/v1/videos", params={"status": "done"}), 422, "status")
    assert_problem(await api.get("/v1/videos", params={"limit": 0}), 422, "limit")


# -- Idempotency-Key ------------------------------------------------------------------------------------


async def test_the_same_idempotency_key_replays_the_first_answer_and_makes_one_video(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool
) -> None:
    headers = {"Idempotency-Key": "upload-1"}
    first = await upload(api, clips.tiny, headers=headers)
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    second = await upload(api, clips.tiny, headers=headers)
    assert second.status_code == 202
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]
    assert second.json() == first.json()
    assert await db.fetchval("SELECT count(*) FROM videos") == 1
    other = await upload(api, clips.tiny, headers={"Idempotency-Key": "upload-2"})
    assert other.json()["id"] != first.json()["id"]


async def test_a_refused_upload_does_not_hold_its_idempotency_key(
    api: httpx.AsyncClient, tmp_path: Path, clips: Clips, db: asyncpg.Pool
) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    headers = {"Idempotency-Key": "fix-and-retry"}
    first = await upload(api, empty, headers=headers)
    assert_problem(first, 422, "empty")
    assert "idempotent-replayed" not in first.headers
    # the client fixes its request and sends it again under the same key
    fixed = await upload(api, clips.tiny, headers=headers)
    assert fixed.status_code == 202, fixed.text
    assert "idempotent-replayed" not in fixed.headers
    again = await upload(api, clips.tiny, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == fixed.json()
    assert await db.fetchval("SELECT count(*) FROM videos") == 1


@pytest.mark.parametrize(
    ("clip", "fields", "filename"),
    [
        ("landscape", {}, None),
        ("tiny", {"qualities": "144p"}, None),
        ("tiny", {"metadata": '{"n": 2}'}, None),
        ("tiny", {}, "other-name.mp4"),
    ],
    ids=["another file", "another quality", "other metadata", "another filename"],
)
async def test_the_same_idempotency_key_with_a_different_upload_is_422_and_makes_nothing(
    api: httpx.AsyncClient,
    clips: Clips,
    db: asyncpg.Pool,
    clip: str,
    fields: dict[str, str],
    filename: str | None,
) -> None:
    headers = {"Idempotency-Key": "one-request"}
    first = await upload(api, clips.tiny, headers=headers, metadata='{"n": 1}')
    assert first.status_code == 202, first.text
    other = await upload(
        api, getattr(clips, clip), headers=headers, filename=filename, **{"metadata": '{"n": 1}', **fields}
    )
    body = assert_problem(other, 422, "Idempotency-Key", "different request")
    assert body["type"] == "urn:vidq:problem:idempotency-key-reused"
    assert await db.fetchval("SELECT count(*) FROM videos") == 1
    same = await upload(api, clips.tiny, headers=headers, metadata='{"n": 1}')
    assert same.headers["idempotent-replayed"] == "true"
    assert same.json() == first.json()


# -- retrying a rendition -------------------------------------------------------------------------------


async def test_only_a_failed_rendition_can_be_retried_and_it_gets_a_new_job(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool
) -> None:
    video_id = (await uploaded(api, clips.landscape))["id"]
    retry = f"/v1/videos/{video_id}/renditions/360p/retry"
    assert_problem(await api.post(retry), 409, "queued")
    assert_problem(await api.post(f"/v1/videos/{video_id}/renditions/720p/retry"), 404, "720p")
    assert_problem(await api.post(f"/v1/videos/{video_id}/renditions/999p/retry"), 404)

    old_job = await db.fetchval(
        "SELECT job_id FROM renditions WHERE video_id = $1 AND quality = '360p'", video_id
    )
    await db.execute(
        "UPDATE renditions SET status = 'failed', error = 'boom', attempts = 3 "
        "WHERE video_id = $1 AND quality = '360p'",
        video_id,
    )
    await db.execute("UPDATE videos SET status = 'failed', error = '360p failed' WHERE id = $1", video_id)

    response = await api.post(retry)
    assert response.status_code == 202, response.text
    video = response.json()
    assert video["status"] == "processing"
    again = next(r for r in video["renditions"] if r["quality"] == "360p")
    assert (again["status"], again["error"], again["attempts"]) == ("queued", None, 0)
    row = await db.fetchrow(
        "SELECT status, job_id FROM renditions WHERE video_id = $1 AND quality = '360p'", video_id
    )
    assert row is not None
    assert row["status"] == "queued"
    assert row["job_id"] != old_job
    commands = await db.fetch(
        """SELECT message_id, body FROM outbox
           WHERE exchange = 'vidq.transcode' AND routing_key = '360p' AND correlation_id = $1 ORDER BY id""",
        video_id,
    )
    assert [c["message_id"] for c in commands] == [old_job, row["job_id"]]
    command = json.loads(bytes(commands[-1]["body"]))
    assert command["job_id"] == row["job_id"]
    assert command["quality"] == "360p"
    assert (command["width"], command["height"]) == (640, 360)
    assert_problem(await api.post(retry), 409)  # queued again: not a second time


# -- deleting ------------------------------------------------------------------------------------------


async def test_deleting_a_queued_video_cancels_then_deletes_it_with_its_files(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, storage: Path
) -> None:
    video_id = (await uploaded(api, clips.tiny))["id"]
    folder = storage / "videos" / video_id
    assert (folder / "source").is_file()

    response = await api.delete(f"/v1/videos/{video_id}")
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await api.get(f"/v1/videos/{video_id}"), 404)
    assert video_id not in [v["id"] for v in (await api.get("/v1/videos")).json()["data"]]
    events = await db.fetch(
        "SELECT routing_key FROM outbox WHERE exchange = 'vidq.events' AND correlation_id = $1 ORDER BY id",
        video_id,
    )
    assert [e["routing_key"] for e in events] == ["video.uploaded", "video.canceled", "video.deleted"]
    assert not folder.exists()
    assert_problem(await api.delete(f"/v1/videos/{video_id}"), 404)


async def test_another_clients_video_is_404_for_every_verb(
    app: FastAPI, api: httpx.AsyncClient, bob: Caller, clips: Clips, storage: Path
) -> None:
    video_id = (await uploaded(api, clips.tiny))["id"]
    async with connect(app, bob) as bob_api:
        for method, path in [
            ("GET", f"/v1/videos/{video_id}"),
            ("GET", f"/v1/videos/{video_id}/events"),
            ("GET", f"/v1/videos/{video_id}/renditions/144p"),
            ("GET", f"/v1/videos/{video_id}/thumbnail"),
            ("POST", f"/v1/videos/{video_id}/renditions/144p/retry"),
            ("DELETE", f"/v1/videos/{video_id}"),
        ]:
            assert_problem(await bob_api.request(method, path), 404)
    assert (storage / "videos" / video_id / "source").is_file()
    assert (await api.get(f"/v1/videos/{video_id}")).status_code == 200


# -- downloads before they exist --------------------------------------------------------------------------


async def test_a_rendition_or_thumbnail_that_is_not_ready_is_409_and_an_unknown_quality_404(
    api: httpx.AsyncClient, clips: Clips
) -> None:
    video_id = (await uploaded(api, clips.tiny))["id"]
    assert_problem(await api.get(f"/v1/videos/{video_id}/renditions/144p"), 409, "144p")
    assert_problem(await api.get(f"/v1/videos/{video_id}/thumbnail"), 409, "thumbnail")
    assert_problem(await api.get(f"/v1/videos/{video_id}/thumbnail", params={"width": 320}), 409)
    assert_problem(await api.get(f"/v1/videos/{video_id}/renditions/720p"), 404, "720p")
    assert_problem(await api.get(f"/v1/videos/{video_id}/renditions/nope"), 404)
    assert_problem(await api.get("/v1/videos/vid_000000000000000000000000/renditions/144p"), 404)


# -- signed links ---------------------------------------------------------------------------------------


async def _make_ready(db: asyncpg.Pool, storage: Path, video_id: str) -> tuple[bytes, bytes]:
    """Mark the 144p rendition and a 160 px thumbnail ready, with files; returns their bytes."""
    mp4, jpeg = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8, b"\xff\xd8\xff\xe0jpeg"
    files = LocalStorage(storage)
    for key, body in ((rendition_key(video_id, "144p"), mp4), (thumbnail_key(video_id, 160), jpeg)):
        path = files.local_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    await db.execute(
        "UPDATE renditions SET status = 'ready', size_bytes = $2 WHERE video_id = $1 AND quality = '144p'",
        video_id,
        len(mp4),
    )
    await db.execute(
        "UPDATE videos SET thumbnail_status = 'ready', thumbnail_widths = '{160}' WHERE id = $1", video_id
    )
    return mp4, jpeg


async def test_signed_links_open_a_file_without_the_key_until_they_expire_and_only_that_file(
    app: FastAPI, api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, storage: Path
) -> None:
    video_id = (await uploaded(api, clips.tiny))["id"]
    other_id = (await uploaded(api, clips.tiny))["id"]
    mp4, jpeg = await _make_ready(db, storage, video_id)
    video = (await api.get(f"/v1/videos/{video_id}")).json()
    [rendition] = video["renditions"]
    assert rendition["url"].endswith(f"/v1/videos/{video_id}/renditions/144p")  # unchanged, for the key
    signed = rendition["signed_url"]
    assert signed.startswith(rendition["url"] + "?expires=")
    assert (await api.get(f"/v1/videos/{video_id}")).json()["renditions"][0]["signed_url"] == signed
    [thumb] = video["thumbnail"]["signed_urls"]
    own = await api.get(rendition["url"])
    assert own.headers["cache-control"] == "private, no-cache"  # the key's: checked again each time

    async with connect(app) as anonymous:  # no key: a <video src>, an email's link
        assert_problem(await anonymous.get(rendition["url"]), 401)
        whole = await anonymous.get(signed)
        assert (whole.status_code, whole.content) == (200, mp4)
        part = await anonymous.get(signed, headers={"range": "bytes=0-99"})
        assert (part.status_code, part.content) == (206, mp4[:100])
        picture = await anonymous.get(thumb)
        assert (picture.status_code, picture.content) == (200, jpeg)
        # kept by the browser for as long as the link lasts, by no shared cache
        age = int(whole.headers["cache-control"].removeprefix("private, max-age="))
        assert 7 * 24 * 3600 <= age <= 7 * 24 * 3600 + 3600
        # a thumbnail's link is for its width: not another, not the largest
        assert_problem(await anonymous.get(thumb.replace("width=160", "width=1280")), 403, "signature")
        assert_problem(await anonymous.get(thumb.replace("width=160&", "")), 403, "signature")

        query = signed.split("?", 1)[1]
        sig = re.search(r"signature=([^&]+)", query)
        assert sig is not None
        altered = signed.replace(
            sig.group(1), sig.group(1)[:-2] + ("AA" if sig.group(1)[-2:] != "AA" else "BB")
        )
        assert_problem(await anonymous.get(altered), 403, "signature")
        later = re.sub(r"expires=(\d+)", lambda m: f"expires={int(m.group(1)) + 3600}", signed)
        assert_problem(await anonymous.get(later), 403, "signature")
        for elsewhere in (
            f"/v1/videos/{other_id}/renditions/144p?{query}",
            f"/v1/videos/{video_id}/thumbnail?{query}",
            f"/v1/videos/{video_id}/renditions/240p?{query}",
        ):
            assert_problem(await anonymous.get(elsewhere), 403)
        assert_problem(await anonymous.get(f"{rendition['url']}?expires=1"), 422, "signature")

        deps = app.state.deps
        expired = deps.links.signed_rendition(video_id, "144p", now=1_000_000_000.0)
        assert_problem(await anonymous.get(expired), 403, "expired")

        assert (await api.delete(f"/v1/videos/{video_id}")).status_code == 204
        assert_problem(await anonymous.get(signed), 404)


async def test_a_rotated_key_signs_new_links_and_a_revoked_one_opens_no_more(
    app: FastAPI, api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, storage: Path, database_url: str
) -> None:
    video_id = (await uploaded(api, clips.tiny))["id"]
    await _make_ready(db, storage, video_id)

    async def signed_now() -> str:
        link: str = (await api.get(f"/v1/videos/{video_id}")).json()["renditions"][0]["signed_url"]
        return link

    async def rotate(*flags: str) -> None:  # as an operator does, then the gateway's minute passes
        env = {**os.environ, "VIDQ_DATABASE_URL": database_url}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "links", "rotate", *flags, cwd=storage.parent, env=env
        )
        assert await asyncio.wait_for(process.wait(), 60) == 0
        await refresh_link_keys(db, app.state.deps.key_ring, app.state.settings.media_link_ttl_s)

    first = await signed_now()
    await rotate()
    second = await signed_now()
    assert second != first
    async with connect(app) as anonymous:
        assert (await anonymous.get(first)).status_code == 200  # given out before: still good
        assert (await anonymous.get(second)).status_code == 200
        await rotate("--revoke")  # a leaked key: every link so far is refused
        assert_problem(await anonymous.get(first), 403, "signature")
        assert_problem(await anonymous.get(second), 403, "signature")
        assert (await anonymous.get(await signed_now())).status_code == 200


# -- direct uploads -------------------------------------------------------------------------------------


async def test_a_direct_upload_url_takes_one_file_without_the_key_for_its_client(
    app: FastAPI, api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, storage: Path
) -> None:
    options = {"qualities": ["144p"], "metadata": {"from": "browser"}, "notify_email": "ana@example.com"}
    made = await api.post("/v1/uploads", json={**options, "cors_origin": "https://app.example.com"})
    assert made.status_code == 201, made.text
    upload = made.json()
    assert made.headers["location"] == f"/v1/uploads/{upload['id']}"
    assert (upload["status"], upload["video_id"], upload["qualities"]) == ("waiting", None, ["144p"])
    url = upload["url"]
    assert "signature=" in url
    files = {"file": (clips.tiny.name, clips.tiny.read_bytes(), "video/mp4")}

    async with connect(app) as browser:  # no key
        # a page of the allowed origin may read the answers; its preflight is answered
        origin = {"origin": "https://app.example.com"}
        preflight = await browser.options(url, headers={**origin, "access-control-request-method": "POST"})
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        # the options were the client's: the page sends the file alone
        extra = await browser.post(url, files=files, data={"qualities": "720p"}, headers=origin)
        assert_problem(extra, 422, "only the file")
        assert extra.headers["access-control-allow-origin"] == "https://app.example.com"
        not_video = await browser.post(url, files={"file": ("x.mp4", b"not a video" * 100, "video/mp4")})
        assert not_video.status_code == 422  # refused, and the URL still waits for a good one
        sent = await browser.post(url, files=files, headers=origin)
        assert sent.status_code == 202, sent.text
        assert sent.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "access-control-allow-origin" not in (await browser.post(url, files=files)).headers
        again = await browser.post(url, files=files, headers=origin)
        assert_problem(again, 409, "used up")
        assert again.headers["access-control-allow-origin"] == "https://app.example.com"
        bad_query = await browser.post(url.split("?")[0] + "?expires=abc", files=files, headers=origin)
        assert_problem(bad_query, 422)  # the page can read every refusal
        assert bad_query.headers["access-control-allow-origin"] == "https://app.example.com"
        altered = url.replace("signature=", "signature=x")
        assert_problem(await browser.post(altered, files=files), 403, "signature")

    video = sent.json()
    assert sent.headers["location"] == f"/v1/videos/{video['id']}"
    assert (video["metadata"], video["notify_email"]) == ({"from": "browser"}, "ana@example.com")
    assert [r["quality"] for r in video["renditions"]] == ["144p"]
    assert (await api.get(f"/v1/videos/{video['id']}")).status_code == 200  # alice's video
    settled = (await api.get(f"/v1/uploads/{upload['id']}")).json()
    assert (settled["status"], settled["video_id"], settled["url"]) == ("asset_created", video["id"], None)
    assert [u["id"] for u in (await api.get("/v1/uploads")).json()["data"]] == [upload["id"]]
    assert_problem(await api.delete(f"/v1/uploads/{upload['id']}"), 409, video["id"])
    assert await db.fetchval("SELECT count(*) FROM videos") == 1


async def test_a_direct_upload_is_checked_when_made_and_can_be_cancelled_or_time_out(
    app: FastAPI, api: httpx.AsyncClient, bob: Caller, clips: Clips, db: asyncpg.Pool
) -> None:
    assert_problem(await api.post("/v1/uploads", json={"qualities": ["999p"]}), 422, "999p")
    assert_problem(await api.post("/v1/uploads", json={"timeout_s": 10}), 422, "timeout_s")
    for origin in (
        "https://a.example/path",
        "https://a.example?x",
        "https://u:p@a.example",
        "https://A.example",
    ):
        assert_problem(await api.post("/v1/uploads", json={"cors_origin": origin}), 422, "origin")
    assert_problem(
        await api.post("/v1/uploads", json={"cors_origin": "https://a.example:443"}), 422, "origin"
    )
    # checked as an upload's form is: size as compact UTF-8 JSON, no NUL, 8 KiB a field
    assert (await api.post("/v1/uploads", json={"metadata": {"a": "é" * 1500}})).status_code == 201
    assert_problem(await api.post("/v1/uploads", json={"metadata": {"a": "\u0000"}}), 422, "NUL")
    assert_problem(await api.post("/v1/uploads", json={"notify_email": "a" * 400 + "@b.co"}), 422)
    assert_problem(await api.post("/v1/uploads", json={"qualities": ["240p"] * 17}), 422, "qualities")
    not_json = await api.post("/v1/uploads", content=b"{nope", headers={"content-type": "application/json"})
    assert_problem(not_json, 422, "not valid JSON")
    deep = b'{"metadata": {"a": ' + b"[" * 3000 + b"]" * 3000 + b"}}"
    nested = await api.post("/v1/uploads", content=deep, headers={"content-type": "application/json"})
    assert_problem(nested, 422, "nest too deep")  # it said "JSON text must be UTF-8"
    surrogate = b'{"metadata": {"a": "\\ud800"}}'  # the escape, as a client's JSON may carry it
    lone = await api.post("/v1/uploads", content=surrogate, headers={"content-type": "application/json"})
    assert_problem(lone, 422, "surrogate")  # a 500: measured as UTF-8 before it was checked
    assert_problem(await api.post("/v1/uploads", json={"callback_url": "ftp://x"}), 422, "callback_url")
    assert_problem(await api.post("/v1/uploads", json={"nope": 1}), 422)

    upload = (await api.post("/v1/uploads", json={})).json()
    async with connect(app, bob) as other:
        assert_problem(await other.get(f"/v1/uploads/{upload['id']}"), 404)
        assert_problem(await other.delete(f"/v1/uploads/{upload['id']}"), 404)
    assert (await api.delete(f"/v1/uploads/{upload['id']}")).status_code == 204
    assert (await api.delete(f"/v1/uploads/{upload['id']}")).status_code == 204  # already: the same
    assert (await api.get(f"/v1/uploads/{upload['id']}")).json()["status"] == "cancelled"
    files = {"file": (clips.tiny.name, clips.tiny.read_bytes(), "video/mp4")}
    async with connect(app) as browser:
        assert_problem(await browser.post(upload["url"], files=files), 409, "cancelled")

        late = (await api.post("/v1/uploads", json={"timeout_s": 60})).json()
        await db.execute("UPDATE direct_uploads SET expires_at = now() WHERE id = $1", late["id"])
        assert (await api.get(f"/v1/uploads/{late['id']}")).json()["status"] == "timed_out"
        assert_problem(await browser.post(late["url"], files=files), 409, "timed out")
        expired = app.state.deps.links.upload(late["id"], 1_000_000_000)  # its signature's own expiry
        assert_problem(await browser.post(expired, files=files), 409, "timed out")
        assert_problem(
            await browser.post(late["url"].replace("expires=", "expires=x"), files=files), 422, "url"
        )
    assert await db.fetchval("SELECT count(*) FROM videos") == 0


# -- webhooks -----------------------------------------------------------------------------------------------


async def _new_webhook(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post(
        "/v1/webhooks", json={"url": "https://example.com/hooks", "events": ["video.*"], **body}
    )
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/webhooks/{made['id']}"
    return made


async def test_a_client_has_at_most_its_limit_of_webhooks_even_when_created_at_once(
    start: Start, alice: Caller, bob: Caller
) -> None:
    body = {"url": "https://example.com/hooks", "events": ["video.*"]}
    async with start(max_webhooks_per_client=3) as running, connect(running, alice) as api:
        answers = await asyncio.gather(*(api.post("/v1/webhooks", json=body) for _ in range(6)))
        assert sorted(a.status_code for a in answers) == [201, 201, 201, 409, 409, 409]
        refused = next(a for a in answers if a.status_code == 409)
        assert_problem(refused, 409, "3 webhook endpoints")
        assert refused.json()["type"].endswith("limit-reached")
        assert len((await api.get("/v1/webhooks")).json()["data"]) == 3
        # deleting one frees its place; another client has places of its own
        made = [a.json()["id"] for a in answers if a.status_code == 201]
        assert (await api.delete(f"/v1/webhooks/{made[0]}")).status_code == 204
        assert (await api.post("/v1/webhooks", json=body)).status_code == 201
        async with connect(running, bob) as other:
            assert (await other.post("/v1/webhooks", json=body)).status_code == 201


async def test_a_webhook_changed_or_deleted_while_it_is_deleted_is_404_never_500(
    api: httpx.AsyncClient,
) -> None:
    changes = [{"description": "x"}, {"enabled": False}, {"url": "https://example.com/other"}]
    for round_ in range(24):
        made = (await _new_webhook(api))["id"]
        changed, deleted = await asyncio.gather(
            api.patch(f"/v1/webhooks/{made}", json=changes[round_ % 3]),
            api.delete(f"/v1/webhooks/{made}"),
        )
        assert changed.status_code in (200, 404), changed.text
        assert deleted.status_code == 204, deleted.text
        if changed.status_code == 404:
            assert_problem(changed, 404, made)
        # two deletions at once: one did it
        again = (await _new_webhook(api))["id"]
        twice = await asyncio.gather(*(api.delete(f"/v1/webhooks/{again}") for _ in range(2)))
        assert sorted(a.status_code for a in twice) == [204, 404]
    assert (await api.get("/v1/webhooks")).json()["data"] == []


async def test_webhooks_are_created_listed_read_changed_rotated_and_deleted(api: httpx.AsyncClient) -> None:
    made = await _new_webhook(api, description="mine")
    assert made["id"].startswith("whk_")
    assert made["enabled"] is True
    assert made["disabled_reason"] is None
    assert made["secret"].startswith("whsec_")
    assert (made["url"], made["events"], made["description"]) == (
        "https://example.com/hooks",
        ["video.*"],
        "mine",
    )
    path = f"/v1/webhooks/{made['id']}"

    listed = (await api.get("/v1/webhooks")).json()["data"]
    assert [w["id"] for w in listed] == [made["id"]]
    assert "secret" not in listed[0]
    one = await api.get(path)
    assert one.status_code == 200
    assert one.json()["id"] == made["id"]
    assert "secret" not in one.json()

    changed = await api.patch(
        path, json={"events": ["rendition.*", "video.ready"], "description": "changed", "enabled": False}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["events"], body["description"], body["enabled"]) == (
        ["rendition.*", "video.ready"],
        "changed",
        False,
    )
    assert body["disabled_reason"]
    enabled = (await api.patch(path, json={"enabled": True})).json()
    assert (enabled["enabled"], enabled["disabled_reason"]) == (True, None)
    assert enabled["events"] == ["rendition.*", "video.ready"]

    rotated = await api.post(f"{path}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != made["secret"]

    assert (await api.delete(path)).status_code == 204
    assert_problem(await api.get(path), 404)
    assert (await api.get("/v1/webhooks")).json()["data"] == []
    assert_problem(await api.delete(path), 404)


async def _retired(db: asyncpg.Pool, webhook_id: str) -> list[tuple[str, datetime]]:
    row = await db.fetchrow("SELECT retired_secrets, retired_until FROM webhooks WHERE id = $1", webhook_id)
    assert row is not None
    return list(zip(row["retired_secrets"], row["retired_until"], strict=True))


async def test_every_secret_a_rotation_retires_signs_until_its_own_grace_ends(
    api: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    made = await _new_webhook(api)
    path = f"/v1/webhooks/{made['id']}"
    assert made["previous_secrets_sign_until"] == []

    before = datetime.now(UTC)
    first = (await api.post(f"{path}/rotate-secret")).json()
    [(secret, until)] = await _retired(db, made["id"])
    assert secret == made["secret"]
    assert timedelta(hours=23, minutes=59) < until - before < timedelta(hours=24, minutes=1)
    second = (await api.post(f"{path}/rotate-secret")).json()
    # the second rotation keeps the first secret signing, with its own end
    retired = await _retired(db, made["id"])
    assert [secret for secret, _ in retired] == [first["secret"], made["secret"]]
    assert retired[1][1] == until
    shown = (await api.get(path)).json()["previous_secrets_sign_until"]
    assert [datetime.fromisoformat(t) for t in shown] == [until for _, until in retired]
    assert second["previous_secrets_sign_until"] == shown
    assert made["secret"] not in (await api.get(path)).text  # retired secrets are never shown

    # a rotation's grace bounds the older ones' too (it never lengthens them); 0 ends them all
    await api.post(f"{path}/rotate-secret", json={"grace_s": 3600})
    retired = await _retired(db, made["id"])
    assert len(retired) == 3
    assert all(timedelta(minutes=59) < until - before < timedelta(minutes=61) for _, until in retired)
    cut = await api.post(f"{path}/rotate-secret", json={"grace_s": 0})
    assert cut.status_code == 200, cut.text
    assert cut.json()["previous_secrets_sign_until"] == []
    assert await _retired(db, made["id"]) == []

    # at most four retired secrets, the newest
    secrets = [cut.json()["secret"]]
    for _ in range(5):
        secrets.append((await api.post(f"{path}/rotate-secret")).json()["secret"])
    assert [secret for secret, _ in await _retired(db, made["id"])] == secrets[-2:-6:-1]

    for bad in ({"grace_s": -1}, {"grace_s": 604_801}, {"grace": 5}, {"grace_s": "soon"}):
        assert_problem(await api.post(f"{path}/rotate-secret", json=bad), 422, "grace")
    assert len((await api.get(path)).json()["previous_secrets_sign_until"]) == 4


async def test_rotations_at_once_lose_no_new_secret(api: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    made = await _new_webhook(api)
    answers = await asyncio.gather(*(api.post(f"/v1/webhooks/{made['id']}/rotate-secret") for _ in range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    current = await db.fetchval("SELECT secret FROM webhooks WHERE id = $1", made["id"])
    retired = [secret for secret, _ in await _retired(db, made["id"])]
    # one answer's secret is the current one; each other one was retired by a later rotation
    assert {current, *retired} == {made["secret"], *(a.json()["secret"] for a in answers)}
    assert len(retired) == 4


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"url": "https://example.com/hooks", "events": ["nope.*"]}, "nope.*"),
        ({"url": "ftp://example.com/hooks", "events": ["video.*"]}, "url"),
        ({"url": "not a url", "events": ["video.*"]}, "url"),
        ({"url": "https://example.com/hooks", "events": []}, "events"),
        ({"url": "https://example.com/hooks", "extra": 1}, "extra"),
    ],
    ids=["unknown pattern", "ftp url", "not a url", "no events", "unknown field"],
)
async def test_an_invalid_webhook_gets_422_naming_the_field(
    api: httpx.AsyncClient, db: asyncpg.Pool, body: dict[str, Any], named: str
) -> None:
    assert_problem(await api.post("/v1/webhooks", json=body), 422, named)
    assert await db.fetchval("SELECT count(*) FROM webhooks") == 0


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/hook", "http://169.254.169.254/latest", "http://[::1]:9/x", "http://localhost/x"]
)
async def test_a_webhook_or_callback_url_to_a_private_address_is_refused_when_registered(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, storage: Path, url: str
) -> None:
    refused = await api.post("/v1/webhooks", json={"url": url, "events": ["video.*"]})
    assert_problem(refused, 422, "url", "VIDQ_WEBHOOK_ALLOW_HOSTS")
    path = f"/v1/webhooks/{(await _new_webhook(api))['id']}"
    assert_problem(await api.patch(path, json={"url": url}), 422, "VIDQ_WEBHOOK_ALLOW_HOSTS")
    assert (await api.get(path)).json()["url"] == "https://example.com/hooks"
    assert await db.fetchval("SELECT count(*) FROM webhooks") == 1
    assert_problem(
        await upload(api, clips.tiny, callback_url=url), 422, "callback_url", "VIDQ_WEBHOOK_ALLOW_HOSTS"
    )
    await assert_nothing_left(db, storage)


@pytest.mark.parametrize(
    "url", ["https://example.com/\r\nX: y", "https://example.com/a b", "https://example.com/\thook"]
)
async def test_a_url_with_spaces_or_control_characters_is_refused_not_rewritten(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, storage: Path, url: str
) -> None:
    # URL parsers drop line breaks and tabs and encode spaces: it would be kept as another URL
    assert_problem(await api.post("/v1/webhooks", json={"url": url}), 422, "percent-encode")
    path = f"/v1/webhooks/{(await _new_webhook(api))['id']}"
    assert_problem(await api.patch(path, json={"url": url}), 422, "percent-encode")
    assert_problem(await upload(api, clips.tiny, callback_url=url), 422, "callback_url", "percent-encode")
    assert_problem(await api.post("/v1/videos", json={"url": url}), 422, "percent-encode")
    assert await db.fetchval("SELECT count(*) FROM webhooks") == 1
    await assert_nothing_left(db, storage)


async def test_an_allowlisted_private_address_may_be_registered(
    start: Start, alice: Caller, clips: Clips
) -> None:
    async with start(webhook_allow_hosts=("10.0.0.0/8",)) as running, connect(running, alice) as api:
        created = await api.post("/v1/webhooks", json={"url": "http://10.1.2.3:8080/hook"})
        assert created.status_code == 201, created.text
        video = await uploaded(api, clips.tiny, callback_url="http://10.1.2.3:8080/cb")
        assert video["id"].startswith("vid_")
        assert_problem(await api.post("/v1/webhooks", json={"url": "http://192.168.0.1/"}), 422)


async def test_a_webhook_or_callback_url_with_credentials_is_refused_not_kept_and_dropped(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool
) -> None:
    secret_url = "https://user:s3cret@example.com/hooks"
    assert_problem(await api.post("/v1/webhooks", json={"url": secret_url}), 422, "user:password@")
    made = await _new_webhook(api)
    assert_problem(await api.patch(f"/v1/webhooks/{made['id']}", json={"url": secret_url}), 422, "signs")
    refused = await upload(api, clips.tiny, callback_url=secret_url)
    assert_problem(refused, 422, "callback_url", "user:password@")
    assert await db.fetchval("SELECT count(*) FROM webhooks WHERE url LIKE '%s3cret%'") == 0
    # an @ elsewhere in a URL is no credential
    at_in_path = await api.post("/v1/webhooks", json={"url": "https://example.com/hooks/@team"})
    assert at_in_path.status_code == 201, at_in_path.text


async def test_an_invalid_webhook_change_gets_422(api: httpx.AsyncClient) -> None:
    path = f"/v1/webhooks/{(await _new_webhook(api))['id']}"
    assert_problem(await api.patch(path, json={"events": ["nope.*"]}), 422, "nope.*")
    assert_problem(await api.patch(path, json={"url": "ftp://example.com/x"}), 422, "url")
    for name in ("url", "events", "enabled"):  # null is not "unchanged"
        assert_problem(await api.patch(path, json={name: None}), 422, f"{name} cannot be null")
    assert (await api.get(path)).json()["events"] == ["video.*"]
    cleared = await api.patch(path, json={"description": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["description"] == ""


async def test_a_replay_from_the_future_gets_422(api: httpx.AsyncClient) -> None:
    path = f"/v1/webhooks/{(await _new_webhook(api))['id']}/replay"
    assert_problem(await api.post(path, params={"since": "2999-01-01T00:00:00Z"}), 422, "future")


async def test_another_clients_webhook_is_404_for_every_verb(
    app: FastAPI, api: httpx.AsyncClient, bob: Caller
) -> None:
    made = await _new_webhook(api)
    path = f"/v1/webhooks/{made['id']}"
    async with connect(app, bob) as bob_api:
        assert (await bob_api.get("/v1/webhooks")).json()["data"] == []
        assert_problem(await bob_api.get(path), 404)
        assert_problem(await bob_api.patch(path, json={"enabled": False}), 404)
        assert_problem(await bob_api.post(f"{path}/rotate-secret"), 404)
        assert_problem(await bob_api.get(f"{path}/deliveries"), 404)
        assert_problem(await bob_api.post(f"{path}/deliveries/dlv_x/retry"), 404)
        assert_problem(await bob_api.delete(path), 404)
    still = (await api.get(path)).json()
    assert still["enabled"] is True


# -- the delivery log ---------------------------------------------------------------------------------------


async def _delivery(
    db: asyncpg.Pool, client: Client, webhook: dict[str, Any], status: str, codes: list[int]
) -> str:
    """A notifier event, its delivery to ``webhook`` and an attempt per status code (as the notifier)."""
    event_id, delivery_id = new_id("evt"), new_id("dlv")
    await db.execute(
        """INSERT INTO notifier_events (id, type, video_id, client_id, occurred_at, body)
           VALUES ($1, 'video.ready', 'vid_0123456789abcdef', $2, now(), $3)""",
        event_id,
        client.id,
        b'{"type": "video.ready"}',
    )
    await db.execute(
        """INSERT INTO webhook_deliveries (id, event_id, client_id, target, webhook_id, url, status, attempts,
                                           last_status_code, completed_at)
           VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, now())""",
        delivery_id,
        event_id,
        client.id,
        webhook["id"],
        webhook["url"],
        status,
        len(codes),
        codes[-1],
    )
    for index, code in enumerate(codes):
        await db.execute(
            """INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, latency_ms, error)
               VALUES ($1, now() - make_interval(mins => $2), $3, $4, $5)""",
            delivery_id,
            len(codes) - index,
            code,
            10 * (index + 1),
            None if code < 300 else f"HTTP {code}",
        )
    return delivery_id


async def test_the_delivery_log_shows_every_attempt_in_order_and_filters_by_status(
    api: httpx.AsyncClient, alice: Caller, db: asyncpg.Pool
) -> None:
    webhook = await _new_webhook(api)
    failed = await _delivery(db, alice.client, webhook, "failed", [500, 503])
    succeeded = await _delivery(db, alice.client, webhook, "succeeded", [200])
    path = f"/v1/webhooks/{webhook['id']}/deliveries"

    response = await api.get(path)
    assert response.status_code == 200, response.text
    page = response.json()
    assert [d["id"] for d in page["data"]] == [succeeded, failed]  # newest first
    assert page["has_more"] is False
    log = page["data"][1]
    assert (log["event_type"], log["status"], log["attempts"], log["last_status_code"]) == (
        "video.ready",
        "failed",
        2,
        503,
    )
    attempts = log["attempt_log"]
    assert [(a["status_code"], a["latency_ms"], a["error"]) for a in attempts] == [
        (500, 10, "HTTP 500"),
        (503, 20, "HTTP 503"),
    ]
    assert attempts[0]["attempted_at"] < attempts[1]["attempted_at"]

    only_failed = (await api.get(path, params={"status": "failed"})).json()["data"]
    assert [d["id"] for d in only_failed] == [failed]
    only_succeeded = (await api.get(path, params={"status": "succeeded"})).json()["data"]
    assert [d["id"] for d in only_succeeded] == [succeeded]
    assert (await api.get(path, params={"status": "pending"})).json()["data"] == []
    assert_problem(await api.get(path, params={"status": "lost"}), 422, "status")

    # Per event and per video too.
    event_of = {d["id"]: d["event_id"] for d in page["data"]}
    by_event = (await api.get(path, params={"event_id": event_of[failed]})).json()["data"]
    assert [d["id"] for d in by_event] == [failed]
    video_of = {d["id"]: d["video_id"] for d in page["data"]}
    by_video = (await api.get(path, params={"video_id": video_of[failed]})).json()["data"]
    assert failed in [d["id"] for d in by_video]
    assert (await api.get(path, params={"event_id": "evt_nothing"})).json()["data"] == []

    first = (await api.get(path, params={"limit": 1})).json()
    assert [d["id"] for d in first["data"]] == [succeeded]
    rest = (await api.get(path, params={"limit": 1, "cursor": first["next_cursor"]})).json()
    assert [d["id"] for d in rest["data"]] == [failed]
    assert rest["next_cursor"] is None


async def test_one_delivery_shows_its_attempts_and_the_body_the_endpoint_received(
    app: FastAPI, api: httpx.AsyncClient, alice: Caller, bob: Caller, db: asyncpg.Pool
) -> None:
    webhook, other = await _new_webhook(api), await _new_webhook(api)
    failed = await _delivery(db, alice.client, webhook, "failed", [500, 503])
    path = f"/v1/webhooks/{webhook['id']}/deliveries"

    response = await api.get(f"{path}/{failed}")

    assert response.status_code == 200, response.text
    one = response.json()
    assert one["payload"] == {"type": "video.ready"}  # the bytes sent, as JSON
    listed = (await api.get(path)).json()["data"][0]
    assert {k: v for k, v in one.items() if k != "payload"} == listed
    assert_problem(await api.get(f"{path}/dlv_nothing"), 404)
    assert_problem(await api.get(f"/v1/webhooks/{other['id']}/deliveries/{failed}"), 404)  # another endpoint
    async with connect(app, bob) as theirs:
        assert_problem(await theirs.get(f"{path}/{failed}"), 404)  # not that client's


async def test_retrying_a_delivery_queues_a_deliver_webhook_command(
    api: httpx.AsyncClient, alice: Caller, db: asyncpg.Pool
) -> None:
    webhook = await _new_webhook(api)
    delivery_id = await _delivery(db, alice.client, webhook, "failed", [500, 503])
    base = f"/v1/webhooks/{webhook['id']}/deliveries"

    response = await api.post(f"{base}/{delivery_id}/retry")
    assert response.status_code == 202, response.text
    assert response.json()["delivery_id"] == delivery_id
    rows = await db.fetch(
        "SELECT exchange, routing_key, type, body FROM outbox WHERE exchange = 'vidq.deliveries'"
    )
    assert [(r["exchange"], r["routing_key"], r["type"]) for r in rows] == [
        ("vidq.deliveries", "webhook", "webhook.deliver")
    ]
    command = json.loads(bytes(rows[0]["body"]))
    assert (command["delivery_id"], command["manual"]) == (delivery_id, True)

    assert_problem(await api.post(f"{base}/dlv_000000000000000000000000/retry"), 404, "dlv_")
    other = await _new_webhook(api)  # a delivery of another endpoint is not this one's
    assert_problem(await api.post(f"/v1/webhooks/{other['id']}/deliveries/{delivery_id}/retry"), 404)


# -- account and errors -----------------------------------------------------------------------------------


async def test_the_account_shows_the_client_and_its_callback_secret(
    api: httpx.AsyncClient, alice: Caller
) -> None:
    response = await api.get("/v1/account")
    assert response.status_code == 200
    account = response.json()
    assert account["client_id"] == alice.client.id
    assert account["name"] == "alice"
    assert account["callback_secret"].startswith("whsec_")
    assert account["callback_secret"] == alice.client.callback_secret


async def test_unknown_routes_and_wrong_methods_are_problems_without_a_traceback(
    api: httpx.AsyncClient,
) -> None:
    assert_problem(await api.get("/v2/nothing"), 404)
    assert_problem(await api.get("/v1/videos/vid_0/nope"), 404)
    wrong = await api.put("/v1/videos")
    assert_problem(wrong, 405, "PUT is not allowed")
    assert wrong.headers["allow"] == "GET, POST"  # RFC 9110: every method the path serves
    webhook = await api.put("/v1/webhooks/wh_0")
    assert webhook.headers["allow"] == "GET, PATCH, DELETE"
    assert_problem(await api.post("/healthz"), 405)
    bad_json = await api.post(
        "/v1/webhooks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(bad_json, 422)
    not_utf8 = await api.post(
        "/v1/webhooks", content=b'{"url": "\xff"}', headers={"content-type": "application/json"}
    )
    assert_problem(not_utf8, 422)  # as any other body that is not JSON
    not_multipart = await api.post("/v1/videos", json={"file": "x"})
    assert_problem(not_multipart, 422, "multipart")


async def test_a_nul_character_anywhere_is_a_problem_and_the_connection_stays_usable(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool
) -> None:
    video_id = (await uploaded(api, clips.tiny))["id"]
    webhook_id = (await _new_webhook(api))["id"]
    for path in (
        "/v1/videos/%00",
        f"/v1/videos/{video_id}%00",
        "/v1/videos/%00/renditions/144p",
        "/v1/videos/%00/events",
        "/v1/webhooks/%00",
        f"/v1/webhooks/{webhook_id}/deliveries/%00/retry",
    ):
        method = "POST" if path.endswith("/retry") else "GET"
        assert_problem(await api.request(method, path), 404)
    assert_problem(await api.delete("/v1/webhooks/%00"), 404)
    assert_problem(await api.get("/v1/videos", params={"cursor": "\x00"}), 422, "NUL")
    assert_problem(await api.get(f"/v1/videos/{video_id}/events?after=%00"), 422, "NUL")
    created = await api.post("/v1/webhooks", json={"url": "https://example.com/h", "description": "a\x00b"})
    assert_problem(created, 422, "NUL")
    changed = await api.patch(f"/v1/webhooks/{webhook_id}", json={"description": "a\u0000b"})
    assert_problem(changed, 422, "NUL")
    assert await db.fetchval("SELECT count(*) FROM webhooks") == 1
    assert (await api.get(f"/v1/videos/{video_id}")).status_code == 200


async def test_what_no_client_could_mean_gets_422_not_500(api: httpx.AsyncClient, clips: Clips) -> None:
    # a lone surrogate is valid JSON text but no character: the detail quoting it still renders
    raw = '{"url": "https://example.com/h", "events": ["video.\\ud800"]}'
    refused = await api.post("/v1/webhooks", content=raw, headers={"content-type": "application/json"})
    assert_problem(refused, 422, "match no event type")
    long_url = {"url": "https://example.com/" + "x" * 3000, "events": ["video.*"]}
    assert_problem(await api.post("/v1/webhooks", json=long_url), 422)
    many = {"url": "https://example.com/h", "events": ["video.*"] * 51}
    assert_problem(await api.post("/v1/webhooks", json=many), 422)
    twice = await _new_webhook(api, events=["video.*", "video.*", "rendition.completed"])
    assert twice["events"] == ["video.*", "rendition.completed"]

    video = await uploaded(api, clips.tiny)
    path = f"/v1/videos/{video['id']}/events"
    assert_problem(await api.get(path, params={"after": 2**31}), 422, "after")
    assert_problem(await api.get(path, headers={"last-event-id": "99999999999"}), 422, "Last-Event-ID")
    # past the video's own last event (video.uploaded, 1): no stream gave it, and it would wait for ever
    assert_problem(await api.get(path, params={"after": 5}), 422, "?after= 5", "last event (sequence 1)")
    assert_problem(await api.get(path, headers={"last-event-id": "2"}), 422, "Last-Event-ID 2")

    replay = f"/v1/webhooks/{twice['id']}/replay"
    assert (await api.post(replay, params={"since": "0001-01-01T00:00:00Z"})).status_code == 202
    assert_problem(
        await api.post(replay, params={"since": "0001-01-01T00:00:00Z", "until": "0001-02-01T00:00:00Z"}),
        422,
        "1970",
    )


async def test_a_json_body_over_a_mebibyte_is_refused_unread_but_uploads_are_not_limited_by_it(
    api: httpx.AsyncClient, clips: Clips
) -> None:
    big = {"url": "https://example.com/h", "events": ["video.*"], "description": "x" * (1024 * 1024)}
    declared = await api.post("/v1/webhooks", json=big)
    assert_problem(declared, 413, "over 1048576 bytes")
    assert declared.json()["type"].endswith("body-too-large")
    assert declared.json()["instance"] == "/v1/webhooks"
    body = json.dumps(big).encode()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start_at in range(0, len(body), 65536):
            yield body[start_at : start_at + 65536]

    streamed = await api.post("/v1/webhooks", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(streamed, 413, "over 1048576 bytes")
    # an upload streams to disk under its own limit: 2 MiB of padding after the clip's boxes
    padded = clips.landscape.read_bytes() + b"\x00\x00\x00\x08free" + bytes(2 * 1024 * 1024)
    response = await api.post("/v1/videos", files={"file": ("a.mp4", padded, "video/mp4")})
    assert response.status_code == 202, response.text


async def test_a_file_under_another_field_name_is_told_where_it_belongs(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, storage: Path
) -> None:
    files = {"video": ("clip.mp4", clips.tiny.read_bytes(), "video/mp4")}
    assert_problem(await api.post("/v1/videos", files=files), 422, "'video'", "'file' field")
    await assert_nothing_left(db, storage)
