"""The tus protocol's pieces that need no server: header parsing, and writing a PATCH body."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest
from starlette.requests import ClientDisconnect, Request

from gateway import resumable
from gateway.errors import BadRequest, InvalidRequest, PreconditionFailed

pytestmark = pytest.mark.unit


class Body:
    """A stand-in request whose body is the given steps: bytes, a pause (float) or an exception."""

    def __init__(
        self, *steps: bytes | float | Exception, before_each: Callable[[], None] | None = None
    ) -> None:
        self.steps = steps
        self.before_each = before_each

    async def stream(self) -> AsyncIterator[bytes]:
        for step in self.steps:
            if self.before_each is not None:
                self.before_each()
            if isinstance(step, float):
                await asyncio.sleep(step)
            elif isinstance(step, Exception):
                raise step
            else:
                yield step


def request(body: Body) -> Request:
    return cast("Request", body)


def renewals(*answers: bool) -> Callable[[], Awaitable[bool]]:
    queue = list(answers)

    async def renew() -> bool:
        return queue.pop(0) if queue else True

    return renew


def test_upload_metadata_is_key_and_base64_value_pairs() -> None:
    encoded = base64.b64encode("été.mp4".encode()).decode()
    assert resumable.parse_metadata(f"filename {encoded},is_private, qualities MTQ0cA==") == {
        "filename": "été.mp4",
        "is_private": "",
        "qualities": "144p",
    }
    assert resumable.parse_metadata("") == {}
    for bad in ("a b c", "a !!", "a YQ==,a YQ==", "a YQ==,", "a /w=="):  # /w== is not UTF-8
        with pytest.raises(InvalidRequest):
            resumable.parse_metadata(bad)


@pytest.mark.parametrize("value", [None, "", "-1", "+1", "1e3", "0x10", "١٢", "²", "1" * 20, str(2**63)])
def test_an_offset_is_plain_ascii_digits_within_int64(value: str | None) -> None:
    with pytest.raises(InvalidRequest):
        resumable.parse_offset(value, "Upload-Offset")


def test_offsets_that_are_numbers_are_read() -> None:
    assert resumable.parse_offset("0", "Upload-Offset") == 0
    assert resumable.parse_offset("000123", "Upload-Offset") == 123
    assert resumable.parse_offset(str(2**63 - 1), "Upload-Length") == 2**63 - 1


def test_the_version_and_the_checksum_headers() -> None:
    resumable.check_version("1.0.0")
    with pytest.raises(PreconditionFailed) as refused:
        resumable.check_version("0.2.2")
    assert refused.value.headers == {"Tus-Version": "1.0.0"}
    digest = hashlib.sha256(b"x").digest()
    assert resumable.parse_checksum(f"sha256 {base64.b64encode(digest).decode()}") == ("sha256", digest)
    assert resumable.parse_checksum(None) is None
    with pytest.raises(BadRequest):  # tus: 400 for an algorithm the server does not offer
        resumable.parse_checksum("crc32 AAAAAA==")
    with pytest.raises(InvalidRequest):
        resumable.parse_checksum("sha256 AAAA")  # not a sha256's length


async def test_a_body_is_written_at_its_offset_over_bytes_never_recorded(tmp_path: Path) -> None:
    path = tmp_path / "partial"
    path.write_bytes(b"0123456789 and bytes a dead request wrote")
    written = await resumable.append(request(Body(b"abc", b"def")), path, 10, 100, renewals())
    assert written == resumable.Written(16)
    assert path.read_bytes() == b"0123456789abcdef"


async def test_a_request_that_lost_its_lease_writes_nothing_more_not_even_later(tmp_path: Path) -> None:
    path = tmp_path / "partial"
    seen: list[bytes] = []
    # each time the body is asked for more, the file already holds what came before (no
    # buffer: a request that loses its lease has nothing left to flush into the file later,
    # when it may be another request's, or a recorded video's source)
    body = Body(
        b"A" * 100, b"B" * 100, before_each=lambda: seen.append(path.read_bytes() if path.exists() else b"")
    )
    original = resumable.RENEW_EVERY_S
    resumable.RENEW_EVERY_S = 0.0  # renew before every write
    try:
        written = await resumable.append(request(body), path, 0, 1000, renewals(True, False))
    finally:
        resumable.RENEW_EVERY_S = original
    assert written.lost
    assert seen == [b"", b"A" * 100]
    assert path.read_bytes() == b"A" * 100


async def test_a_body_past_the_length_keeps_only_what_fits(tmp_path: Path) -> None:
    path = tmp_path / "partial"
    written = await resumable.append(request(Body(b"abcdef")), path, 0, 4, renewals())
    assert (written.received, written.too_long) == (4, True)
    assert path.read_bytes() == b"abcd"


async def test_a_broken_or_stalled_body_keeps_what_arrived_unless_it_had_a_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "partial"
    broken = await resumable.append(request(Body(b"abc", ClientDisconnect())), path, 0, 100, renewals())
    assert (broken.received, broken.gone) == (3, True)
    monkeypatch.setattr(resumable, "STALL_S", 0.05)
    stalled = await resumable.append(request(Body(b"def", 1.0)), path, 3, 100, renewals())
    assert (stalled.received, stalled.stalled) == (6, True)
    checksum = ("md5", hashlib.md5(b"ghi!").digest())  # noqa: S324 - tus's algorithm
    checked = await resumable.append(
        request(Body(b"ghi", ClientDisconnect())), path, 6, 100, renewals(), checksum
    )
    assert (checked.received, checked.corrupt) == (6, True)  # half a checked body is not kept
