"""``/v1/tus``: resumable uploads, tus 1.0.0 (the protocol's rules: ``gateway/resumable.py``).

Core, creation, creation-with-upload, termination, expiration and checksum. ``POST /v1/tus`` makes an
upload (``Upload-Length``; the video's options in ``Upload-Metadata``: ``filename``,
``qualities``, ``callback_url``, ``notify_email``, ``metadata``, each checked as an upload's
field is, before any byte is sent) and answers ``201`` with its ``Location`` and the id its
video will have (``Vidq-Video-Id``). ``PATCH`` appends bytes at ``Upload-Offset``; ``HEAD``
tells the offset to resume from; ``DELETE`` ends an unfinished one. The PATCH that brings the
last byte probes and records the video; a file that is no video is that PATCH's ``422``, and
the upload is gone (``410``) from then on.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Request, Response

from gateway import repository as repo
from gateway import resumable, uploads
from gateway.api.videos import accepted_upload, record_video
from gateway.auth import ClientDep
from gateway.deps import DepsDep, GatewayDeps
from gateway.errors import (
    PROBLEM_JSON,
    ApiError,
    ChecksumMismatch,
    Conflict,
    Gone,
    InvalidRequest,
    LimitReached,
    Locked,
    NotAVideo,
    NotFound,
    UnsupportedMediaType,
    UploadTooLarge,
)
from gateway.repository import Client, Conn
from gateway.resumable import OFFSET_OCTET_STREAM, TUS_VERSION
from shared.db import map_asyncpg_errors
from shared.ids import new_id
from shared.resources import Video
from shared.storage import source_key

router = APIRouter(prefix=resumable.PREFIX, tags=["resumable uploads"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"content": {PROBLEM_JSON: {}}, "description": text}
    for code, text in {
        401: "Missing or invalid API key",
        404: "No such upload for this client",
        409: "Upload-Offset is not where the upload is (HEAD tells), or a finished upload",
        410: "The upload failed, was terminated or expired",
        412: "Tus-Resumable missing or not 1.0.0",
        413: "Over VIDQ_MAX_UPLOAD_BYTES, or past the upload's length",
        415: "A PATCH body must be application/offset+octet-stream",
        422: "Invalid options or headers, or the finished file is not a usable video",
        423: "Another request is writing to this upload",
        460: "The body does not match its Upload-Checksum (tus's status); none of it was kept",
        503: "Database unavailable; retry later",
    }.items()
}

TusResumable = Annotated[str | None, Header(description="The protocol version: 1.0.0.")]
ContentType = Annotated[str | None, Header()]


def _offset_type(content_type: str | None) -> bool:
    return (content_type or "").partition(";")[0].strip().lower() == OFFSET_OCTET_STREAM


def _headers(row: asyncpg.Record) -> dict[str, str]:
    """What every answer about an upload says of it."""
    headers = {"Vidq-Video-Id": row["video_id"], "Cache-Control": "no-store"}
    if row["status"] == "receiving":
        headers["Upload-Expires"] = resumable.http_date(row["expires_at"])
    return headers


def _usable(row: asyncpg.Record | None, upload_id: str) -> asyncpg.Record:
    """The upload, if it can still be read or written; else its 404 or 410."""
    if row is None:
        raise NotFound(f"no upload {upload_id!r}")
    status = row["status"]
    if status == "failed":
        raise Gone(f"this upload failed: {row['error']}; make a new one")
    if status == "terminated":
        raise Gone("this upload was terminated")
    if status == "expired" or (status == "receiving" and row["expired"]):
        raise Gone("this upload expired before it was finished; make a new one")
    return row


async def _row(deps: GatewayDeps, client: Client, upload_id: str) -> asyncpg.Record | None:
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            return await repo.resumable_upload_row(conn, upload_id, client.id)


@router.options("", status_code=204, response_class=Response, responses=_PROBLEMS)
async def tus_options(client: ClientDep, deps: DepsDep) -> Response:  # noqa: ARG001 - the key is checked
    """What this tus endpoint supports (version, extensions, the largest file)."""
    headers = {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": resumable.EXTENSIONS,
        "Tus-Max-Size": str(deps.settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(resumable.CHECKSUM_ALGORITHMS),
    }
    return Response(status_code=204, headers=headers)


@router.post("", status_code=201, response_class=Response, responses=_PROBLEMS)
async def create_resumable_upload(
    request: Request,
    client: ClientDep,
    deps: DepsDep,
    tus_resumable: TusResumable = None,
    upload_length: Annotated[str | None, Header(description="The file's size in bytes.")] = None,
    upload_defer_length: Annotated[str | None, Header(include_in_schema=False)] = None,
    upload_metadata: Annotated[
        str | None,
        Header(
            description="Comma-separated `key base64(value)`: filename, qualities, callback_url, "
            "notify_email, metadata (a JSON object)."
        ),
    ] = None,
    content_type: ContentType = None,
) -> Response:
    """Make a resumable upload; with an `application/offset+octet-stream` body, its first bytes too."""
    resumable.check_version(tus_resumable)
    settings = deps.settings
    if upload_defer_length is not None:
        raise InvalidRequest("send Upload-Length: vidq checks a file's size before its first byte")
    length = resumable.parse_offset(upload_length, "Upload-Length")
    if length > settings.max_upload_bytes:
        raise UploadTooLarge(f"the file is over the {settings.max_upload_bytes}-byte limit")
    if length == 0:
        raise NotAVideo("the file is empty")
    metadata = resumable.parse_metadata(upload_metadata or "")
    fields = uploads.as_form(
        qualities=metadata.get("qualities"),
        callback_url=metadata.get("callback_url"),
        notify_email=metadata.get("notify_email"),
        metadata=None,
    )
    if metadata.get("metadata"):
        fields["metadata"] = metadata["metadata"]
    uploads.parse_options(fields, settings)  # refused now, not after the last byte
    filename = uploads.display_name(metadata.get("filename") or metadata.get("name") or "", "upload")
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"vidq.tus.{client.id}")
            open_now = await repo.count_open_resumable_uploads(conn, client.id)
            if open_now >= settings.max_open_resumable_uploads:
                raise LimitReached(
                    f"this client has {settings.max_open_resumable_uploads} resumable uploads open, "
                    "the most it may: finish or DELETE one first"
                )
            row = await repo.insert_resumable_upload(
                conn,
                upload_id=new_id("tus"),
                client_id=client.id,
                video_id=new_id("vid"),
                length=length,
                filename=filename,
                fields=fields,
                upload_metadata=upload_metadata or "",
                expiry_s=settings.resumable_expiry_s,
            )
    headers = {"Location": f"{resumable.PREFIX}/{row['id']}", **_headers(row)}
    if _offset_type(content_type):
        received = await _receive(request, row, 0, client, deps)
        headers["Upload-Offset"] = str(received)
    return Response(status_code=201, headers=headers)


@router.head("/{upload_id}", response_class=Response, responses=_PROBLEMS)
async def resumable_upload_offset(
    upload_id: str, client: ClientDep, deps: DepsDep, tus_resumable: TusResumable = None
) -> Response:
    """Where the upload stands: `Upload-Offset` (resume from there) and `Upload-Length`."""
    resumable.check_version(tus_resumable)
    row = _usable(await _row(deps, client, upload_id), upload_id)
    headers = {
        "Upload-Offset": str(row["received"]),
        "Upload-Length": str(row["length"]),
        **_headers(row),
    }
    if row["upload_metadata"]:
        headers["Upload-Metadata"] = row["upload_metadata"]
    return Response(status_code=200, headers=headers)


@router.patch("/{upload_id}", status_code=204, response_class=Response, responses=_PROBLEMS)
async def append_to_resumable_upload(
    upload_id: str,
    request: Request,
    client: ClientDep,
    deps: DepsDep,
    tus_resumable: TusResumable = None,
    upload_offset: Annotated[str | None, Header(description="Where these bytes start.")] = None,
    upload_checksum: Annotated[
        str | None,
        Header(description="`<algorithm> <base64 digest>` of this body (md5, sha1, sha256, sha512)."),
    ] = None,
    content_type: ContentType = None,
) -> Response:
    """Append the body at `Upload-Offset`; the last byte makes the video (as an upload would)."""
    resumable.check_version(tus_resumable)
    if not _offset_type(content_type):
        raise UnsupportedMediaType(f"send the bytes as {OFFSET_OCTET_STREAM}")
    offset = resumable.parse_offset(upload_offset, "Upload-Offset")
    checksum = resumable.parse_checksum(upload_checksum)
    row = _usable(await _row(deps, client, upload_id), upload_id)
    if row["status"] == "complete":
        if offset != row["length"]:
            raise Conflict(f"this upload is finished (video {row['video_id']}); nothing more to send")
        return Response(status_code=204, headers={"Upload-Offset": str(row["length"]), **_headers(row)})
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and offset + int(declared) > row["length"]:
        raise UploadTooLarge(f"the body goes past the upload's length ({row['length']} bytes)")
    received = await _receive(request, row, offset, client, deps, checksum)
    return Response(status_code=204, headers={"Upload-Offset": str(received), **_headers(row)})


@router.delete("/{upload_id}", status_code=204, response_class=Response, responses=_PROBLEMS)
async def terminate_resumable_upload(
    upload_id: str, client: ClientDep, deps: DepsDep, tus_resumable: TusResumable = None
) -> Response:
    """End an unfinished upload and remove its bytes (a finished one is its video's: a 409)."""
    resumable.check_version(tus_resumable)
    row = await _row(deps, client, upload_id)
    if row is None:
        raise NotFound(f"no upload {upload_id!r}")
    if row["status"] == "complete":
        raise Conflict(
            f"this upload is finished: it made video {row['video_id']} (DELETE /v1/videos/{row['video_id']})"
        )
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            await repo.end_resumable_upload(conn, upload_id, "terminated")
    await deps.storage.delete(resumable.partial_key(upload_id))
    return Response(status_code=204)


async def _receive(
    request: Request,
    row: asyncpg.Record,
    offset: int,
    client: Client,
    deps: GatewayDeps,
    checksum: tuple[str, bytes] | None = None,
) -> int:
    """Take the upload's lease, write the body at ``offset``; finish the file if it is whole."""
    upload_id, length = str(row["id"]), int(row["length"])
    writer = secrets.token_hex(8)
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            taken = await repo.take_resumable_upload(conn, upload_id, offset, writer, resumable.LEASE_S)
            fresh = None if taken else await repo.resumable_upload_row(conn, upload_id, client.id)
    if taken is None:
        fresh = _usable(fresh, upload_id)
        if fresh["status"] == "complete" or fresh["received"] != offset:
            raise Conflict(
                f"the upload is at byte {fresh['received']}, not {offset}: send from there (HEAD tells)",
                headers={"Upload-Offset": str(fresh["received"])},
            )
        raise Locked("another request is writing to this upload; retry once it ends")

    async def release(received: int) -> None:
        with map_asyncpg_errors():
            async with deps.pool.acquire() as conn:
                await repo.release_resumable_upload(conn, upload_id, writer, received)

    async def renew() -> bool:
        with map_asyncpg_errors():
            async with deps.pool.acquire() as conn:
                return await repo.renew_resumable_upload(conn, upload_id, writer, resumable.LEASE_S)

    path = deps.storage.local_path(resumable.partial_key(upload_id))
    try:
        written = await resumable.append(request, path, offset, length, renew, checksum)
    except resumable.PartialFileLost as exc:
        await release(exc.size)
        raise Conflict(
            f"the upload's stored bytes end at {exc.size}: send from there",
            headers={"Upload-Offset": str(exc.size)},
        ) from None
    except Exception:
        with contextlib.suppress(Exception):
            await release(offset)  # what this request wrote is not counted (the lease would expire)
        raise
    if written.lost:
        raise Locked("another request took this upload over while this one stalled")
    if written.corrupt:
        await release(offset)
        raise ChecksumMismatch(
            f"the body does not match its Upload-Checksum; none of it was kept: send it again from {offset}",
            headers={"Upload-Offset": str(offset)},
        )
    if written.too_long:  # a client that does not know its file's size: nothing it sent is sure
        detail = f"more bytes were sent than the upload's length ({length} bytes)"
        await _fail(upload_id, writer, detail, deps)
        raise UploadTooLarge(f"{detail}; the upload is ended: make a new one")
    if written.received == length:
        if not await renew():  # a fresh lease for the probe and the recording
            raise Locked("another request took this upload over while this one stalled")
        await _finish(row, writer, client, deps)
        return length
    await release(written.received)
    return written.received


async def _fail(upload_id: str, writer: str, error: str, deps: GatewayDeps) -> None:
    """End the upload for good (it answers 410 with ``error`` from now on) and remove its bytes."""
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            ended = await repo.end_resumable_upload(conn, upload_id, "failed", writer=writer, error=error)
    if ended:  # else another request holds the upload now (this one outlived its lease): its file
        await deps.storage.delete(resumable.partial_key(upload_id))


async def _finish(row: asyncpg.Record, writer: str, client: Client, deps: GatewayDeps) -> Video:
    """The whole file is in: probe it and record the video, as an upload is recorded."""
    upload_id, video_id, length = row["id"], row["video_id"], row["length"]
    partial = deps.storage.local_path(resumable.partial_key(upload_id))
    source = deps.storage.local_path(source_key(video_id))

    async def hold_back() -> None:
        # every byte but the last stays: the client's retry sends that one and finishes again
        with contextlib.suppress(Exception), map_asyncpg_errors():
            async with deps.pool.acquire() as conn:
                await repo.release_resumable_upload(conn, upload_id, writer, length - 1)

    try:
        options = uploads.parse_options(dict(row["fields"]), deps.settings)
        probe, planned = await uploads.inspect(partial, options, deps.settings, deps.probes)
    except ApiError as exc:
        if exc.status >= 500:  # noqa: PLR2004
            await hold_back()
            raise
        await _fail(upload_id, writer, exc.detail, deps)
        raise
    except Exception:
        await hold_back()
        raise

    async def settle(conn: Conn, video: Video) -> None:  # noqa: ARG001 - the OnRecorded signature
        if not await repo.end_resumable_upload(conn, upload_id, "complete", writer=writer):
            raise Locked("another request took this upload over")
        source.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, source)  # last, so that a failed commit can put it back

    async def put_back() -> None:
        if source.exists():
            partial.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, partial)
        await hold_back()

    accepted = accepted_upload(video_id, row["filename"], length, probe, planned, options)
    return await record_video(accepted, client, deps, on_recorded=settle, on_failure=put_back)
