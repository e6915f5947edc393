"""``/v1/videos``: upload, read, list, stream events, download, delete, retry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse

from gateway import idempotency, imports, uploads, videos
from gateway import repository as repo
from gateway.api.media import MediaFile
from gateway.auth import ClientDep, ViewerDep
from gateway.deps import DepsDep, GatewayDeps, HubDep
from gateway.errors import PROBLEM_JSON, BodyTooLarge, Conflict, InvalidRequest, NotFound
from gateway.repository import Client, Conn
from gateway.schemas import VideoImport, VideoPage
from gateway.streams import event_stream, stream_over
from gateway.uploads import ReceivedUpload
from shared.db import map_asyncpg_errors
from shared.ffmpeg import ProbeResult
from shared.ids import new_id
from shared.ladder import PlannedRendition
from shared.resources import Status, Video
from shared.storage import rendition_key, source_key, thumbnail_key, video_prefix

#: The largest event sequence (PostgreSQL ``integer``).
MAX_SEQUENCE = 2**31 - 1

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/videos", tags=["videos"])


def upload_body(**fields: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI request body of an upload: multipart, a ``file`` and these text ``fields``."""
    file = {"type": "string", "format": "binary", "description": "The video."}
    schema = {"type": "object", "required": ["file"], "properties": {"file": file, **fields}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


_UPLOAD_BODY = upload_body(
    qualities={
        "type": "string",
        "example": "720p,360p",
        "description": "Comma list of rungs; default all that fit.",
    },
    callback_url={"type": "string", "format": "uri", "description": "Receives this video's events, signed."},
    notify_email={
        "type": "string",
        "format": "email",
        "description": "Gets an email on video.ready / video.failed.",
    },
    metadata={
        "type": "string",
        "description": "A JSON object, at most 4 KiB and 32 levels deep, echoed back.",
    },
)
# ``POST /v1/videos`` also takes JSON: an import from a URL (``gateway/imports.py``).
_UPLOAD_BODY["requestBody"]["content"]["application/json"] = {"schema": VideoImport.model_json_schema()}
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"content": {PROBLEM_JSON: {}}, "description": text}
    for code, text in {
        401: "Missing or invalid API key",
        404: "No such video for this client",
        409: "Conflict with the video's state",
        413: "Upload (or an import's file) over VIDQ_MAX_UPLOAD_BYTES; an import's JSON over 16 KiB",
        422: "Not a usable video, invalid fields, or an import's URL could not be downloaded",
        503: "Database or broker unavailable; retry later",
    }.items()
}


#: Runs in the transaction that records the video (a direct upload settles itself there).
OnRecorded = Callable[[Conn, Video], Awaitable[None]]


async def accept_upload(
    request: Request,
    client: Client,
    deps: GatewayDeps,
    *,
    fields: dict[str, str] | None = None,
    on_recorded: OnRecorded | None = None,
    idempotency_key: str | None = None,
) -> tuple[Video, ReceivedUpload]:
    """Stream, probe and record an upload for ``client``.

    ``fields``: the options set beforehand (a direct upload's), in place of the form's text
    fields, which are then refused. ``idempotency_key``: its answer is kept with the video.
    """
    settings = deps.settings
    video_id = new_id("vid")
    async with deps.storage.writer(source_key(video_id)) as temp:
        received = await uploads.receive(request, temp, settings, digest=bool(idempotency_key))
        if fields is not None and received.fields:
            raise InvalidRequest(
                f"this upload URL takes only the file: its options were set when it was made "
                f"(got {', '.join(sorted(received.fields))})"
            )
        options = uploads.parse_options(received.fields if fields is None else fields, settings)
        probe, planned = await uploads.inspect(temp, options, settings, deps.probes)
    accepted = accepted_upload(video_id, received.filename, received.size_bytes, probe, planned, options)
    if idempotency_key:
        remember = idempotency.remembering(client, idempotency_key, received.fingerprint())
        on_recorded = remember if on_recorded is None else _both(on_recorded, remember)
    return await record_video(accepted, client, deps, on_recorded), received


def _both(first: OnRecorded, then: OnRecorded) -> OnRecorded:
    async def both(conn: Conn, video: Video) -> None:
        await first(conn, video)
        await then(conn, video)

    return both


async def accept_import(
    body: VideoImport, client: Client, deps: GatewayDeps, idempotency_key: str | None = None
) -> Video:
    """Download, probe and record the video at ``body.url`` for ``client`` (as an upload)."""
    settings = deps.settings
    fields = uploads.as_form(
        qualities=body.qualities,
        callback_url=body.callback_url,
        notify_email=body.notify_email,
        metadata=body.metadata,
    )
    options = uploads.parse_options(fields, settings)  # refused before any download
    video_id = new_id("vid")
    with deps.imports.take(client.id):
        async with deps.storage.writer(source_key(video_id)) as temp:
            downloaded = await imports.download(str(body.url), temp, settings)
            probe, planned = await uploads.inspect(temp, options, settings, deps.probes)
    accepted = accepted_upload(video_id, downloaded.filename, downloaded.size_bytes, probe, planned, options)
    remember = None
    if idempotency_key:
        fingerprint = imports.fingerprint(body.model_dump(mode="json"))
        remember = idempotency.remembering(client, idempotency_key, fingerprint)
    return await record_video(accepted, client, deps, remember)


def accepted_upload(
    video_id: str,
    filename: str,
    size_bytes: int,
    probe: ProbeResult,
    planned: list[PlannedRendition],
    options: uploads.Options,
) -> videos.AcceptedUpload:
    """A stored, probed source file and the options it came with, ready to be recorded."""
    return videos.AcceptedUpload(
        video_id=video_id,
        filename=filename,
        size_bytes=size_bytes,
        probe=probe,
        plan=planned,
        metadata=options.metadata,
        callback_url=options.callback_url,
        notify_email=options.notify_email,
    )


async def record_video(
    accepted: videos.AcceptedUpload,
    client: Client,
    deps: GatewayDeps,
    on_recorded: OnRecorded | None = None,
    on_failure: Callable[[], Awaitable[None]] | None = None,
) -> Video:
    """Record the video and queue its work, in one transaction.

    On failure its file goes too (nothing left behind), unless ``on_failure`` says what becomes
    of it instead (a resumable upload keeps its bytes for the next attempt).
    """
    try:
        with map_asyncpg_errors():
            async with deps.pool.acquire() as conn, conn.transaction():
                video = await videos.record_upload(conn, client, accepted, links=deps.links)
                if on_recorded is not None:
                    await on_recorded(conn, video)
    except BaseException:
        if on_failure is not None:
            await on_failure()
        else:
            await deps.storage.delete_prefix(video_prefix(accepted.video_id))
        raise
    return video


async def _replay(
    request: Request, deps: GatewayDeps, earlier: idempotency.Replay, imported: VideoImport | None
) -> JSONResponse:
    """The first answer under this key, once the body shows it is the same request."""
    if imported is not None:
        earlier.check(imports.fingerprint(imported.model_dump(mode="json")))
    else:
        received = await uploads.receive(request, Path(os.devnull), deps.settings, digest=True)
        earlier.check(received.fingerprint())
    headers = {"Idempotent-Replayed": "true"}
    if earlier.video_id:
        headers["Location"] = f"/v1/videos/{earlier.video_id}"
    media = PROBLEM_JSON if earlier.status_code >= 400 else "application/json"  # noqa: PLR2004
    return JSONResponse(earlier.body, earlier.status_code, headers=headers, media_type=media)


_IMPORT_PROBLEMS: dict[int | str, dict[str, Any]] = {
    429: {
        "content": {PROBLEM_JSON: {}},
        "description": "An import while this client's are at VIDQ_MAX_IMPORTS_PER_CLIENT (Retry-After)",
    },
    503: {
        "content": {PROBLEM_JSON: {}},
        "description": "Database or broker unavailable, or an import while the gateway's are at "
        "VIDQ_MAX_IMPORTS (Retry-After); retry later",
    },
}


@router.post(
    "",
    status_code=202,
    response_model=Video,
    openapi_extra=_UPLOAD_BODY,
    responses={**_PROBLEMS, **_IMPORT_PROBLEMS},
)
async def create_video(
    request: Request,
    client: ClientDep,
    deps: DepsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Upload a video (multipart), or import one from a URL (JSON `{"url": …}`); answers 202.

    The answer carries the probe data and the planned renditions. An import downloads the file
    within the request, under the upload's limits; a URL that cannot be downloaded is a 422
    `download-failed`. With ``Idempotency-Key``, a retry of the same request gets the first
    answer back (``Idempotent-Replayed: true``); the same key with another request is a 422.
    """
    imported = await _import_body(request) if _is_json(request) else None
    if idempotency_key:
        with map_asyncpg_errors():
            async with deps.pool.acquire() as conn:
                earlier = await idempotency.claim(
                    conn, client, idempotency_key, deps.settings.idempotency_ttl_s
                )
        if earlier is not None:
            return await _replay(request, deps, earlier, imported)
    try:
        if imported is not None:
            video = await _unless_disconnected(
                request, accept_import(imported, client, deps, idempotency_key)
            )
        else:
            video, _ = await accept_upload(request, client, deps, idempotency_key=idempotency_key)
    except BaseException:
        if idempotency_key:  # a refused or failed request does not hold the key (a kept answer stays)
            await idempotency.forget(deps.pool, client, idempotency_key)
        raise
    body = video.model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/videos/{video.id}"})


async def _unless_disconnected(request: Request, work: Coroutine[Any, Any, Video]) -> Video:
    """Run an import while its client waits; a client that went away cancels the download.

    An upload stops when its client goes (the body stops); an import's client sends nothing
    more, so the connection is looked at every second. Cancelled, the download's temporary
    file is removed and nothing is recorded, as for an upload broken off.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if done:
                return task.result()
            if await request.is_disconnected():
                log.info("import canceled: the client went away")
                raise InvalidRequest("the client went away before the import finished")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def _import_body(request: Request) -> VideoImport:
    """The JSON body of an import, read up to :data:`imports.MAX_BODY_BYTES` and validated."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > imports.MAX_BODY_BYTES:
            raise BodyTooLarge(
                f"an import request is at most {imports.MAX_BODY_BYTES} bytes; send the video "
                "itself as multipart/form-data"
            )
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):  # nested past the parser's depth: so is pydantic's
        parsed = None  # the validation below says what is wrong with it
    if isinstance(parsed, dict) and "url" not in parsed:
        raise InvalidRequest(
            "send the video as multipart/form-data with the file in the 'file' field, or as JSON "
            'with the "url" to import it from'
        )
    try:
        return VideoImport.model_validate_json(bytes(raw))
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


@router.get("", response_model=VideoPage, responses=_PROBLEMS)
async def list_videos(
    client: ClientDep,
    deps: DepsDep,
    status: Status | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> VideoPage:
    """The client's videos, newest first; follow ``next_cursor`` for more."""
    async with deps.pool.acquire() as conn:
        items, next_cursor = await videos.list_videos(
            conn, client, status=status, cursor=cursor, limit=limit, links=deps.links
        )
    return VideoPage(data=items, next_cursor=next_cursor, has_more=next_cursor is not None)


@router.get("/{video_id}", response_model=Video, responses=_PROBLEMS)
async def read_video(video_id: str, client: ClientDep, deps: DepsDep) -> Video:
    """One video with its renditions, thumbnail and status (and each queued rendition's place)."""
    async with deps.pool.acquire() as conn:
        return await videos.get_video(conn, client, video_id, deps.links, places=True)


@router.get(
    "/{video_id}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}, **_PROBLEMS},
)
async def stream_video_events(
    video_id: str,
    client: ClientDep,
    deps: DepsDep,
    hub: HubDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQUENCE, description="Only events after this sequence.")
    ] = None,
) -> Response:
    """Server-sent events of this video as they happen, ending after a terminal event.

    A client that resumes after the last terminal event of a finished video gets `204`
    (nothing more will come; an EventSource then stops reconnecting).
    """
    async with deps.pool.acquire() as conn:
        await videos.get_video(conn, client, video_id, deps.links)
    start = resume_position(after, last_event_id)
    if start:  # a resumed stream; a first one (from 0) needs neither look below
        async with deps.pool.acquire() as conn:
            newest = await repo.last_event_sequence(conn, video_id)
        if start > newest:  # a position no stream of this video gave: it would wait for ever
            where = "?after=" if after is not None else "Last-Event-ID"
            raise InvalidRequest(
                f"{where} {start} is past this video's last event (sequence {newest}); "
                "resume from an id its stream gave, or from 0"
            )
        if await stream_over(deps.pool, video_id, start):
            # a finished video whose stream this client has seen to its end: 204 tells a
            # browser's EventSource to stop reconnecting (it would every 3 s, to an empty stream)
            return Response(status_code=204)
    return EventSourceResponse(
        event_stream(deps.pool, hub, video_id, after=start), ping=int(deps.settings.sse_keepalive_s)
    )


def resume_position(after: int | None, last_event_id: str | None) -> int:
    """Where a stream resumes: ``?after=``, else a ``Last-Event-ID`` of ASCII digits, else 0.

    Anything else in ``Last-Event-ID`` replays the whole history, as a browser's first
    connection does (``str.isdigit`` alone would pass "²", which ``int`` refuses).
    """
    if after is not None:
        return after
    resume = (last_event_id or "").strip()
    if not (resume.isascii() and resume.isdigit()):
        return 0
    if int(resume) > MAX_SEQUENCE:
        raise InvalidRequest(f"Last-Event-ID is past any event's sequence (at most {MAX_SEQUENCE})")
    return int(resume)


#: What a file download answers besides 200 (``gateway/api/media.py``).
_MEDIA: dict[int | str, dict[str, Any]] = {
    206: {"description": "Partial content (Range)"},
    304: {"description": "Not modified (If-None-Match, If-Modified-Since)"},
    416: {"content": {PROBLEM_JSON: {}}, "description": "Range not satisfiable"},
}


@router.get(
    "/{video_id}/renditions/{quality}",
    response_class=FileResponse,
    responses={
        200: {"content": {"video/mp4": {}}},
        **_MEDIA,
        **_PROBLEMS,
    },
)
@router.head("/{video_id}/renditions/{quality}", include_in_schema=False)
async def read_rendition(video_id: str, quality: str, viewer: ViewerDep, deps: DepsDep) -> FileResponse:
    """Download a rendition's MP4 (HTTP Range, conditional requests and HEAD supported).

    With the API key, or with the rendition's ``signed_url`` (no key: for a ``<video src>``).
    """
    async with deps.pool.acquire() as conn:
        video = await videos.get_video(conn, viewer.client, video_id, deps.links)
    rendition = next((r for r in video.renditions if r.quality == quality), None)
    if rendition is None:
        raise NotFound(f"video {video_id!r} has no {quality!r} rendition")
    if rendition.status != "ready":
        raise Conflict(f"rendition {quality} is {rendition.status}, not ready yet")
    return MediaFile(
        deps.storage.local_path(rendition_key(video_id, quality)),
        media_type="video/mp4",
        filename=f"{video_id}-{quality}.mp4",
        content_disposition_type="inline",
        headers={"Cache-Control": viewer.cache_control},
    )


@router.get(
    "/{video_id}/thumbnail",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}}},
        **_MEDIA,
        **_PROBLEMS,
    },
)
@router.head("/{video_id}/thumbnail", include_in_schema=False)
async def read_thumbnail(
    video_id: str,
    viewer: ViewerDep,
    deps: DepsDep,
    width: Annotated[int | None, Query(gt=0, le=10000)] = None,
) -> FileResponse:
    """The poster JPEG: the given width, the next larger one made, or else the largest.

    With the API key, or with one of the thumbnail's ``signed_urls`` (each for its width).
    """
    async with deps.pool.acquire() as conn:
        video = await videos.get_video(conn, viewer.client, video_id, deps.links)
    widths = sorted(video.thumbnail.widths)
    if video.thumbnail.status != "ready" or not widths:
        raise Conflict(f"the thumbnail is {video.thumbnail.status}, not ready yet")
    chosen = widths[-1] if width is None else next((w for w in widths if w >= width), widths[-1])
    return MediaFile(
        deps.storage.local_path(thumbnail_key(video_id, chosen)),
        media_type="image/jpeg",
        headers={"Cache-Control": viewer.cache_control},
    )


@router.delete("/{video_id}", status_code=204, response_class=Response, responses=_PROBLEMS)
async def delete_video(video_id: str, client: ClientDep, deps: DepsDep) -> Response:
    """Cancel work in flight and delete the video and its files."""
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            await videos.delete_video(conn, client, video_id, deps.links)
    await deps.storage.delete_prefix(video_prefix(video_id))
    return Response(status_code=204)


@router.post("/{video_id}/thumbnail/retry", status_code=202, response_model=Video, responses=_PROBLEMS)
async def retry_thumbnail(video_id: str, client: ClientDep, deps: DepsDep) -> Video:
    """Make a failed thumbnail again (the video is `failed` because of it, and can then be `ready`)."""
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            return await videos.retry_thumbnail(conn, client, video_id, links=deps.links)


@router.post(
    "/{video_id}/renditions/{quality}/retry", status_code=202, response_model=Video, responses=_PROBLEMS
)
async def retry_rendition(video_id: str, quality: str, client: ClientDep, deps: DepsDep) -> Video:
    """Run one failed rendition again."""
    with map_asyncpg_errors():
        async with deps.pool.acquire() as conn:
            return await videos.retry_rendition(conn, client, video_id, quality, links=deps.links)
