"""Direct uploads: a URL that takes one file from a browser, without the API key.

A client's server asks for one (``POST /v1/uploads``, with the new video's options) and hands
its ``url`` to a web page; the page POSTs the file there (multipart, field ``file``), as Mux's
direct uploads and Cloudflare Stream's direct creator uploads have it, and the key never
reaches the browser. The URL is signed (``gateway/links.py``), good until ``timeout_s`` and
for one video: the first upload that is recorded settles it (``asset_created``, with its
``video_id``), a later one is a 409. An upload that is refused (not a video, over a limit) or
broken off leaves the URL waiting, so the page can try again. ``cors_origin`` lets that page's
browser read the answer (``Access-Control-Allow-Origin``); the POST of a form is a CORS-simple
request, so it needs no preflight, and ``OPTIONS`` is answered for pages that send one anyway.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from gateway import repository as repo
from gateway import uploads
from gateway.api.resumable import REQUEST_HEADERS, cors_headers, create
from gateway.api.videos import _PROBLEMS, accept_upload, upload_body
from gateway.auth import ClientDep, check_signed_url
from gateway.deps import DepsDep
from gateway.errors import ApiError, Conflict, InvalidRequest, NotFound, problem_response
from gateway.links import UPLOAD, Links
from gateway.repository import Conn
from gateway.resumable import TUS_VERSION, partial_key
from gateway.schemas import DirectUpload, UploadCreate, UploadPage
from gateway.settings import GatewaySettings
from shared.db import map_asyncpg_errors
from shared.ids import new_id
from shared.resources import Video

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


def _fields(body: UploadCreate, settings: GatewaySettings) -> dict[str, str]:
    """The options as an upload's form would carry them, checked as the form's are."""
    fields = uploads.as_form(
        qualities=body.qualities,
        callback_url=body.callback_url,
        notify_email=body.notify_email,
        metadata=body.metadata,
    )
    uploads.parse_options(fields, settings)
    return fields


def _origin(value: str | None) -> str | None:
    """A browser's ``Origin`` as it sends it (scheme, lower-case host, port), or ``*``."""
    if value is None or value == "*":
        return value
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    default = {"http": 80, "https": 443}.get(parts.scheme)
    canonical = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port and port != default else "")
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or canonical != value:
        raise InvalidRequest(
            'cors_origin is an origin as a browser sends it ("https://app.example.com", lower case, '
            'no path, query or user) or "*"'
        )
    return value


def _public(row: asyncpg.Record, links: Links) -> DirectUpload:
    """The upload as the API shows it; its signed ``url`` while it waits."""
    fields: dict[str, str] = row["fields"]
    status = "timed_out" if row["status"] == "waiting" and row["expired"] else row["status"]
    expires: datetime = row["expires_at"]
    return DirectUpload(
        id=row["id"],
        status=status,
        url=links.upload(row["id"], int(expires.timestamp())) if status == "waiting" else None,
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        video_id=row["video_id"],
        cors_origin=row["cors_origin"],
        qualities=fields["qualities"].split(",") if fields.get("qualities") else None,
        callback_url=fields.get("callback_url"),
        notify_email=fields.get("notify_email"),
        metadata=json.loads(fields["metadata"]) if fields.get("metadata") else {},
    )


@router.post("", status_code=201, response_model=DirectUpload, responses=_PROBLEMS)
async def create_upload(
    body: UploadCreate, client: ClientDep, deps: DepsDep, response: Response
) -> DirectUpload:
    """A URL that takes one upload from a browser, without the API key, for this client.

    The new video's options are set here; the page POSTs only the file (multipart, ``file``).
    """
    fields = _fields(body, deps.settings)  # the same checks and errors as an upload's
    cors_origin = _origin(body.cors_origin)
    if not deps.links.keys:
        raise Conflict("signed URLs are not enabled on this gateway")
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            row = await repo.insert_direct_upload(
                conn,
                upload_id=new_id("upl"),
                client_id=client.id,
                fields=fields,
                cors_origin=cors_origin,
                timeout_s=body.timeout_s,
            )
    response.headers["Location"] = f"/v1/uploads/{row['id']}"
    return _public(row, deps.links)


@router.get("", response_model=UploadPage, responses=_PROBLEMS)
async def list_uploads(
    client: ClientDep, deps: DepsDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> UploadPage:
    """The client's latest direct uploads, newest first."""
    async with deps.pool.acquire() as conn:
        rows = await repo.direct_upload_rows(conn, client.id, limit)
    return UploadPage(data=[_public(r, deps.links) for r in rows])


@router.get("/{upload_id}", response_model=DirectUpload, responses=_PROBLEMS)
async def read_upload(upload_id: str, client: ClientDep, deps: DepsDep) -> DirectUpload:
    """One direct upload: whether it was used, and the video it made."""
    async with deps.pool.acquire() as conn:
        row = await repo.direct_upload_row(conn, upload_id, client.id)
    if row is None:
        raise NotFound(f"no upload {upload_id!r}")
    return _public(row, deps.links)


@router.delete("/{upload_id}", status_code=204, response_class=Response, responses=_PROBLEMS)
async def cancel_upload(upload_id: str, client: ClientDep, deps: DepsDep) -> Response:
    """Refuse the URL from now on (a waiting upload only: a made video is deleted as a video)."""
    async with deps.pool.acquire() as conn:
        row = await repo.direct_upload_row(conn, upload_id, client.id)
        if row is None:
            raise NotFound(f"no upload {upload_id!r}")
        ended = await repo.end_resumable_uploads_of(conn, upload_id)  # its URL's tus uploads go too
        if not await repo.settle_direct_upload(conn, upload_id, "cancelled"):
            fresh = await repo.direct_upload_row(conn, upload_id, client.id)
            assert fresh is not None  # noqa: S101 - uploads are never deleted
            if fresh["status"] != "cancelled":
                raise Conflict(_settled(fresh))
    for resumable_id in ended:
        await deps.storage.delete(partial_key(resumable_id))
    return Response(status_code=204)


def _settled(row: asyncpg.Record) -> str:
    if row["status"] == "asset_created":
        return f"this upload URL is used up: it made video {row['video_id']}"
    if row["status"] == "cancelled":
        return "this upload was cancelled"
    return "this upload URL timed out; ask for a new one"


def _cors(request: Request, row: asyncpg.Record | None) -> dict[str, str]:
    """CORS for the upload's page, when this request comes from it."""
    return cors_headers(request, row["cors_origin"] if row is not None else None)


@router.options("/{upload_id}", include_in_schema=False)
async def preflight_upload(upload_id: str, request: Request, deps: DepsDep) -> Response:
    async with deps.pool.acquire() as conn:
        row = await repo.direct_upload_row(conn, upload_id)
    headers = _cors(request, row)
    if headers:
        headers |= {
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": REQUEST_HEADERS,  # a tus client's creation too
            "Access-Control-Max-Age": "600",
        }
    return Response(status_code=204, headers=headers)


@router.post(
    "/{upload_id}",
    status_code=202,
    response_model=Video,
    openapi_extra={**upload_body(), "security": []},  # the file alone; the URL is signed
    responses={
        **_PROBLEMS,
        403: {"content": {"application/problem+json": {}}, "description": "Link refused"},
    },
)
async def upload_to_url(
    upload_id: str,
    request: Request,
    deps: DepsDep,
    expires: Annotated[str, Query(max_length=20, description="The URL's expiry (Unix time).")] = "",
    signature: Annotated[str, Query(max_length=100, description="The URL's signature.")] = "",
) -> Response:
    """Upload the file to a direct upload's URL (no API key: the URL is signed).

    Answers 202 with the video, as ``POST /v1/videos`` does; the URL is then used up. A tus
    client (``Tus-Resumable``) makes a resumable upload here instead: ``201`` and a signed
    ``Location`` to send the file to in pieces (``/v1/tus``), which uses the URL up when it ends.
    """
    async with deps.pool.acquire() as conn:
        row = await repo.direct_upload_row(conn, upload_id)
    cors = _cors(request, row)
    if "tus-resumable" in request.headers:  # tus asks it of every answer to a tus request
        cors["Tus-Resumable"] = TUS_VERSION
    try:  # every refusal carries the page's CORS headers, so that it can show why
        expired = Conflict("this upload URL timed out; ask for a new one")
        check_signed_url(deps.links, upload_id, UPLOAD, expires, signature, expired=expired)
        if row is None:  # a valid signature for an upload that is gone: not ours to say more
            raise NotFound(f"no upload {upload_id!r}")
        if row["status"] != "waiting" or row["expired"]:
            raise Conflict(_settled(row))  # before the file is read, not after
        async with deps.pool.acquire() as conn:
            client = await repo.client_by_id(conn, row["client_id"])
        if client is None:
            raise NotFound(f"no upload {upload_id!r}")

        if "tus-resumable" in request.headers:  # a tus client: the file comes in pieces (/v1/tus)
            return await create(
                request, client, deps, fields=dict(row["fields"]), direct_upload=row, cors=cors
            )

        ended: list[str] = []

        async def settle(conn: Conn, video: Video) -> None:
            ended[:] = await repo.end_resumable_uploads_of(conn, upload_id)  # another tab's tus upload
            if not await repo.settle_direct_upload(conn, upload_id, "asset_created", video.id):
                fresh = await repo.direct_upload_row(conn, upload_id)
                assert fresh is not None  # noqa: S101 - uploads are never deleted
                raise Conflict(_settled(fresh))  # another upload to this URL got there first

        video, _ = await accept_upload(request, client, deps, fields=dict(row["fields"]), on_recorded=settle)
        for resumable_id in ended:
            await deps.storage.delete(partial_key(resumable_id))
    except ApiError as exc:
        return problem_response(
            exc.status, exc.slug, exc.title, exc.detail, request=request, headers={**exc.headers, **cors}
        )
    headers = {"Location": f"/v1/videos/{video.id}", **cors}
    return JSONResponse(video.model_dump(mode="json"), status_code=202, headers=headers)
