"""Live progress on stderr with rich: bytes of an upload or a download, one bar per rendition.

The upload bar moves as httpx reads the file (:class:`CountingFile`); the rendition bars (and a
thumbnail line) move with the video's server-sent events (:class:`RenditionBoard`): a video
event carries the whole video, a rendition event the rendition with its ``progress`` (0–100).
rich estimates the time left from how fast each bar moves. On a terminal the bars redraw in
place; elsewhere (a pipe, a CI log) rich prints them once, as they stand at the end.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from vidq import views
from vidq.client import TERMINAL_STATUSES

Json = dict[str, Any]


class _Amount(ProgressColumn):
    """Bytes and speed for a transfer, a percentage for a rendition."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes, self._speed = DownloadColumn(), TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("bytes"):
            return Text.assemble(self._bytes.render(task), " ", self._speed.render(task))
        if task.total is None:  # no measure (an import: the gateway downloads, then answers)
            return Text("     …")
        return Text(f"{task.percentage:>5.1f}%")


class _Note(ProgressColumn):
    def render(self, task: Task) -> Text:
        note = task.fields.get("note")
        return note if isinstance(note, Text) else Text(str(note or ""))


@contextmanager
def bars(console: Console, *, disable: bool = False) -> Iterator[Progress]:
    """The one progress display of a command (on ``console``, normally stderr).

    It stays on screen when the block ends normally; when the block fails it vanishes, so the
    error is the one line that remains.
    """
    progress = Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(bar_width=32),
        _Amount(),
        TimeRemainingColumn(elapsed_when_finished=True),
        _Note(),
        console=console,
        disable=disable,
    )
    quiet = console.quiet
    try:
        with progress:
            try:
                yield progress
            except BaseException:
                progress.live.transient = True
                # Off a terminal rich still ends the display with a blank line: not that either.
                console.quiet = quiet or not console.is_interactive
                raise
    finally:
        console.quiet = quiet


class CountingFile(io.FileIO):
    """A file opened for reading that reports its position after every read or seek."""

    def __init__(self, path: Path, on_position: Callable[[int], None]) -> None:
        super().__init__(path, "rb")
        self._on_position = on_position

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self._on_position(self.tell())
        return chunk

    def seek(self, pos: int, whence: int = io.SEEK_SET, /) -> int:
        at = super().seek(pos, whence)
        self._on_position(at)  # httpx rewinds before it sends: the bar starts over
        return at


def _note(state: Json) -> Text:
    text = views.status(state.get("status"))
    if told := views.timing(state, place=False):  # bars move with events, which know no place
        text.append(f"  {told}", style="dim")
    if state.get("error"):
        text.append(f": {state['error']}")
    elif state.get("status") == "ready" and state.get("size_bytes"):
        text.append(f"  {state.get('width')}x{state.get('height')}  {views.size(state.get('size_bytes'))}")
    return text


class RenditionBoard:
    """One bar per rendition and one for the thumbnail, moved by the video's events."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def _set(self, name: str, completed: float, total: float, note: Text) -> None:
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = self._progress.add_task(name, total=total)
        self._progress.update(task, completed=completed, note=note)

    def rendition(self, rendition: Json) -> None:
        done = rendition.get("status") == "ready"
        progress = 100.0 if done else float(rendition.get("progress") or 0)
        self._set(str(rendition.get("quality")), progress, 100.0, _note(rendition))

    def video(self, video: Json) -> None:
        for rendition in video.get("renditions") or []:
            # A video event's copy of a rendition may lag its own events: it adds bars and
            # settles them (a canceled video has no rendition events), never moves them back.
            if rendition.get("quality") not in self._tasks or rendition.get("status") in TERMINAL_STATUSES:
                self.rendition(rendition)
        thumbnail = video.get("thumbnail") or {}
        self._set("thumbnail", 1.0 if thumbnail.get("status") == "ready" else 0.0, 1.0, _note(thumbnail))

    def apply(self, event: Json) -> None:
        """Move the bars with one event body (``{"type": …, "data": {…}}``)."""
        data = event.get("data") or {}
        if str(event.get("type", "")).startswith("rendition."):
            self.rendition(data)
        elif "renditions" in data:
            self.video(data)
