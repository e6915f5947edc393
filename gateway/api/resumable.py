"""``/v1/tus``: resumable uploads, tus 1.0.0 (the protocol's rules: ``gateway/resumable.py``).

Core, creation, creation-with-upload, termination, expiration and checksum. ``POST /v1/tus`` makes an
upload (``Upload-Length``; the video's options in ``Upload-Metadata``: ``filename``,
``qualities``, ``callback_url``, ``notify_email``, ``metadata``, each checked as an upload's
field is, before any byte is sent) and answers ``201`` with its ``Location`` and the id its
video will have (``Vidq-Video-Id``). ``PATCH`` appends bytes at ``Upload-Offset``; ``HEAD``
tells the offset to resume from; ``DELETE`` ends an unfinished one. The PATCH that brings the
last byte probes and records the video; a file that is no video is that PATCH's ``422``, and
the upload is gone (``410``) from then on.

A page without the key makes its upload at a direct upload's signed URL
(``gateway/api/uploads.py``) and is answered a signed ``Location`` here: the item routes take
either the key or that URL's ``expires`` and ``signature`` (:func:`access`), and answer the
direct upload's CORS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from gateway import repository as repo
from gateway import resumable, uploads
from gateway.api.videos import accepted_upload, record_video
from gateway.auth import BEARER, ClientDep, check_signed_url, current_client
from gateway.deps import DepsDep, GatewayDeps
from gateway.errors import (
    PROBLEM_JSON,
    ApiError,
    ChecksumMismatch,
    Conflict,
    Gone,
    InvalidRequest,
    Locked,
    NotAVideo,
    NotFound,
    RequestTimeout,
    TooManyOpen,
    UnsupportedMediaType,
    UploadTooLarge,
)
from gateway.links import RESUMABLE
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
        400: "An Upload-Checksum algorithm vidq does not offer",
        401: "Missing or invalid API key (or, by a signed URL, 403: the URL was altered)",
        404: "No such upload for this client",
        408: "The body sent nothing for 60 s; the bytes before were kept",
        409: "Upload-Offset is not where the upload is (HEAD tells), or a finished upload",
        410: "The upload failed, was terminated or expired",
        412: "Tus-Resumable missing or not 1.0.0",
        413: "Over VIDQ_MAX_UPLOAD_BYTES, or past the upload's length",
        415: "A PATCH body must be application/offset+octet-stream",
        422: "Invalid options or headers, or the finished file is not a usable video",
        423: "Another request is writing to this upload",
        429: "VIDQ_MAX_OPEN_RESUMABLE_UPLOADS unfinished uploads already",
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


def _expiry(answer: dict[str, str], expires: datetime | None) -> None:
    """The expiry after a PATCH: pushed back by the bytes it brought, none once the file is whole."""
    if expires is None:
        answer.pop("Upload-Expires", None)
    else:
        answer["Upload-Expires"] = resumable.http_date(expires)


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
    if status == "receiving" and row["direct_status"] not in (None, "waiting"):
        raise Gone(_direct_upload_settled(row["direct_status"]))
    return row


#: What a page's script may read of a tus answer (CORS), for tus-js-client and Uppy.
EXPOSED = "Location, Upload-Offset, Upload-Length, Upload-Expires, Tus-Resumable, Tus-Version, Vidq-Video-Id"
#: What a page's tus client sends (the preflight's answer).
REQUEST_HEADERS = (
    "Tus-Resumable, Upload-Length, Upload-Metadata, Upload-Offset, Upload-Checksum, Upload-Defer-Length, "
    "Upload-Concat, Content-Type, X-Requested-With, X-HTTP-Method-Override"
)
#: The longest ``Upload-Metadata``: the options' fields (8 KiB each at most) in base64, and a name.
MAX_METADATA_HEADER = 64 * 1024


def cors_headers(request: Request, cors_origin: str | None) -> dict[str, str]:
    """CORS for the page a direct upload names (``cors_origin``), when this request comes from it."""
    origin = request.headers.get("origin")
    if cors_origin is None or origin is None or cors_origin not in ("*", origin):
        return {}
    return {
        "Access-Control-Allow-Origin": cors_origin,
        "Access-Control-Expose-Headers": EXPOSED,
        "Vary": "Origin",
    }


@dataclass(frozen=True, slots=True)
class Access:
    """Who asks about an upload, and the upload as it stood: by API key, or by its signed URL."""

    client: Client
    row: asyncpg.Record | None
    cors: dict[str, str]


@contextlib.contextmanager
def answering(cors: dict[str, str]) -> Iterator[None]:
    """Problems raised in the block carry ``cors``, so that the page can read why."""
    try:
        yield
    except ApiError as exc:
        exc.headers.update(cors)
        raise


async def access(
    upload_id: str,
    request: Request,
    deps: DepsDep,
    _documented: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    expires: Annotated[str, Query(max_length=20, description="A signed URL's expiry (Unix time).")] = "",
    signature: Annotated[str, Query(max_length=100, description="A signed URL's signature.")] = "",
) -> Access:
    """The caller of an upload's route: the API key's client, or anyone holding its signed URL.

    A resumable upload made through a direct upload's URL (a page without the key) is reached
    through the signed ``Location`` its creation answered; it answers that page's CORS.
    """
    if not expires and not signature:
        client = await current_client(request, deps, None)
        with map_asyncpg_errors():
            async with deps.pool.acquire() as conn:
                return Access(client, await repo.resumable_upload_row(conn, upload_id, client.id), {})
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            row = await repo.resumable_upload_row(conn, upload_id)
            owner = await repo.client_by_id(conn, row["client_id"]) if row is not None else None
    cors = cors_headers(request, row["cors_origin"] if row is not None else None)
    with answering(cors):
        expired = Gone("this upload expired before it was finished; make a new one")
        check_signed_url(deps.links, upload_id, RESUMABLE, expires, signature, expired=expired)
        if row is None or owner is None:
            raise NotFound(f"no upload {upload_id!r}")
    return Access(owner, row, cors)


AccessDep = Annotated[Access, Depends(access)]


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


def _header(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "in": "header",
        "name": name,
        "required": required,
        "schema": {"type": "string"},
        "description": description,
    }


_CREATION = {
    "parameters": [
        _header("Tus-Resumable", "The protocol version: 1.0.0.", required=True),
        _header("Upload-Length", "The file's size in bytes.", required=True),
        _header(
            "Upload-Metadata",
            "Comma-separated `key base64(value)`: filename, qualities, callback_url, notify_email, "
            "metadata (a JSON object).",
        ),
    ],
    "requestBody": {
        "required": False,
        "content": {OFFSET_OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        "description": "The first bytes of the file (creation-with-upload), if any.",
    },
}


@router.post("", status_code=201, response_class=Response, responses=_PROBLEMS, openapi_extra=_CREATION)
async def create_resumable_upload(request: Request, client: ClientDep, deps: DepsDep) -> Response:
    """Make a resumable upload; with an `application/offset+octet-stream` body, its first bytes too."""
    return await create(request, client, deps, fields=None)


async def create(
    request: Request,
    client: Client,
    deps: GatewayDeps,
    *,
    fields: dict[str, str] | None,
    direct_upload: asyncpg.Record | None = None,
    cors: dict[str, str] | None = None,
) -> Response:
    """The creation of a tus upload (``POST``), by API key or through a direct upload's URL.

    ``fields``: the video's options set beforehand (a direct upload's), in place of those in
    ``Upload-Metadata``, which may then name only the file.
    """
    headers = request.headers
    resumable.check_version(headers.get("tus-resumable"))
    settings = deps.settings
    if "upload-defer-length" in headers:
        raise InvalidRequest("send Upload-Length: vidq checks a file's size before its first byte")
    if "upload-concat" in headers:  # tus-js-client's parallelUploads: the parts are no videos
        raise InvalidRequest("vidq does not offer tus's concatenation: send the file as one upload")
    length = resumable.parse_offset(headers.get("upload-length"), "Upload-Length")
    if length > settings.max_upload_bytes:
        raise UploadTooLarge(f"the file is over the {settings.max_upload_bytes}-byte limit")
    if length == 0:
        raise NotAVideo("the file is empty")
    upload_metadata = headers.get("upload-metadata", "")
    if len(upload_metadata) > MAX_METADATA_HEADER:  # it is stored, and echoed by every HEAD
        raise InvalidRequest(f"Upload-Metadata is over {MAX_METADATA_HEADER} characters")
    metadata = resumable.parse_metadata(upload_metadata)
    checksum = resumable.parse_checksum(headers.get("upload-checksum"))  # refused before the upload is made
    if fields is None:
        fields = uploads.as_form(
            qualities=metadata.get("qualities"),
            callback_url=metadata.get("callback_url"),
            notify_email=metadata.get("notify_email"),
            metadata=None,
        )
        if metadata.get("metadata"):
            fields["metadata"] = metadata["metadata"]
    elif given := sorted(set(metadata) & set(uploads.FIELDS)):
        raise InvalidRequest(
            "this upload URL takes only the file: its options were set when it was made "
            f"(got {', '.join(given)})"
        )
    uploads.parse_options(fields, settings)  # refused now, not after the last byte
    filename = uploads.display_name(metadata.get("filename") or metadata.get("name") or "", "upload")
    direct_id = direct_upload["id"] if direct_upload is not None else None
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"vidq.tus.{client.id}")
            # a new creation through a direct upload's URL (a reload) ends the earlier ones first:
            # it takes their place, and is not refused for the places they held
            replaced = await repo.end_resumable_uploads_of(conn, direct_id) if direct_id else []
            open_now = await repo.count_open_resumable_uploads(conn, client.id)
            if open_now >= settings.max_open_resumable_uploads:
                raise TooManyOpen(
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
                upload_metadata=upload_metadata,
                expiry_s=settings.resumable_expiry_s,
                direct_upload_id=direct_id,
            )
    for earlier in replaced:  # a direct upload's URL makes one video: the newest attempt is it
        await deps.storage.delete(resumable.partial_key(earlier))
    location = f"{resumable.PREFIX}/{row['id']}"
    if direct_id is not None:  # reached without the key, by its signed URL
        location = deps.links.resumable(row["id"], int(row["expires_at"].timestamp())) or location
    answer = {"Location": location, **_headers(row), **(cors or {})}
    if _offset_type(headers.get("content-type")):
        with answering({"Location": location}):  # the upload is made: the client may resume it
            received, expires = await _receive(request, row, 0, client, deps, checksum)
        answer["Upload-Offset"] = str(received)
        _expiry(answer, expires)
    return Response(status_code=201, headers=answer)


@router.head("/{upload_id}", response_class=Response, responses=_PROBLEMS)
async def resumable_upload_offset(
    upload_id: str, caller: AccessDep, tus_resumable: TusResumable = None
) -> Response:
    """Where the upload stands: `Upload-Offset` (resume from there) and `Upload-Length`."""
    with answering(caller.cors):
        resumable.check_version(tus_resumable)
        row = _usable(caller.row, upload_id)
    headers = {
        "Upload-Offset": str(row["received"]),
        "Upload-Length": str(row["length"]),
        **_headers(row),
        **caller.cors,
    }
    if row["upload_metadata"]:
        headers["Upload-Metadata"] = row["upload_metadata"]
    return Response(status_code=200, headers=headers)


@router.patch("/{upload_id}", status_code=204, response_class=Response, responses=_PROBLEMS)
async def append_to_resumable_upload(
    upload_id: str,
    request: Request,
    caller: AccessDep,
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
    with answering(caller.cors):
        resumable.check_version(tus_resumable)
        if not _offset_type(content_type):
            raise UnsupportedMediaType(f"send the bytes as {OFFSET_OCTET_STREAM}")
        offset = resumable.parse_offset(upload_offset, "Upload-Offset")
        checksum = resumable.parse_checksum(upload_checksum)
        row = _usable(caller.row, upload_id)
        answer = {**_headers(row), **caller.cors}
        if row["status"] == "complete":
            if offset != row["length"]:
                raise Conflict(f"this upload is finished (video {row['video_id']}); nothing more to send")
            return Response(status_code=204, headers={"Upload-Offset": str(row["length"]), **answer})
        if offset != row["received"]:  # tus: a wrong offset is a 409, whatever else is wrong
            raise _elsewhere(row["received"], offset)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and offset + int(declared) > row["length"]:
            raise UploadTooLarge(f"the body goes past the upload's length ({row['length']} bytes)")
        received, expires = await _receive(request, row, offset, caller.client, deps, checksum)
    _expiry(answer, expires)
    return Response(status_code=204, headers={"Upload-Offset": str(received), **answer})


@router.delete("/{upload_id}", status_code=204, response_class=Response, responses=_PROBLEMS)
async def terminate_resumable_upload(
    upload_id: str, caller: AccessDep, deps: DepsDep, tus_resumable: TusResumable = None
) -> Response:
    """End an unfinished upload and remove its bytes (a finished one's file is its video's, kept)."""
    with answering(caller.cors):
        resumable.check_version(tus_resumable)
        row = caller.row
        if row is None:
            raise NotFound(f"no upload {upload_id!r}")
        if row["status"] == "complete":  # the upload is over; DELETE /v1/videos/{id} removes the video
            return Response(status_code=204, headers=caller.cors)
        with map_asyncpg_errors():
            async with deps.pool.acquire() as conn:
                await repo.end_resumable_upload(conn, upload_id, "terminated")
    await deps.storage.delete(resumable.partial_key(upload_id))
    return Response(status_code=204, headers=caller.cors)


@router.options("/{upload_id}", include_in_schema=False)
async def preflight_resumable_upload(upload_id: str, request: Request, deps: DepsDep) -> Response:
    """A page's CORS preflight, for an upload made through a direct upload's URL."""
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            row = await repo.resumable_upload_row(conn, upload_id)
    headers = cors_headers(request, row["cors_origin"] if row is not None else None)
    if headers:
        headers |= {
            "Access-Control-Allow-Methods": "HEAD, PATCH, DELETE",
            "Access-Control-Allow-Headers": REQUEST_HEADERS,
            "Access-Control-Max-Age": "600",
        }
    return Response(status_code=204, headers=headers)


async def _receive(
    request: Request,
    row: asyncpg.Record,
    offset: int,
    client: Client,
    deps: GatewayDeps,
    checksum: tuple[str, bytes] | None = None,
) -> tuple[int, datetime | None]:
    """Take the upload's lease, write the body at ``offset``; finish the file if it is whole.

    Returns the offset now, and the upload's expiry (``None`` once it is whole: it has none).
    """
    upload_id, length = str(row["id"]), int(row["length"])
    writer = await _take(deps, upload_id, offset, client)

    async def release(received: int) -> datetime | None:
        with map_asyncpg_errors():
            async with deps.pool.acquire() as conn:
                return await repo.release_resumable_upload(
                    conn, upload_id, writer, received, extend_s=deps.settings.resumable_expiry_s
                )

    async def renew() -> bool:
        with map_asyncpg_errors():
            async with deps.pool.acquire() as conn:
                return await repo.renew_resumable_upload(
                    conn, upload_id, writer, resumable.LEASE_S, extend_s=deps.settings.resumable_expiry_s
                )

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
        raise await _why_lost(deps, upload_id, client)
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
            raise await _why_lost(deps, upload_id, client)
        async with _renewing(renew):
            await _finish(row, writer, client, deps)
        return length, None
    expires = await release(written.received)
    if expires is None:  # terminated, expired or taken over meanwhile
        raise await _why_lost(deps, upload_id, client)
    if written.stalled:
        raise RequestTimeout(
            f"the body sent nothing for {resumable.STALL_S:g} s; the {written.received} bytes before "
            "were kept: resume from there",
            headers={"Upload-Offset": str(written.received), "Upload-Expires": resumable.http_date(expires)},
        )
    return written.received, expires


@contextlib.asynccontextmanager
async def _renewing(renew: Callable[[], Awaitable[bool]]) -> AsyncIterator[None]:
    """The request's lease, renewed while the block runs.

    So no retry of the same last PATCH takes the upload over while this one probes and records
    the file (the probe may wait for a slot longer than a lease lasts).
    """

    async def keep() -> None:
        while True:
            await asyncio.sleep(resumable.LEASE_S / 3)
            with contextlib.suppress(Exception):
                if not await renew():  # recorded (or ended) meanwhile: nothing left to hold
                    return

    keeping = asyncio.create_task(keep())
    try:
        yield
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping


async def _take(deps: GatewayDeps, upload_id: str, offset: int, client: Client) -> str:
    """Hold the upload for this request (a new writer id), waiting a while if another holds it.

    The other is most often a connection of the same client that died without closing (the
    network changed): it renews its lease only when bytes come, so it lets go within the lease.
    """
    writer = secrets.token_hex(8)
    waited = 0.0
    while True:
        with map_asyncpg_errors():
            async with deps.pool.acquire() as conn:
                taken = await repo.take_resumable_upload(conn, upload_id, offset, writer, resumable.LEASE_S)
                fresh = None if taken else await repo.resumable_upload_row(conn, upload_id, client.id)
        if taken is not None:
            return writer
        fresh = _usable(fresh, upload_id)
        if fresh["status"] == "complete" or fresh["received"] != offset:
            raise _elsewhere(fresh["received"], offset)
        if waited >= resumable.WAIT_FOR_WRITER_S:
            raise Locked("another request is writing to this upload; retry once it ends")
        await asyncio.sleep(_WAIT_STEP_S)
        waited += _WAIT_STEP_S


#: How often a PATCH looks whether the request holding its upload has let go.
_WAIT_STEP_S = 0.25


def _elsewhere(received: int, offset: int) -> Conflict:
    return Conflict(
        f"the upload is at byte {received}, not {offset}: send from there (HEAD tells)",
        headers={"Upload-Offset": str(received)},
    )


async def _why_lost(deps: GatewayDeps, upload_id: str, client: Client) -> ApiError:
    """Why a request lost its upload: ended or expired meanwhile (410), or taken over (423).

    An upload ended meanwhile loses the bytes this request may have written since (a partial
    file made again after the end removed it).
    """
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            row = await repo.resumable_upload_row(conn, upload_id, client.id)
    try:
        _usable(row, upload_id)
    except ApiError as gone:
        await deps.storage.delete(resumable.partial_key(upload_id))
        return gone
    return Locked("another request took this upload over while this one stalled")


async def _fail(upload_id: str, writer: str | None, error: str, deps: GatewayDeps) -> None:
    """End the upload for good (it answers 410 with ``error`` from now on) and remove its bytes.

    ``writer``: only while that request holds it (``None``: whoever does).
    """
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
        await _unless_ended(upload_id, deps)  # a DELETE removed the file under the probe: its 410
        await _fail(upload_id, writer, exc.detail, deps)
        raise
    except Exception:
        await hold_back()
        raise

    direct = row["direct_upload_id"]

    async def settle(conn: Conn, video: Video) -> None:
        if not await repo.end_resumable_upload(conn, upload_id, "complete", writer=writer):
            fresh = await repo.resumable_upload_row(conn, upload_id)
            _usable(fresh, upload_id)  # ended or expired meanwhile: its 410
            raise Locked("another request took this upload over")
        if direct is not None and not await repo.settle_direct_upload(
            conn, direct, "asset_created", video.id
        ):
            settled = await repo.direct_upload_row(conn, direct)
            status, made = (settled["status"], settled["video_id"]) if settled else (None, None)
            raise Conflict(_direct_upload_settled(status, made))
        source.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, source)  # last, so that a failed commit can put it back

    async def put_back() -> None:
        if source.exists():
            partial.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, partial)
        await hold_back()

    accepted = accepted_upload(video_id, row["filename"], length, probe, planned, options)
    try:
        return await record_video(accepted, client, deps, on_recorded=settle, on_failure=put_back)
    except (Conflict, Gone) as exc:  # for good: the upload or its direct upload ended meanwhile
        await _fail(upload_id, None, exc.detail, deps)
        raise


async def _unless_ended(upload_id: str, deps: GatewayDeps) -> None:
    """Raise the 410 of an upload ended meanwhile (terminated, its direct upload settled)."""
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            fresh = await repo.resumable_upload_row(conn, upload_id)
    if fresh is None or fresh["status"] != "receiving" or fresh["direct_status"] not in (None, "waiting"):
        _usable(fresh, upload_id)


def _direct_upload_settled(status: str | None, video_id: str | None = None) -> str:
    if status == "asset_created":
        made = f": it made video {video_id}" if video_id else ""
        return f"the upload URL this upload was made through is used up{made}"
    if status == "waiting":
        return "the upload URL this upload was made through timed out"
    return "the upload URL this upload was made through was cancelled"
