"""Resumable uploads (tus 1.0.0) on the real gateway, PostgreSQL and RabbitMQ test vhost.

The gateway runs in process, as in ``test_gateway_api.py`` (whose fixtures these tests use);
the protocol is spoken by hand here, so that every answer can be looked at. A real tus client
library drives a running stack in ``tests/e2e/test_pipeline.py``.
"""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests, by name

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from gateway import repository as repo
from gateway import resumable, uploads, videos
from gateway.scheduler import expire_resumable_uploads
from shared.storage import source_key
from tests.integration.test_gateway_api import (  # noqa: F401 - pytest fixtures
    Caller,
    Clips,
    Start,
    alice,
    api,
    app,
    assert_nothing_left,
    assert_problem,
    bob,
    broker,
    clips,
    connect,
    module_vhost,
    start,
    storage,
    vhost,
)

pytestmark = pytest.mark.integration

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


async def create(api: httpx.AsyncClient, length: int, **values: str) -> httpx.Response:
    headers = {**TUS, "Upload-Length": str(length)}
    if values:
        headers["Upload-Metadata"] = metadata(**values)
    return await api.post("/v1/tus", headers=headers)


async def created(api: httpx.AsyncClient, length: int, **values: str) -> str:
    response = await create(api, length, **values)
    assert response.status_code == 201, response.text
    location: str = response.headers["location"]
    assert location.startswith("/v1/tus/tus_")
    return location


async def patch(api: httpx.AsyncClient, location: str, offset: int, data: bytes) -> httpx.Response:
    return await api.patch(location, content=data, headers={**OCTETS, "Upload-Offset": str(offset)})


async def offset_of(api: httpx.AsyncClient, location: str) -> int:
    response = await api.head(location, headers=TUS)
    assert response.status_code == 200
    return int(response.headers["upload-offset"])


def partials(storage: Path) -> list[Path]:
    folder = storage / "resumable"
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_a_file_sent_in_pieces_becomes_the_video_an_upload_makes(
    api: httpx.AsyncClient, clips: Clips, storage: Path, db: asyncpg.Pool
) -> None:
    data = clips.landscape.read_bytes()
    location = await created(
        api,
        len(data),
        filename="holiday.mp4",
        qualities="360p,144p",
        metadata='{"album": "summer"}',
        filetype="video/mp4",  # what tus-js-client and Uppy add: ignored
    )
    head = await api.head(location, headers=TUS)
    assert head.status_code == 200
    assert head.headers["tus-resumable"] == "1.0.0"
    assert head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == str(len(data))
    assert head.headers["cache-control"] == "no-store"
    assert "GMT" in head.headers["upload-expires"]
    assert head.headers["upload-metadata"].startswith("filename ")
    video_id = head.headers["vidq-video-id"]

    thirds = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    for start_at, end_at in itertools.pairwise(thirds):
        response = await patch(api, location, start_at, data[start_at:end_at])
        assert response.status_code == 204, response.text
        assert response.headers["upload-offset"] == str(end_at)
        assert response.headers["vidq-video-id"] == video_id
        assert await offset_of(api, location) == end_at

    video = (await api.get(f"/v1/videos/{video_id}")).json()
    assert video["status"] == "queued"
    assert video["source"]["filename"] == "holiday.mp4"
    assert video["source"]["size_bytes"] == len(data)
    assert (video["source"]["width"], video["source"]["height"]) == (640, 360)
    assert sorted(r["quality"] for r in video["renditions"]) == ["144p", "360p"]
    assert video["metadata"] == {"album": "summer"}
    # the bytes moved to the video's source, whole; the partial file is gone
    assert (storage / source_key(video_id)).read_bytes() == data
    assert partials(storage) == []
    jobs = await db.fetch("SELECT routing_key FROM outbox WHERE exchange = 'vidq.transcode'")
    assert sorted(r["routing_key"] for r in jobs) == ["144p", "360p"]
    # a finished upload still answers where it stands, and takes nothing more
    assert await offset_of(api, location) == len(data)
    again = await patch(api, location, len(data), b"")
    assert again.status_code == 204
    assert_problem(await patch(api, location, 0, data[:10]), 409, "finished")
    assert (await api.delete(location, headers=TUS)).status_code == 204  # the upload is over
    assert (await api.get(f"/v1/videos/{video_id}")).status_code == 200  # its video is not


async def test_the_first_bytes_may_come_with_the_post(api: httpx.AsyncClient, clips: Clips) -> None:
    data = clips.tiny.read_bytes()
    headers = {**OCTETS, "Upload-Length": str(len(data)), "Upload-Metadata": metadata(filename="a.mp4")}
    response = await api.post("/v1/tus", headers=headers, content=data)
    assert response.status_code == 201, response.text
    assert response.headers["upload-offset"] == str(len(data))
    video = await api.get(f"/v1/videos/{response.headers['vidq-video-id']}")
    assert video.status_code == 200
    assert video.json()["source"]["filename"] == "a.mp4"


async def test_options_offers_the_protocol_and_its_size_limit(start: Start, alice: Caller) -> None:
    async with start(max_upload_bytes=5000) as app, connect(app, alice) as api:
        response = await api.options("/v1/tus")
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    assert set(response.headers["tus-extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
        "checksum",
    }
    assert response.headers["tus-max-size"] == "5000"
    assert "sha1" in response.headers["tus-checksum-algorithm"].split(",")


async def test_protocol_mistakes_are_problems_that_say_what_to_send(
    app: FastAPI, api: httpx.AsyncClient, clips: Clips
) -> None:
    data = clips.tiny.read_bytes()
    refused = await api.post("/v1/tus", headers={"Upload-Length": "10"})
    assert_problem(refused, 412, "Tus-Resumable: 1.0.0")
    assert refused.headers["tus-version"] == "1.0.0"
    assert refused.headers["tus-resumable"] == "1.0.0"
    assert_problem(await api.post("/v1/tus", headers=TUS), 422, "Upload-Length")
    assert_problem(await api.post("/v1/tus", headers={**TUS, "Upload-Length": "-1"}), 422, "Upload-Length")
    deferred = {**TUS, "Upload-Defer-Length": "1"}
    assert_problem(await api.post("/v1/tus", headers=deferred), 422, "Upload-Length")
    assert_problem(await create(api, 0), 422, "empty")
    location = await created(api, len(data))
    wrong_type = await api.patch(location, content=data, headers={**TUS, "Upload-Offset": "0"})
    assert_problem(wrong_type, 415, "application/offset+octet-stream")
    no_offset = await api.patch(location, content=data, headers=OCTETS)
    assert_problem(no_offset, 422, "Upload-Offset")
    ahead = await patch(api, location, 5, data[5:])
    assert_problem(ahead, 409, "byte 0")
    assert ahead.headers["upload-offset"] == "0"
    assert await offset_of(api, location) == 0
    # the key's refusal is a tus answer too
    async with connect(app) as anonymous:
        unauthorized = await anonymous.head(location, headers=TUS)
    assert unauthorized.status_code == 401
    assert unauthorized.headers["tus-resumable"] == "1.0.0"


@pytest.mark.parametrize(
    ("values", "mention"),
    [
        ({"qualities": "4320p"}, "4320p"),
        ({"callback_url": "ftp://example.com/hook"}, "callback_url"),
        ({"notify_email": "nobody"}, "notify_email"),
        ({"metadata": "[1, 2]"}, "metadata"),
        ({"metadata": '{"a": "' + "x" * 5000 + '"}'}, "metadata"),
    ],
)
async def test_the_videos_options_are_checked_before_any_byte_is_sent(
    api: httpx.AsyncClient, db: asyncpg.Pool, values: dict[str, str], mention: str
) -> None:
    assert_problem(await create(api, 1000, **values), 422, mention)
    assert await db.fetchval("SELECT count(*) FROM resumable_uploads") == 0


async def test_metadata_that_is_not_base64_pairs_is_refused(api: httpx.AsyncClient) -> None:
    for header in (
        "filename not-base64!",
        "filename YQ== extra",
        "filename YQ==,filename Yg==",
        "filename YQ==,",
    ):
        response = await api.post(
            "/v1/tus", headers={**TUS, "Upload-Length": "10", "Upload-Metadata": header}
        )
        assert_problem(response, 422, "Upload-Metadata")


async def test_sizes_over_the_limit_or_past_the_length_are_refused(
    start: Start, alice: Caller, storage: Path, clips: Clips
) -> None:
    data = clips.tiny.read_bytes()
    async with start(max_upload_bytes=len(data)) as app, connect(app, alice) as api:
        assert_problem(await create(api, len(data) + 1), 413, str(len(data)))
        location = await created(api, len(data))
        # a declared body past the length: refused before it is read, nothing changes
        assert_problem(await patch(api, location, 0, data + b"x"), 413, "length")
        assert await offset_of(api, location) == 0

        async def longer() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse early
            yield data
            yield b"more than was announced"

        response = await api.patch(location, content=longer(), headers={**OCTETS, "Upload-Offset": "0"})
        assert_problem(response, 413, "more bytes")
        assert (await api.head(location, headers=TUS)).status_code == 410
        assert partials(storage) == []


async def test_a_whole_file_that_is_no_video_ends_the_upload_and_leaves_nothing(
    api: httpx.AsyncClient, db: asyncpg.Pool, storage: Path
) -> None:
    data = b"this is not a video at all\n" * 100
    location = await created(api, len(data))
    assert (await patch(api, location, 0, data[:1000])).status_code == 204
    assert_problem(await patch(api, location, 1000, data[1000:]), 422, "not a video")
    gone = await api.patch(location, content=b"", headers={**OCTETS, "Upload-Offset": str(len(data))})
    assert_problem(gone, 410, "not a video")
    assert (await api.head(location, headers=TUS)).status_code == 410
    await assert_nothing_left(db, storage)
    assert partials(storage) == []


async def test_bytes_a_dead_request_wrote_past_the_recorded_offset_are_replaced(
    api: httpx.AsyncClient, clips: Clips, storage: Path
) -> None:
    data = clips.landscape.read_bytes()
    location = await created(api, len(data))
    assert (await patch(api, location, 0, data[:50_000])).status_code == 204
    # a gateway that died mid-PATCH: bytes on disk that were never recorded (nor acknowledged)
    [partial] = partials(storage)
    with partial.open("ab") as out:
        out.write(b"\x00garbage" * 1000)
    assert await offset_of(api, location) == 50_000
    assert (await patch(api, location, 50_000, data[50_000:50_100])).status_code == 204
    assert partial.read_bytes() == data[:50_100]
    response = await patch(api, location, 50_100, data[50_100:])
    assert response.status_code == 204, response.text
    video_id = response.headers["vidq-video-id"]
    assert (storage / source_key(video_id)).read_bytes() == data


async def test_one_request_writes_at_a_time_and_a_stalled_one_is_taken_over(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = clips.tiny.read_bytes()
    location = await created(api, len(data))
    upload_id = location.rsplit("/", 1)[-1]
    async with db.acquire() as conn:  # another request holds it, as if it were streaming now
        assert await repo.take_resumable_upload(conn, upload_id, 0, "other", 30.0) is not None
    monkeypatch.setattr(resumable, "WAIT_FOR_WRITER_S", 0.5)
    assert_problem(await patch(api, location, 0, data), 423, "another request")
    monkeypatch.undo()
    # a PATCH waits for the holder: a connection that died unclosed stops renewing its lease
    waiting = asyncio.create_task(patch(api, location, 0, data))
    await asyncio.sleep(1.0)
    assert not waiting.done()
    await db.execute("UPDATE resumable_uploads SET writer_until = now() - interval '1 second'")
    assert (await asyncio.wait_for(waiting, 10)).status_code == 204
    async with db.acquire() as conn:  # and the stalled request can record nothing any more
        assert not await repo.release_resumable_upload(conn, upload_id, "other", 10)
        assert not await repo.renew_resumable_upload(conn, upload_id, "other", 30.0)


async def test_a_failure_to_record_the_video_keeps_every_byte_but_the_last(
    api: httpx.AsyncClient, clips: Clips, storage: Path, db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = clips.landscape.read_bytes()
    location = await created(api, len(data))
    record_upload = videos.record_upload

    async def database_gone(*args: Any, **kwargs: Any) -> Any:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")

    monkeypatch.setattr(videos, "record_upload", database_gone)
    assert_problem(await patch(api, location, 0, data), 503)
    assert await db.fetchval("SELECT count(*) FROM videos") == 0
    assert await offset_of(api, location) == len(data) - 1
    monkeypatch.setattr(videos, "record_upload", record_upload)
    response = await patch(api, location, len(data) - 1, data[-1:])
    assert response.status_code == 204, response.text
    assert (storage / source_key(response.headers["vidq-video-id"])).read_bytes() == data


async def test_another_clients_upload_is_404_and_termination_removes_the_bytes(
    app: FastAPI, api: httpx.AsyncClient, bob: Caller, clips: Clips, storage: Path
) -> None:
    data = clips.tiny.read_bytes()
    location = await created(api, len(data))
    assert (await patch(api, location, 0, data[:100])).status_code == 204
    async with connect(app, bob) as other:
        assert (await other.head(location, headers=TUS)).status_code == 404
        assert_problem(await patch(other, location, 100, data[100:]), 404)
        assert_problem(await other.delete(location, headers=TUS), 404)
    assert partials(storage) != []
    assert (await api.delete(location, headers=TUS)).status_code == 204
    assert partials(storage) == []
    assert_problem(await patch(api, location, 100, data[100:]), 410, "terminated")
    assert (await api.delete(location, headers=TUS)).status_code == 204  # DELETE again: the same


async def test_open_uploads_per_client_are_capped(start: Start, alice: Caller) -> None:
    async with start(max_open_resumable_uploads=2) as app, connect(app, alice) as api:
        first = await created(api, 1000)
        await created(api, 1000)
        assert_problem(await create(api, 1000), 429, "2 resumable uploads")  # no use retrying it
        assert (await api.delete(first, headers=TUS)).status_code == 204
        await created(api, 1000)


async def test_a_page_reloaded_at_the_cap_starts_its_upload_again_in_the_place_of_its_last(
    start: Start, alice: Caller
) -> None:
    creation = {**TUS, "Upload-Length": "1000"}
    async with start(max_open_resumable_uploads=2) as app, connect(app, alice) as api:
        await created(api, 1000)
        upload = await direct_upload(api)
        async with connect(app) as page:
            assert (await page.post(upload["url"], headers=creation)).status_code == 201  # at the cap now
            again = await page.post(upload["url"], headers=creation)  # a reload: it replaces the first
            assert again.status_code == 201, again.text
        assert_problem(await create(api, 1000), 429, "2 resumable uploads")


async def test_an_unfinished_upload_expires_and_its_bytes_go(
    app: FastAPI, api: httpx.AsyncClient, clips: Clips, storage: Path, db: asyncpg.Pool
) -> None:
    data = clips.tiny.read_bytes()
    location = await created(api, len(data))
    kept = await created(api, len(data))
    assert (await patch(api, location, 0, data[:100])).status_code == 204
    assert (await patch(api, kept, 0, data[:100])).status_code == 204
    await db.execute(
        "UPDATE resumable_uploads SET expires_at = now() - interval '1 second' WHERE id = $1",
        location.rsplit("/", 1)[-1],
    )
    assert_problem(await patch(api, location, 100, data[100:]), 410, "expired")
    # a partial file no receiving upload owns (its end crashed before the file went), old
    orphan = storage / "resumable" / "tus_000000000000000000000000"
    orphan.write_bytes(b"left behind")
    long_ago = time.time() - 2 * 3600
    for path in (orphan, *partials(storage)):
        os.utime(path, (long_ago, long_ago))
    async with db.acquire() as conn:
        assert await expire_resumable_uploads(conn, app.state.deps) == 2
    # the receiving upload keeps its file, however long its client has been away
    assert [p.name for p in partials(storage)] == [kept.rsplit("/", 1)[-1]]
    assert (await api.head(location, headers=TUS)).status_code == 410


async def test_bytes_that_arrive_push_the_expiry_back_so_only_a_quiet_upload_expires(
    app: FastAPI, api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool
) -> None:
    data = clips.tiny.read_bytes()
    location = await created(api, len(data))
    upload_id = location.rsplit("/", 1)[-1]
    # most of its day has gone by while a slow link sent it
    await db.execute(
        "UPDATE resumable_uploads SET expires_at = now() + interval '1 minute' WHERE id = $1", upload_id
    )
    sent = await patch(api, location, 0, data[:100])
    assert sent.status_code == 204
    pushed = parsedate_to_datetime(sent.headers["upload-expires"])
    day = app.state.deps.settings.resumable_expiry_s
    assert pushed > datetime.now(UTC) + timedelta(seconds=day - 60)  # a day from its last bytes
    head = await api.head(location, headers=TUS)
    assert parsedate_to_datetime(head.headers["upload-expires"]) == pushed
    # an empty PATCH brings nothing: the expiry stays
    await db.execute(
        "UPDATE resumable_uploads SET expires_at = now() + interval '1 minute' WHERE id = $1", upload_id
    )
    idle = await patch(api, location, 100, b"")
    assert parsedate_to_datetime(idle.headers["upload-expires"]) < datetime.now(UTC) + timedelta(minutes=2)
    # the last byte makes the video: the upload has no expiry any more
    done = await patch(api, location, 100, data[100:])
    assert done.status_code == 204, done.text
    assert "upload-expires" not in done.headers


async def test_a_long_patch_pushes_the_expiry_back_while_it_streams_and_the_sweep_leaves_it(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resumable, "RENEW_EVERY_S", 0.1)
    data = clips.tiny.read_bytes()
    location = await created(api, len(data))
    upload_id = location.rsplit("/", 1)[-1]
    await db.execute(
        "UPDATE resumable_uploads SET expires_at = now() + interval '2 seconds' WHERE id = $1", upload_id
    )

    async def slowly() -> AsyncIterator[bytes]:  # one PATCH for the whole file, as tus-js-client sends
        for at in range(0, 600, 100):
            yield data[at : at + 100]
            await asyncio.sleep(0.5)

    sending = asyncio.create_task(
        api.patch(location, content=slowly(), headers={**OCTETS, "Upload-Offset": "0"})
    )
    await asyncio.sleep(2.5)  # past the expiry it started with, in the middle of its body
    assert not sending.done()
    expires = await db.fetchval("SELECT expires_at FROM resumable_uploads WHERE id = $1", upload_id)
    assert expires > datetime.now(UTC) + timedelta(hours=23)
    sent = await sending
    assert sent.status_code == 204, sent.text
    assert await offset_of(api, location) == 600

    # the sweep leaves an upload while a request holds it, even past its expiry
    async with db.acquire() as conn:
        assert await repo.take_resumable_upload(conn, upload_id, 600, "other", 30.0) is not None
    await db.execute(
        "UPDATE resumable_uploads SET expires_at = now() - interval '1 second' WHERE id = $1", upload_id
    )
    async with db.acquire() as conn:
        assert await repo.expire_resumable_uploads(conn) == []
    await db.execute(
        "UPDATE resumable_uploads SET writer_until = now() - interval '1 second' WHERE id = $1", upload_id
    )
    async with db.acquire() as conn:
        assert await repo.expire_resumable_uploads(conn) == [upload_id]


async def test_a_patch_begun_just_before_the_expiry_is_not_cut_off_by_it(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resumable, "RENEW_EVERY_S", 1.0)  # its first renewal comes after the expiry
    data = clips.tiny.read_bytes()
    location = await created(api, len(data))
    upload_id = location.rsplit("/", 1)[-1]
    await db.execute(
        "UPDATE resumable_uploads SET expires_at = now() + interval '0.5 seconds' WHERE id = $1", upload_id
    )

    async def slowly() -> AsyncIterator[bytes]:
        for at in range(0, len(data), len(data) // 4 + 1):
            yield data[at : at + len(data) // 4 + 1]
            await asyncio.sleep(0.7)

    sent = await api.patch(location, content=slowly(), headers={**OCTETS, "Upload-Offset": "0"})
    assert sent.status_code == 204, sent.text  # the whole file: a video, not a 410
    video_id = sent.headers["vidq-video-id"]
    assert (await api.get(f"/v1/videos/{video_id}")).json()["source"]["size_bytes"] == len(data)


async def test_an_upload_ended_while_its_last_patch_is_probed_answers_410_not_not_a_video(
    api: httpx.AsyncClient, clips: Clips, monkeypatch: pytest.MonkeyPatch, db: asyncpg.Pool, storage: Path
) -> None:
    data = clips.tiny.read_bytes()
    location = await created(api, len(data))
    probing, deleted = asyncio.Event(), asyncio.Event()
    inspect = uploads.inspect

    async def held_probe(*args: Any, **kwargs: Any) -> Any:
        probing.set()
        await deleted.wait()  # the DELETE lands while the probe waits for its slot
        return await inspect(*args, **kwargs)

    monkeypatch.setattr(uploads, "inspect", held_probe)
    last = asyncio.create_task(patch(api, location, 0, data))
    await asyncio.wait_for(probing.wait(), 10)
    assert (await api.delete(location, headers=TUS)).status_code == 204
    deleted.set()
    assert_problem(await last, 410, "terminated")
    await assert_nothing_left(db, storage)


async def test_a_last_patch_that_waits_long_for_its_probe_keeps_the_upload_from_a_retry(
    api: httpx.AsyncClient, clips: Clips, monkeypatch: pytest.MonkeyPatch, db: asyncpg.Pool
) -> None:
    monkeypatch.setattr(resumable, "LEASE_S", 0.6)  # the probe waits for 2 s: three leases
    data = clips.tiny.read_bytes()
    location = await created(api, len(data))
    probing, go_on = asyncio.Event(), asyncio.Event()
    inspect = uploads.inspect

    async def slow_first_probe(*args: Any, **kwargs: Any) -> Any:
        if not probing.is_set():
            probing.set()
            await go_on.wait()
        return await inspect(*args, **kwargs)

    monkeypatch.setattr(uploads, "inspect", slow_first_probe)
    first = asyncio.create_task(patch(api, location, 0, data))
    await asyncio.wait_for(probing.wait(), 10)
    retried = asyncio.create_task(patch(api, location, 0, data))  # its client gave up and sent it again
    await asyncio.sleep(2.0)
    go_on.set()
    answers = [await first, await retried]
    assert answers[0].status_code == 204, answers[0].text
    assert_problem(answers[1], 409, "send from there")  # waited for the lease, then found it done
    assert await db.fetchval("SELECT count(*) FROM videos") == 1


async def test_a_body_that_does_not_match_its_checksum_is_not_kept(
    api: httpx.AsyncClient, clips: Clips, storage: Path
) -> None:
    data = clips.tiny.read_bytes()
    location = await created(api, len(data))

    def checksum(algorithm: str, body: bytes) -> dict[str, str]:
        digest = base64.b64encode(hashlib.new(algorithm, body).digest()).decode()
        return {**OCTETS, "Upload-Checksum": f"{algorithm} {digest}"}

    good = await api.patch(
        location, content=data[:100], headers={**checksum("sha1", data[:100]), "Upload-Offset": "0"}
    )
    assert good.status_code == 204, good.text
    damaged = data[100:200].replace(data[150:151], bytes([data[150] ^ 1]), 1)
    bad = await api.patch(
        location, content=damaged, headers={**checksum("sha256", data[100:200]), "Upload-Offset": "100"}
    )
    assert_problem(bad, 460, "Upload-Checksum")
    assert await offset_of(api, location) == 100
    unknown = {**OCTETS, "Upload-Offset": "100", "Upload-Checksum": "crc32 AAAAAA=="}
    assert_problem(await api.patch(location, content=data[100:], headers=unknown), 400, "crc32")
    rest = await api.patch(
        location, content=data[100:], headers={**checksum("md5", data[100:]), "Upload-Offset": "100"}
    )
    assert rest.status_code == 204, rest.text
    assert (storage / source_key(rest.headers["vidq-video-id"])).read_bytes() == data


# -- through a direct upload's URL: a page without the API key ----------------------------------------

ORIGIN = {"origin": "https://app.example.com"}


async def direct_upload(api: httpx.AsyncClient, **options: Any) -> dict[str, Any]:
    made = await api.post("/v1/uploads", json={"cors_origin": "https://app.example.com", **options})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def test_a_page_uploads_resumably_through_a_direct_upload_url_without_the_key(
    app: FastAPI, api: httpx.AsyncClient, clips: Clips, storage: Path
) -> None:
    upload = await direct_upload(api, qualities=["144p"], metadata={"from": "page"})
    data = clips.tiny.read_bytes()
    async with connect(app) as page:  # no key
        preflight = await page.options(
            upload["url"], headers={**ORIGIN, "access-control-request-headers": "tus-resumable,upload-length"}
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "Upload-Length" in preflight.headers["access-control-allow-headers"]
        creation = {
            **TUS,
            **ORIGIN,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(filename="p.mp4"),
        }
        refused = await page.post(
            upload["url"], headers={**creation, "Upload-Metadata": metadata(qualities="720p")}
        )
        assert_problem(refused, 422, "only the file")
        assert refused.headers["access-control-allow-origin"] == "https://app.example.com"
        made = await page.post(upload["url"], headers=creation)
        assert made.status_code == 201, made.text
        assert made.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "Location" in made.headers["access-control-expose-headers"]
        location = made.headers["location"]
        assert "/v1/tus/tus_" in location
        assert "signature=" in location  # the page's way in: no key
        item_preflight = await page.options(
            location, headers={**ORIGIN, "access-control-request-method": "PATCH"}
        )
        assert "PATCH" in item_preflight.headers["access-control-allow-methods"]
        first = await page.patch(
            location, content=data[:500], headers={**OCTETS, **ORIGIN, "Upload-Offset": "0"}
        )
        assert first.status_code == 204, first.text
        assert first.headers["access-control-allow-origin"] == "https://app.example.com"
        head = await page.head(location, headers={**TUS, **ORIGIN})
        assert head.headers["upload-offset"] == "500"
        wrong = await page.patch(
            location, content=data[:10], headers={**OCTETS, **ORIGIN, "Upload-Offset": "0"}
        )
        assert_problem(wrong, 409)
        assert wrong.headers["access-control-allow-origin"] == "https://app.example.com"  # readable
        altered = location.replace("signature=", "signature=x")
        assert_problem(
            await page.patch(altered, content=data[500:], headers={**OCTETS, "Upload-Offset": "500"}), 403
        )
        assert (await page.head(location.split("?")[0], headers=TUS)).status_code == 401  # no key, no link
        last = await page.patch(
            location, content=data[500:], headers={**OCTETS, **ORIGIN, "Upload-Offset": "500"}
        )
        assert last.status_code == 204, last.text
        video_id = last.headers["vidq-video-id"]
        # the URL is used up, by the video the resumable upload made
        again = await page.post(upload["url"], headers=creation)
        assert_problem(again, 409, "used up")
    video = (await api.get(f"/v1/videos/{video_id}")).json()  # alice's video
    assert video["metadata"] == {"from": "page"}
    assert video["source"]["filename"] == "p.mp4"
    assert [r["quality"] for r in video["renditions"]] == ["144p"]
    settled = (await api.get(f"/v1/uploads/{upload['id']}")).json()
    assert (settled["status"], settled["video_id"]) == ("asset_created", video_id)
    assert (storage / source_key(video_id)).read_bytes() == data


async def test_a_direct_upload_url_has_one_resumable_upload_at_a_time_and_ends_with_it(
    app: FastAPI, api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool, storage: Path
) -> None:
    data = clips.tiny.read_bytes()
    creation = {**TUS, "Upload-Length": str(len(data))}
    upload = await direct_upload(api)
    async with connect(app) as page:
        # a page that starts again (another tab, a reload) replaces its earlier upload: one
        # direct upload holds at most one partial file, however often its URL is posted to
        first = (await page.post(upload["url"], headers=creation)).headers["location"]
        assert (await patch(page, first, 0, data[:100])).status_code == 204
        second = (await page.post(upload["url"], headers=creation)).headers["location"]
        assert_problem(await patch(page, first, 100, data[100:]), 410, "terminated")
        assert len(partials(storage)) == 0
        assert (await patch(page, second, 0, data)).status_code == 204
        assert_problem(await page.post(upload["url"], headers=creation), 409, "used up")

        # cancelling the direct upload ends its resumable upload at once, bytes and all
        cancelled = await direct_upload(api)
        third = (await page.post(cancelled["url"], headers=creation)).headers["location"]
        assert (await patch(page, third, 0, data[:100])).status_code == 204
        assert (await api.delete(f"/v1/uploads/{cancelled['id']}")).status_code == 204
        assert (await page.head(third, headers=TUS)).status_code == 410
        assert_problem(await patch(page, third, 100, data[100:]), 410)
        assert partials(storage) == []

        # a file POSTed whole to the URL (another tab) ends the resumable one under way
        raced = await direct_upload(api)
        fourth = (await page.post(raced["url"], headers=creation)).headers["location"]
        assert (await patch(page, fourth, 0, data[:100])).status_code == 204
        whole = await page.post(raced["url"], files={"file": ("a.mp4", data, "video/mp4")})
        assert whole.status_code == 202, whole.text
        assert partials(storage) == []  # its bytes went with it
        assert_problem(await patch(page, fourth, 100, data[100:]), 410)
    assert await db.fetchval("SELECT count(*) FROM videos") == 2


async def test_a_resumable_upload_through_a_direct_upload_expires_with_its_url(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    upload = await direct_upload(api, timeout_s=60)
    async with connect(app) as page:
        made = await page.post(upload["url"], headers={**TUS, "Upload-Length": "1000", **ORIGIN})
        assert made.status_code == 201, made.text
        assert made.headers["tus-resumable"] == "1.0.0"  # the creation is a tus answer too
    expires = parsedate_to_datetime(made.headers["upload-expires"])
    assert expires <= datetime.fromisoformat(upload["expires_at"])  # not a day: the URL's minute
    # bytes do not push it back: its signed Location carries that expiry
    async with connect(app) as page:
        sent = await page.patch(
            made.headers["location"], content=b"x" * 10, headers={**OCTETS, "Upload-Offset": "0"}
        )
        assert sent.status_code == 204, sent.text
        assert parsedate_to_datetime(sent.headers["upload-expires"]) == expires


async def test_a_signed_urls_expiry_in_other_digits_is_a_problem_not_a_crash(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    upload = await direct_upload(api)
    tampered = upload["url"].split("?")[0] + "?expires=%C2%B2&signature=x"  # "²" is a digit to str.isdigit
    async with connect(app) as page:
        assert_problem(await page.post(tampered, headers={**TUS, "Upload-Length": "10"}), 422)
        location = (await page.post(upload["url"], headers={**TUS, "Upload-Length": "10"})).headers[
            "location"
        ]
        assert (
            await page.head(location.split("?")[0] + "?expires=%C2%B2&signature=x", headers=TUS)
        ).status_code == 422
        huge = {**TUS, "Upload-Length": "10", "Upload-Metadata": "filename " + "A" * 70_000}
        assert_problem(await api.post("/v1/tus", headers=huge), 422, "Upload-Metadata")
        preflight = await page.options(location, headers={**ORIGIN, "access-control-request-method": "PATCH"})
        assert "Upload-Concat" in preflight.headers["access-control-allow-headers"]  # readable refusal


async def test_tus_requests_that_vidq_does_not_serve_are_refused_not_misread(
    api: httpx.AsyncClient, clips: Clips, db: asyncpg.Pool
) -> None:
    concat = await api.post("/v1/tus", headers={**TUS, "Upload-Length": "1000", "Upload-Concat": "partial"})
    assert_problem(concat, 422, "concatenation")
    for number in ("1" * 5000, "9223372036854775808"):  # past any int64: a 4xx, never a 500
        assert_problem(await api.post("/v1/tus", headers={**TUS, "Upload-Length": number}), 422)
    data = clips.tiny.read_bytes()
    location = await created(api, len(data))
    assert_problem(await patch(api, location, 10**30, b"x"), 422, "Upload-Offset")
    # a wrong offset is a 409 even when its body would also run past the length
    assert_problem(await patch(api, location, len(data) - 2, b"xyz"), 409, "byte 0")
    # a bad checksum on a creation with bytes is refused before anything is made
    bad = {**OCTETS, "Upload-Length": str(len(data)), "Upload-Checksum": "sha1 AAAA"}
    assert_problem(await api.post("/v1/tus", headers=bad, content=data), 422, "sha1")
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()  # noqa: S324 - tus's algorithm
    mismatched = await api.post("/v1/tus", headers={**bad, "Upload-Checksum": f"sha1 {wrong}"}, content=data)
    assert_problem(mismatched, 460)
    assert "/v1/tus/" in mismatched.headers["location"]  # made: the client may send the file again
    assert await db.fetchval("SELECT count(*) FROM videos") == 0
    # a client behind a proxy that passes only POST overrides the method, as tus allows
    overridden = await api.post(
        location, content=data, headers={**OCTETS, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"}
    )
    assert overridden.status_code == 204, overridden.text
    assert overridden.headers["upload-offset"] == str(len(data))
