"""Where media lives: a small interface, and the local-directory implementation.

Keys are built here from validated ids only (``videos/<video_id>/renditions/720p.mp4``): a
client's filename never becomes a path. Writers get a temporary file on the same file system and
the result appears under its key by an atomic rename once complete, so a reader (or a client
downloading) never sees a half-written file. An S3-compatible backend implements the same
protocol (``local_path`` then downloads to a cache, ``writer`` uploads on commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from shared.errors import PipelineError, TransientError, WorkCanceled
from shared.ids import is_video_id

#: Written into the storage root by the gateway when it starts. A worker that finds a video's
#: source missing tells a deleted video (the marker is there: the gateway removed the files) from
#: storage that is not vidq's at all — a volume not mounted, a wrong ``VIDQ_STORAGE_DIR`` — where
#: every job would otherwise be dropped as "deleted" without a word to anyone.
MARKER = ".vidq-storage"
_QUALITY = re.compile(r"^\d{3,4}p$")


def _video_dir(video_id: str) -> str:
    if not is_video_id(video_id):
        raise ValueError(f"not a video id: {video_id!r}")
    return f"videos/{video_id}"


def source_key(video_id: str) -> str:
    return f"{_video_dir(video_id)}/source"


def rendition_key(video_id: str, quality: str) -> str:
    if not _QUALITY.match(quality):
        raise ValueError(f"not a quality: {quality!r}")
    return f"{_video_dir(video_id)}/renditions/{quality}.mp4"


def thumbnail_key(video_id: str, width: int) -> str:
    return f"{_video_dir(video_id)}/thumbnails/{int(width)}.jpg"


def video_prefix(video_id: str) -> str:
    return _video_dir(video_id)


class Storage(Protocol):
    """What services need from media storage."""

    async def mark(self) -> None:
        """Make this storage vidq's (:data:`MARKER`); idempotent. The gateway does it at start."""
        ...

    async def marked(self) -> bool:
        """Whether this is vidq's storage (the gateway marked it)."""
        ...

    def local_path(self, key: str) -> Path:
        """A local file path for reading ``key`` (ffmpeg input, HTTP file response)."""
        ...

    def writer(self, key: str, suffix: str = "") -> contextlib.AbstractAsyncContextManager[Path]:
        """A temporary path to write; on a clean exit it becomes ``key`` atomically."""
        ...

    async def exists(self, key: str) -> bool: ...
    async def size(self, key: str) -> int: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> None: ...


class LocalStorage:
    """Media under one directory (``VIDQ_STORAGE_DIR``); temporary files under ``tmp/``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp = self.root / "tmp"

    async def mark(self) -> None:
        if not (self.root / MARKER).is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            async with self.writer(MARKER) as temp:
                temp.write_text("vidq media storage: videos/<id>/ holds each video's files\n")

    async def marked(self) -> bool:
        return (self.root / MARKER).is_file()

    def local_path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"key escapes the storage root: {key!r}")
        return path

    def temp_path(self, suffix: str = "") -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return self.tmp / f"{secrets.token_hex(12)}{suffix}"

    @contextlib.asynccontextmanager
    async def writer(self, key: str, suffix: str = "") -> AsyncIterator[Path]:
        final = self.local_path(key)
        temp = self.temp_path(suffix)
        try:
            yield temp
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    async def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    async def size(self, key: str) -> int:
        return self.local_path(key).stat().st_size

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.local_path(key).unlink()

    async def delete_prefix(self, prefix: str) -> None:
        path = self.local_path(prefix)
        await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)


async def source_missing(storage: Storage, video_id: str) -> PipelineError:
    """Why a job's source is not in ``storage``: its video was deleted, or the storage is not vidq's.

    Deleted, the job is dropped (:class:`WorkCanceled`). Storage without the gateway's marker is
    an operator's problem (a volume not mounted, another ``VIDQ_STORAGE_DIR``): the job is
    retried on its schedule and, if that outlasts the retries, fails with this reason and waits
    in its dead-letter queue to be replayed once the storage is back.
    """
    if await storage.marked():
        return WorkCanceled(f"the source of {video_id} is gone (video deleted)")
    return TransientError(
        f"the source of {video_id} is not in storage, and the storage is not vidq's (no {MARKER}, "
        "which the gateway writes when it starts): is the volume mounted, and VIDQ_STORAGE_DIR "
        "the gateway's?"
    )


@contextlib.asynccontextmanager
async def source_in_place(storage: Storage, video_id: str) -> AsyncIterator[str]:
    """The local path of a video's source, for work that reads it and writes the video's files.

    Missing at the start, the work does not start (:func:`source_missing`'s error). Removed while
    the work ran — the video deleted meanwhile — the work ends the same way whatever it met: an
    ffmpeg that failed on the vanished file is the deletion's doing, not a permanent media error
    for the dead-letter queue; and files the work put in place after the deletion removed the
    video's folder are removed again, so a deleted video leaves nothing behind.
    """
    key = source_key(video_id)
    if not await storage.exists(key):
        raise await source_missing(storage, video_id)
    try:
        yield str(storage.local_path(key))
    except PipelineError as exc:
        if await storage.exists(key):
            raise
        raise await _gone_meanwhile(storage, video_id) from exc
    if not await storage.exists(key):
        raise await _gone_meanwhile(storage, video_id)


async def _gone_meanwhile(storage: Storage, video_id: str) -> PipelineError:
    error = await source_missing(storage, video_id)
    if isinstance(error, WorkCanceled):  # deleted: what the work wrote since goes too
        await storage.delete_prefix(video_prefix(video_id))
    return error
