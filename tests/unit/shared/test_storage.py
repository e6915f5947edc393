"""Local storage: the gateway's marker, and what a worker makes of a missing source."""

from __future__ import annotations

from pathlib import Path

from shared.errors import TransientError, WorkCanceled
from shared.storage import MARKER, LocalStorage, source_missing

VIDEO = "vid_0123456789abcdef"


async def test_marking_makes_the_folder_vidqs_once(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "media")
    assert not await storage.marked()

    await storage.mark()
    await storage.mark()

    assert await storage.marked()
    assert (tmp_path / "media" / MARKER).read_text().startswith("vidq media storage")
    assert list(storage.tmp.iterdir()) == []  # written through a temporary file, atomically


async def test_a_missing_source_is_a_deletion_only_in_vidqs_storage(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    unmounted = await source_missing(storage, VIDEO)
    assert isinstance(unmounted, TransientError)
    assert "is the volume mounted" in str(unmounted)

    await storage.mark()
    deleted = await source_missing(storage, VIDEO)
    assert isinstance(deleted, WorkCanceled)
    assert VIDEO in str(deleted)
