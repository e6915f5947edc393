"""A small typed client of the vidq REST API, on httpx, for the command line.

Every method returns the API's JSON as it came (``--json`` prints exactly that) or raises a
:mod:`vidq.errors` exception: an error answer (``application/problem+json``) becomes one
``ApiError`` with its status and ``detail``; a network failure becomes ``Unreachable``. The
transport is injectable, so unit tests run against ``httpx.MockTransport``.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import IO, Any

import httpx

from vidq import __version__, sse
from vidq.errors import ApiError, ExitCode, Unreachable, UsageProblem, VidqError

Json = dict[str, Any]

#: After one of these a video's event stream ends (``shared.events.TERMINAL_EVENT_TYPES``; a
#: unit test keeps the two equal without making the CLI import the event models).
TERMINAL_EVENTS = frozenset({"video.ready", "video.failed", "video.canceled", "video.deleted"})
TERMINAL_STATUSES = frozenset({"ready", "failed", "canceled"})

_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: The gateway probes an upload before it answers; a long file takes a while.
_UPLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=300.0)
#: An import answers when the gateway has downloaded and checked the file: up to its
#: VIDQ_IMPORT_TIMEOUT_S (an hour by default) with nothing sent meanwhile.
_IMPORT_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=3700.0)
#: Times an import refused for want of a slot (an answer with ``Retry-After``) is asked again.
_IMPORT_WAITS = 30
#: A resumable upload's PATCH: a broken connection costs at most this much sent again.
RESUMABLE_CHUNK = 8 * 1024 * 1024
_PIECE = 256 * 1024
_TUS = {"tus-resumable": "1.0.0"}
#: The gateway pings an idle stream every 15 s; four missed pings mean the connection is gone.
_STREAM_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=60.0)


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("] ", 1)[1] if text.startswith("[Errno") and "] " in text else text


@contextmanager
def _translated(url: str) -> Iterator[None]:
    """Translate httpx's exceptions into the CLI's, at the one boundary where they arise."""
    try:
        yield
    except httpx.UnsupportedProtocol as exc:
        raise UsageProblem(f"not an http(s) URL: {url!r} (set --url or VIDQ_URL)") from exc
    except httpx.TimeoutException as exc:
        raise Unreachable(f"unavailable: {url} did not answer in time") from exc
    except httpx.ConnectError as exc:
        raise Unreachable(f"unavailable: cannot connect to {url} ({_reason(exc)})") from exc
    except httpx.TransportError as exc:
        raise Unreachable(f"unavailable: the connection to {url} broke ({_reason(exc)})") from exc


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the ``ApiError`` of an error answer (a problem document, or anything else)."""
    if response.is_success:
        return
    response.read()
    title, detail = response.reason_phrase, ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        title = str(body.get("title") or title)
        detail = str(body.get("detail") or "")
    raise ApiError(
        response.status_code, title, detail, retry_after=_seconds(response.headers.get("retry-after"))
    )


def _seconds(retry_after: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the form vidq sends); an HTTP date or nonsense: none."""
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None


def _retryable(exc: VidqError) -> bool:
    return exc.exit_code == ExitCode.UNAVAILABLE


def _resumable(exc: VidqError) -> bool:
    """Whether a resumable upload's chunk is worth sending again from the gateway's offset."""
    if isinstance(exc, ApiError):  # 408: the body stalled; 409: the offset moved on; 423: held
        return exc.status >= 500 or exc.status in (408, 409, 423)  # noqa: PLR2004
    return _retryable(exc)


def _piece(file: IO[bytes], offset: int, count: int, size: int) -> bytes:
    """``count`` bytes of ``file`` from ``offset``; a file that got shorter is a failure, not a loop."""
    file.seek(offset)
    chunk = file.read(count)
    if len(chunk) < count:
        raise VidqError(f"the file changed while it was sent: it ends before byte {size}")
    return chunk


def _counted(chunk: bytes, offset: int, on_progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """The chunk in small pieces, telling ``on_progress`` how far the file has gone."""
    for start in range(0, len(chunk), _PIECE):
        yield chunk[start : start + _PIECE]
        if on_progress is not None:
            on_progress(offset + min(start + _PIECE, len(chunk)))


class VidqClient:
    """The ``/v1`` API with one API key."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self._pause = pause
        try:
            self._http = httpx.Client(
                base_url=url,
                headers={"authorization": f"Bearer {api_key}", "user-agent": f"vidq-cli/{__version__}"},
                timeout=_TIMEOUT,
                transport=transport,
            )
        except httpx.InvalidURL as exc:
            raise UsageProblem(f"not a URL: {url!r} (set --url or VIDQ_URL)") from exc

    def __enter__(self) -> VidqClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with _translated(self.url):
            response = self._http.request(method, path, **kwargs)
        raise_for_problem(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Json:
        response = self._send(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise Unreachable(f"unavailable: {self.url} answered {path} with something not JSON") from exc
        if not isinstance(body, dict):
            raise Unreachable(f"unavailable: {self.url} answered {path} with JSON that is not an object")
        return body

    # videos

    def upload(
        self, file: IO[bytes], filename: str, *, fields: Mapping[str, str], idempotency_key: str | None = None
    ) -> Json:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return self._json(
            "POST",
            "/v1/videos",
            files={"file": (filename, file, content_type)},
            data=dict(fields),
            headers={"idempotency-key": idempotency_key} if idempotency_key else {},
            timeout=_UPLOAD_TIMEOUT,
        )

    def upload_resumable(
        self,
        file: IO[bytes],
        size: int,
        filename: str,
        *,
        fields: Mapping[str, str],
        chunk_size: int = RESUMABLE_CHUNK,
        attempts: int = 8,
        on_progress: Callable[[int], None] | None = None,
    ) -> Json:
        """Upload with the tus protocol (``/v1/tus``), one PATCH per ``chunk_size`` bytes.

        A chunk that fails on the way (the connection, a timeout, a 5xx, another request still
        holding the upload) is sent again from the offset the gateway holds (``HEAD``), after a
        growing pause, up to ``attempts`` failures in a row: a broken connection costs at most
        one chunk. A run that fails or is interrupted ends the upload on the gateway (nothing
        would resume it), so its bytes do not wait out their day. Hand-written on httpx (tus's
        Python client brings requests and aiohttp). Returns the video.
        """
        metadata = ",".join(
            f"{name} {base64.b64encode(value.encode()).decode()}"
            for name, value in {"filename": filename, **fields}.items()
        )
        created = self._send(
            "POST", "/v1/tus", headers={**_TUS, "upload-length": str(size), "upload-metadata": metadata}
        )
        location, video_id = created.headers["location"], created.headers["vidq-video-id"]
        try:
            self._send_pieces(file, size, location, chunk_size, attempts, on_progress)
        except BaseException:
            # nothing resumes it after this run: the upload is ended, its bytes freed at once
            with suppress(Exception), _translated(self.url):
                self._http.request("DELETE", location, headers=_TUS, timeout=_TIMEOUT)
            raise
        if on_progress is not None:
            on_progress(size)
        return self.video(video_id)

    def _send_pieces(
        self,
        file: IO[bytes],
        size: int,
        location: str,
        chunk_size: int,
        attempts: int,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        offset, failures, resync = 0, 0, False
        while True:
            try:
                if resync:
                    offset = int(self._send("HEAD", location, headers=_TUS).headers["upload-offset"])
                    resync = False
                if offset >= size:
                    break
                chunk = _piece(file, offset, min(chunk_size, size - offset), size)
                headers = {
                    **_TUS,
                    "content-type": "application/offset+octet-stream",
                    "upload-offset": str(offset),
                }
                answer = self._send(
                    "PATCH",
                    location,
                    content=_counted(chunk, offset, on_progress),
                    headers=headers,
                    timeout=_UPLOAD_TIMEOUT,
                )
                offset, failures = int(answer.headers["upload-offset"]), 0
            except VidqError as exc:
                failures += 1
                if not _resumable(exc) or failures > attempts:
                    raise
                self._pause(min(2.0**failures, 30.0))
                resync = True

    def import_video(
        self, url: str, *, fields: Mapping[str, str], idempotency_key: str | None = None
    ) -> Json:
        """A video from a URL: the gateway downloads it within the request (``metadata`` is JSON text)."""
        body: dict[str, object] = {"url": url, **fields}
        if "metadata" in fields:
            try:
                body["metadata"] = json.loads(fields["metadata"])
            except ValueError as exc:
                raise UsageProblem(f"--metadata is not valid JSON: {exc}") from None
        waits = 0
        while True:
            try:
                return self._json(
                    "POST",
                    "/v1/videos",
                    json=body,
                    headers={"idempotency-key": idempotency_key} if idempotency_key else {},
                    timeout=_IMPORT_TIMEOUT,
                )
            except ApiError as exc:
                # the gateway's import slots are full (429: this client's share, 503: all of
                # them): nothing was recorded, so asking again is safe, after the wait it names
                if exc.retry_after is None or waits >= _IMPORT_WAITS:
                    raise
                waits += 1
                self._pause(min(exc.retry_after, 60.0))

    def videos(self, *, status: str | None = None, limit: int = 20, cursor: str | None = None) -> Json:
        params = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v}
        return self._json("GET", "/v1/videos", params=params)

    def video(self, video_id: str) -> Json:
        return self._json("GET", f"/v1/videos/{video_id}")

    def delete_video(self, video_id: str) -> None:
        self._send("DELETE", f"/v1/videos/{video_id}")

    def retry_rendition(self, video_id: str, quality: str) -> Json:
        return self._json("POST", f"/v1/videos/{video_id}/renditions/{quality}/retry")

    def retry_thumbnail(self, video_id: str) -> Json:
        return self._json("POST", f"/v1/videos/{video_id}/thumbnail/retry")

    @contextmanager
    def rendition(self, video_id: str, quality: str) -> Iterator[httpx.Response]:
        """The rendition's MP4 as a streamed response (read it inside the block)."""
        path = f"/v1/videos/{video_id}/renditions/{quality}"
        with _translated(self.url), self._http.stream("GET", path, timeout=_STREAM_TIMEOUT) as response:
            raise_for_problem(response)
            yield response

    def events(self, video_id: str, *, after: int = 0) -> Iterator[sse.ServerEvent]:
        """One connection to the video's event stream: the events after sequence ``after``."""
        params = {"after": after} if after else {}
        path = f"/v1/videos/{video_id}/events"
        with (
            _translated(self.url),
            self._http.stream("GET", path, params=params, timeout=_STREAM_TIMEOUT) as response,
        ):
            raise_for_problem(response)
            yield from sse.parse(response.iter_lines())

    def follow(self, video_id: str, *, after: int = 0, attempts: int = 5) -> Iterator[sse.ServerEvent]:
        """The video's events until a terminal one (yielded last), resuming a broken stream.

        A stream that breaks or ends early is opened again after the last sequence seen. It also
        stops, without a terminal event, when the stream has nothing new and the video is over
        (read its status then).
        """
        failures = 0
        while True:
            progressed = False
            try:
                for event in self.events(video_id, after=after):
                    progressed = True
                    after = max(after, event.sequence)
                    yield event
                    if event.event in TERMINAL_EVENTS:
                        return
                if not progressed and self.video(video_id)["status"] in TERMINAL_STATUSES:
                    return
            except VidqError as exc:
                if not _retryable(exc) or failures + 1 >= attempts:
                    raise
            failures = 0 if progressed else failures + 1
            if failures >= attempts:
                raise Unreachable(f"unavailable: the event stream of {video_id} keeps ending early")
            self._pause(min(0.5 * 2**failures, 10.0))

    # direct uploads

    def create_upload(self, options: Json) -> Json:
        return self._json("POST", "/v1/uploads", json=options)

    # webhooks

    def create_webhook(self, url: str, events: list[str], description: str) -> Json:
        body = {"url": url, "events": events, "description": description}
        return self._json("POST", "/v1/webhooks", json=body)

    def webhooks(self) -> Json:
        return self._json("GET", "/v1/webhooks")

    def rotate_secret(self, webhook_id: str, *, grace_s: int) -> Json:
        return self._json("POST", f"/v1/webhooks/{webhook_id}/rotate-secret", json={"grace_s": grace_s})

    def delete_webhook(self, webhook_id: str) -> None:
        self._send("DELETE", f"/v1/webhooks/{webhook_id}")

    def deliveries(
        self,
        webhook_id: str,
        *,
        status: str | None = None,
        event_id: str | None = None,
        video_id: str | None = None,
        limit: int = 20,
    ) -> Json:
        query = {"status": status, "event_id": event_id, "video_id": video_id, "limit": limit}
        params = {k: v for k, v in query.items() if v}
        return self._json("GET", f"/v1/webhooks/{webhook_id}/deliveries", params=params)

    def replay(self, webhook_id: str, *, since: str, until: str | None, failed_only: bool) -> Json:
        params: dict[str, str] = {"since": since, "failed_only": str(failed_only).lower()}
        if until:
            params["until"] = until
        return self._json("POST", f"/v1/webhooks/{webhook_id}/replay", params=params)

    def delivery(self, webhook_id: str, delivery_id: str) -> Json:
        return self._json("GET", f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}")

    def retry_delivery(self, webhook_id: str, delivery_id: str) -> Json:
        return self._json("POST", f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")

    def test_webhook(self, webhook_id: str) -> Json:
        return self._json("POST", f"/v1/webhooks/{webhook_id}/test")
