"""Receiving an upload: stream the multipart body to storage with a size cap, then probe it.

The body is parsed as it arrives (python-multipart's streaming parser) and the ``file`` part is
written straight to a temporary file in storage, so memory stays flat whatever the file size.
Text fields are capped at a few kB. Nothing of a refused upload is left behind: the temporary
file is removed, no row is written, no message is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fastapi import Request
from pydantic import AnyHttpUrl, EmailStr, TypeAdapter, ValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from gateway.errors import InvalidRequest, NotAVideo, OverLimits, UploadTooLarge
from gateway.schemas import MAX_URL_LENGTH, NOT_IN_URLS, no_credentials, printable_url
from gateway.settings import GatewaySettings
from shared.destinations import refusal
from shared.errors import InvalidSource, TransientError
from shared.ffmpeg import ProbeResult, probe
from shared.ladder import PlannedRendition, parse_qualities, plan

if TYPE_CHECKING:  # only a typing alias in python-multipart
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger(__name__)

FIELDS = ("qualities", "callback_url", "notify_email", "metadata")
MAX_FIELD_BYTES = 8 * 1024
_MAX_FILENAME = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HTTP_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)
#: One address, as ``PATCH /v1/account`` takes them (``a;b@x.com`` or ``a,b@x.com`` are refused:
#: a mail server reads them as a list, and a bare ``a`` may be taken for a local mailbox).
_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)


@dataclass
class ReceivedUpload:
    """What came in: the file (already in ``path``) and the text fields."""

    filename: str = ""
    size_bytes: int = 0
    files: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    #: SHA-256 of the file's bytes, when asked for (an upload under an ``Idempotency-Key``).
    file_sha256: str | None = None

    def fingerprint(self) -> str:
        """What identifies the request: the file's bytes and name, and the text fields."""
        what = {"file": self.file_sha256, "filename": self.filename, "fields": sorted(self.fields.items())}
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def display_name(raw: str, default: str) -> str:
    """A client's file name as vidq keeps it: for display only, it never becomes a path of ours.

    Only the last path component, without control characters (NUL among them, which
    PostgreSQL's text refuses), at most 255 characters; ``default`` when nothing is left.
    """
    name = _CONTROL.sub("", raw.replace("\\", "/").rsplit("/", 1)[-1])
    return name[:_MAX_FILENAME] or default


class _Receiver:
    """Callbacks for the streaming parser: file bytes to disk, fields to small buffers."""

    def __init__(self, out: IO[bytes], max_bytes: int, *, digest: bool = False) -> None:
        self.out = out
        self.digest = hashlib.sha256() if digest else None
        self.max_bytes = max_bytes
        self.result = ReceivedUpload()
        self.complete = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._buffer = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._name, self._is_file = None, False
        self._buffer = bytearray()

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            if self.result.files:
                raise InvalidRequest("send exactly one file, in the 'file' field")
            self._is_file = True
            self.result.files = 1
            raw = options.get(b"filename", b"").decode("utf-8", "replace")
            self.result.filename = display_name(raw, "upload")
        elif b"filename" in options and self._name not in FIELDS:
            # a file under another name (``video=@clip.mp4``): say where it belongs, instead of
            # reading it as a text field that runs over its size
            raise InvalidRequest(f"a file was sent as {self._name!r}; send the video in the 'file' field")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.result.size_bytes += end - start
            if self.result.size_bytes > self.max_bytes:
                raise UploadTooLarge(f"the file is over the {self.max_bytes}-byte limit")
            # a view, not a slice: the chunk is written to the file without another copy
            chunk = memoryview(data)[start:end]
            self.out.write(chunk)
            if self.digest is not None:
                self.digest.update(chunk)
            return
        self._buffer += data[start:end]
        if len(self._buffer) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"field {self._name!r} is over {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if not self._is_file and self._name in FIELDS:
            try:
                self.result.fields[self._name] = self._buffer.decode()
            except UnicodeDecodeError as exc:
                raise InvalidRequest(f"field {self._name!r} is not UTF-8 text") from exc

    def _end(self) -> None:
        self.complete = True
        if self.digest is not None:
            self.result.file_sha256 = self.digest.hexdigest()


def _boundary(request: Request) -> bytes:
    ctype, options = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidRequest(
            "send the video as multipart/form-data with the file in the 'file' field, or as JSON "
            'with the "url" to import it from'
        )
    return options[b"boundary"]


async def receive(
    request: Request, path: Path, settings: GatewaySettings, *, digest: bool = False
) -> ReceivedUpload:
    """Stream the multipart body of ``request``, writing the ``file`` part to ``path``.

    ``digest``: hash the file as it streams (``file_sha256``), for an idempotent request's
    fingerprint; it costs a pass of SHA-256 (about 1 GB/s a core), so only then.
    """
    boundary = _boundary(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes + 64 * 1024:
        raise UploadTooLarge(f"the upload is over the {settings.max_upload_bytes}-byte limit")
    with path.open("wb") as out:
        receiver = _Receiver(out, settings.max_upload_bytes, digest=digest)
        parser = MultipartParser(boundary, receiver.callbacks())
        try:
            async for chunk in request.stream():
                parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequest(f"malformed multipart body: {exc}") from exc
        except ClientDisconnect as exc:
            raise InvalidRequest("the client went away before the upload finished") from exc
    if not receiver.complete:
        raise InvalidRequest("the multipart body ended early; the upload was cut short")
    if not receiver.result.files:
        raise InvalidRequest("no file: send the video in the 'file' field")
    if receiver.result.size_bytes == 0:
        raise NotAVideo("the file is empty")
    return receiver.result


def _finite(number: str) -> float:
    """A JSON number as a float; one past the float range (``1e400``) would be stored as Infinity."""
    value = float(number)
    if not math.isfinite(value):
        raise InvalidRequest(f"metadata holds the number {number[:40]}, out of range for a 64-bit float")
    return value


def _not_json(constant: str) -> Any:
    """``json.loads`` accepts NaN and Infinity; JSON (and PostgreSQL's jsonb) does not."""
    raise InvalidRequest(f"metadata is not valid JSON: {constant} is not a JSON value")


@dataclass(frozen=True, slots=True)
class Options:
    """The validated text fields of an upload."""

    qualities: tuple[Any, ...] | None
    callback_url: str | None
    notify_email: str | None
    metadata: dict[str, Any]


def as_form(
    *,
    qualities: str | Sequence[str] | None,
    callback_url: str | None,
    notify_email: str | None,
    metadata: dict[str, Any] | None,
) -> dict[str, str]:
    """Options given as JSON (a direct upload's, an import's) as an upload's form carries them.

    The metadata is written as compact UTF-8 JSON, as a client writes it in a form (its size
    then counts alike, and a NUL character in it is seen); each field has the form's 8 KiB cap.
    Check the result with :func:`parse_options`, as a form's fields are.
    """
    fields = {
        "qualities": qualities if isinstance(qualities, str) else ",".join(qualities or []),
        "callback_url": callback_url or "",
        "notify_email": notify_email or "",
        "metadata": ""
        if metadata is None
        else json.dumps(metadata, ensure_ascii=False, separators=(",", ":")),
    }
    fields = {name: value for name, value in fields.items() if value}
    for name, value in fields.items():
        if len(value.encode("utf-8", "surrogatepass")) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"field {name!r} is over {MAX_FIELD_BYTES} bytes")
    return fields


def parse_options(fields: dict[str, str], settings: GatewaySettings) -> Options:
    """Validate the text fields; raises ``InvalidRequest`` naming the first bad one."""
    for name, value in fields.items():
        if "\x00" in value:
            raise InvalidRequest(f"field {name!r} holds a NUL character, which no field may contain")
    qualities = None
    if fields.get("qualities", "").strip():
        try:
            qualities = parse_qualities(fields["qualities"])
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
    notify_email = fields.get("notify_email", "").strip() or None
    if notify_email:
        try:
            notify_email = _EMAIL.validate_python(notify_email)
        except ValidationError:
            raise InvalidRequest(f"notify_email is not one email address: {notify_email!r}") from None
    return Options(
        qualities,
        _callback_url(fields.get("callback_url", "").strip(), settings),
        notify_email,
        _metadata(fields.get("metadata", "").strip(), settings),
    )


def _callback_url(url: str, settings: GatewaySettings) -> str | None:
    if not url:
        return None
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"callback_url is over {MAX_URL_LENGTH} characters")
    try:
        printable_url(url)
    except ValueError as exc:
        raise InvalidRequest(f"callback_url {NOT_IN_URLS}") from exc
    try:
        no_credentials(url)
    except ValueError as exc:
        raise InvalidRequest(f"callback_url: {exc}") from None
    try:
        _HTTP_URL.validate_python(url)  # kept as the client wrote it
    except ValidationError as exc:
        raise InvalidRequest("callback_url must be an absolute http(s) URL") from exc
    refused = refusal(url, settings.webhook_allow_hosts)
    if refused:
        raise InvalidRequest(f"callback_url: {refused}")
    return url


def _metadata(raw: str, settings: GatewaySettings) -> dict[str, Any]:
    if not raw:
        return {}
    # surrogatepass: a lone surrogate (from a JSON body's "\ud800") is measured, then refused below
    if len(raw.encode("utf-8", "surrogatepass")) > settings.max_metadata_bytes:
        raise InvalidRequest(f"metadata is over {settings.max_metadata_bytes} bytes")
    if nesting(raw) > MAX_METADATA_DEPTH:
        raise InvalidRequest(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels of objects and arrays")
    try:
        metadata = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"metadata is not valid JSON: {exc.msg}") from exc
    except ValueError as exc:  # an integer past Python's 4,300 digits
        raise InvalidRequest(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be a JSON object")
    text = json.dumps(metadata, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # "\udc00" parses, but is no character: UTF-8 (and jsonb) refuse it
        raise InvalidRequest(
            "metadata holds a lone UTF-16 surrogate (e.g. \\udc00), which is no character"
        ) from None
    if _holds_nul(metadata):
        # written as \u0000 in the JSON text: valid JSON, but PostgreSQL's jsonb refuses it
        raise InvalidRequest("metadata holds a NUL character (\\u0000), which jsonb cannot store")
    return metadata


#: How deep metadata may nest: more than any record of a client's needs, and far from the depth
#: at which parsing it (and each walk through it after) would exhaust Python's recursion limit.
MAX_METADATA_DEPTH = 32


def nesting(text: str) -> int:
    """How deep the objects and arrays of a JSON text nest, read without parsing it (pure).

    Brackets inside strings do not count. Malformed text gets a number too; the parser that
    runs after this says what is wrong with it.
    """
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _holds_nul(value: object) -> bool:
    """Whether a decoded JSON value has a NUL character in any key or string."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


async def inspect(
    path: Path, options: Options, settings: GatewaySettings, probes: asyncio.Semaphore | None = None
) -> tuple[ProbeResult, list[PlannedRendition]]:
    """Probe the stored file (in one of the ``probes`` slots), check the limits, plan the ladder."""
    try:
        async with probes or contextlib.nullcontext():
            result = await probe(path)
    except InvalidSource as exc:
        raise NotAVideo(str(exc)) from exc
    except TransientError:
        log.exception("could not probe an upload")
        raise
    if result.duration_s > settings.max_duration_s:
        raise OverLimits(
            f"the video lasts {result.duration_s:.1f} s; the limit is {settings.max_duration_s:g} s"
        )
    if result.width * result.height > settings.max_pixels:
        raise OverLimits(
            f"the frame is {result.width}x{result.height}; the limit is {settings.max_pixels} pixels"
        )
    planned = plan(result.width, result.height, result.rotation, options.qualities, result.sample_aspect)
    if not planned:
        asked = ", ".join(q.value for q in options.qualities or ())
        raise InvalidRequest(
            f"none of the requested qualities ({asked}) fit a "
            f"{result.display_width}x{result.display_height} source; vidq never upscales"
        )
    return result, planned
