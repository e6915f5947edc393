"""Domain errors of the gateway and their translation to ``application/problem+json``.

Use-case modules raise these; only this module turns them (and FastAPI's own errors) into RFC
9457 problem documents with a human ``detail``. A client never sees a stack trace: anything
unexpected becomes a 500 problem, and the traceback goes to the log with the request id.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import TRANSIENT_DB_ERRORS
from shared.errors import TransientError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """An error with an HTTP status, a stable ``type`` slug and a human detail."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class BadRequest(ApiError):
    """A request the protocol itself refuses (where tus asks for 400)."""


class Unauthorized(ApiError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="vidq"'})


class NotFound(ApiError):
    status, slug, title = 404, "not-found", "Not found"


class Forbidden(ApiError):
    status, slug, title = 403, "forbidden", "Forbidden"


class Conflict(ApiError):
    status, slug, title = 409, "conflict", "Conflict"


class LimitReached(Conflict):
    """A quota of the client's is used up (e.g. its webhook endpoints)."""

    slug, title = "limit-reached", "Limit reached"


class RequestTimeout(ApiError):
    status, slug, title = 408, "request-timeout", "Request timeout"


class Gone(ApiError):
    status, slug, title = 410, "gone", "Gone"


class PreconditionFailed(ApiError):
    status, slug, title = 412, "precondition-failed", "Precondition failed"


class UnsupportedMediaType(ApiError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class Locked(ApiError):
    status, slug, title = 423, "locked", "Locked"


class TooManyOpen(ApiError):
    """A quota of things open at once is used up; unlike a 409, tus clients do not retry it."""

    status, slug, title = 429, "limit-reached", "Limit reached"


class ChecksumMismatch(ApiError):
    """tus's own status: a PATCH body that does not match its ``Upload-Checksum``."""

    status, slug, title = 460, "checksum-mismatch", "Checksum mismatch"


class UploadTooLarge(ApiError):
    status, slug, title = 413, "upload-too-large", "Upload too large"


class InvalidRequest(ApiError):
    status, slug, title = 422, "invalid-request", "Invalid request"


class NotAVideo(ApiError):
    status, slug, title = 422, "invalid-source", "Not a usable video"


class OverLimits(ApiError):
    status, slug, title = 422, "over-limits", "Video over the limits"


class Unavailable(ApiError):
    status, slug, title = 503, "unavailable", "Service unavailable"


def problem(
    status: int, slug: str, title: str, detail: str, *, instance: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:vidq:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


class ProblemJSONResponse(JSONResponse):
    """problem+json written as ASCII, so a detail quoting a lone surrogate still renders (no 500)."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return ProblemJSONResponse(
        problem(status, slug, title, detail, instance=request.url.path if request else None, **extra),
        status_code=status,
        headers=headers,
    )


#: FastAPI's detail when it cannot decode a body at all (``fastapi/routing.py``).
_FASTAPI_BODY_ERROR = "There was an error parsing the body"

_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid API key"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("upload-too-large", "Upload too large"),
    416: ("range-not-satisfiable", "Range not satisfiable"),
}


class RefuseNul:
    """ASGI middleware: a path or query string holding a NUL character is answered at once.

    No id or parameter of vidq's can hold one (PostgreSQL's text refuses it), so a path with one
    names nothing (404) and such a query is invalid (422), before any route or query runs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if "\x00" in scope["path"]:
                await self._refuse(send, scope, 404, "not-found", "Not found", "no such resource")
                return
            if b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
                detail = "a query parameter holds a NUL character, which no parameter may contain"
                await self._refuse(send, scope, 422, "invalid-request", "Invalid request", detail)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send: Send, scope: Scope, status: int, slug: str, title: str, detail: str) -> None:
        path = scope["path"].replace("\x00", "%00")
        body = json.dumps(problem(status, slug, title, detail, instance=path)).encode()
        headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path.

    Starlette answers 405 with the methods of the first route whose path matched, and FastAPI
    registers one route per method: ``Allow`` (which RFC 9110 requires on a 405) would name one.
    Each method is asked of the router as a request would be, included routers and all.
    """
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def _field_error(err: Any) -> dict[str, str]:
    """One validation error as ``{field, message}``; a body that is not JSON names the body."""
    if err.get("type") == "json_invalid":  # its loc is ("body", <character>), not a field
        where = err.get("loc", ())[-1]
        reason = (err.get("ctx") or {}).get("error", "")
        return {"field": "", "message": f"the body is not valid JSON: {reason} at character {where}"}
    return {
        "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
        "message": err.get("msg", ""),
    }


#: The largest body a JSON route reads (a webhook, an account change: a few hundred bytes).
JSON_BODY_LIMIT = 1024 * 1024


class LimitBodies:
    """ASGI middleware: a request body over :data:`JSON_BODY_LIMIT` is a 413 problem, read no further.

    Only the upload routes take large bodies (``POST /v1/videos``, a direct upload's
    ``POST /v1/uploads/{id}``, a resumable upload's ``POST /v1/tus`` and ``PATCH``), and they
    enforce ``VIDQ_MAX_UPLOAD_BYTES`` themselves while they stream to disk; every other route
    reads its body whole into memory, so without this a client could make the gateway hold any
    amount. Hand-written (a few lines): FastAPI's own
    ``max_body_size`` answers in plain text, not with vidq's problem document.
    """

    def __init__(self, app: ASGIApp, limit: int = JSON_BODY_LIMIT) -> None:
        self.app = app
        self.limit = limit

    @staticmethod
    def _streams_to_disk(scope: Scope) -> bool:
        """Whether the request is one of the upload routes, which stream and have their limit."""
        path = scope["path"].rstrip("/")
        head, _, upload_id = path.rpartition("/")
        if scope["method"] == "PATCH":
            return head == "/v1/tus" and bool(upload_id)
        if scope["method"] != "POST":
            return False
        return path in {"/v1/videos", "/v1/tus"} or (head == "/v1/uploads" and bool(upload_id))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._streams_to_disk(scope):
            await self.app(scope, receive, send)
            return
        detail = f"the request body is over {self.limit} bytes, the most this route reads"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            response = ProblemJSONResponse(
                problem(413, "body-too-large", "Body too large", detail, instance=scope["path"]),
                status_code=413,
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(detail)
            return message

        await self.app(scope, counted, send)


class BodyTooLarge(HTTPException):
    """A body over a route's limit (413 ``body-too-large``).

    Raised while FastAPI reads a body (it passes HTTP exceptions on, and no other), or by a route
    that reads its body itself (an import's JSON).
    """

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


def _internal_error(request: Request, exc: BaseException) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500,
        "internal",
        "Internal error",
        "vidq hit an unexpected error; it has been logged. Retrying may help.",
        request=request,
    )


class ContainErrors:
    """Answer an error no handler took with the 500 problem, and keep the connection.

    Starlette's outermost middleware answers it too, but raises it again afterwards, so the
    server logs a second traceback and closes the connection: the client's next request on it
    fails (a keep-alive pool sees a broken connection, not a 500). An error after the answer
    has started (a download cut short) still goes up: nothing else can be sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise
            await _internal_error(Request(scope), exc)(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the handlers that make every error a problem document."""
    app.add_middleware(LimitBodies)
    app.add_middleware(RefuseNul)
    app.add_middleware(ContainErrors)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem_response(
            exc.status, exc.slug, exc.title, exc.detail, request=request, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        if isinstance(exc, BodyTooLarge):
            slug, title = "body-too-large", "Body too large"
        headers = dict(exc.headers) if exc.headers else None
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == _FASTAPI_BODY_ERROR:  # noqa: PLR2004
            # a body FastAPI could not decode at all (JSON not in UTF-8, say): what any other
            # body that does not parse gets, a 422 naming it
            kind = request.headers.get("content-type", "").split(";")[0].strip() or "body"
            if isinstance(exc.__cause__, RecursionError):  # FastAPI raises it from the parser's error
                why = " (its arrays and objects nest too deep)"
            else:
                why = " (JSON text must be UTF-8)" if kind.endswith("json") else ""
            return problem_response(
                422,
                "invalid-request",
                "Invalid request",
                f"body: the request body does not parse as {kind}{why}",
                request=request,
            )
        if exc.status_code == 405:  # noqa: PLR2004
            allowed = allowed_methods(request)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
        return problem_response(exc.status_code, slug, title, detail, request=request, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_error(err) for err in exc.errors()]
        detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors) or "invalid request"
        return problem_response(
            422, "invalid-request", "Invalid request", detail, request=request, errors=errors
        )

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("answering 503: %r", exc)
        return problem_response(
            503,
            "unavailable",
            "Service unavailable",
            "a backing service (database or broker) is unavailable; retry in a few seconds",
            request=request,
            headers={"Retry-After": "5"},
        )

    unavailable: tuple[type[Exception], ...] = (TransientError, *TRANSIENT_DB_ERRORS)
    for transient in unavailable:
        app.add_exception_handler(transient, _unavailable)

    async def _nul(request: Request, _exc: Exception) -> JSONResponse:
        # the fields vidq checks itself say which one; this covers any other text it stores
        detail = "the request holds a NUL character (\\u0000), which vidq cannot store in any field"
        return problem_response(422, "invalid-request", "Invalid request", detail, request=request)

    for refused in (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError):
        app.add_exception_handler(refused, _nul)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # what escapes the middleware above (an error in an outer one): Starlette's last resort
        return _internal_error(request, exc)
