"""``vidq upload`` and ``vidq watch``: send a video, then follow its renditions to the end."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.text import Text

from vidq import views
from vidq.client import TERMINAL_EVENTS, Json, VidqClient
from vidq.errors import VidqError
from vidq.options import JsonOutput
from vidq.progress import CountingFile, RenditionBoard, bars
from vidq.session import Session, session
from vidq.sse import ServerEvent

#: Files this large go resumable unless told otherwise (``--no-resumable``).
RESUMABLE_FROM = 64 * 1024 * 1024


def _follow(api: VidqClient, video_id: str, board: RenditionBoard, as_json: bool) -> tuple[str, Json]:
    """Follow the events to the end; returns how the video ended and the video as it ended."""
    last: ServerEvent | None = None
    for event in api.follow(video_id):
        last = event
        if as_json:
            views.emit_line(event.data)
            continue
        try:
            board.apply(event.json())
        except ValueError:
            continue  # an unreadable event moves no bar; the final state is read below
    if last is not None and last.event in TERMINAL_EVENTS:
        with suppress(ValueError):  # unreadable: ask for the video instead
            data = last.json().get("data")
            if isinstance(data, dict) and "renditions" in data:
                return last.event.removeprefix("video."), data
    video = api.video(video_id)
    return str(video.get("status")), video


def _finish(s: Session, video_id: str, ending: str, video: Json, as_json: bool) -> None:
    if not as_json:
        views.print_video(s.out, video)
    if ending == "failed":
        raise VidqError(f"video {video_id} failed: {video.get('error') or 'see vidq show ' + video_id}")
    if ending != "ready":
        raise VidqError(f"video {video_id} was {ending}")


def _watch(api: VidqClient, progress: Progress, video: Json, as_json: bool) -> tuple[str, Json]:
    board = RenditionBoard(progress)
    if not as_json:
        board.video(video)
    return _follow(api, video["id"], board, as_json)


def upload(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE_OR_URL", help="The video: a file, or an http(s) URL for vidq to download it from."
        ),
    ],
    qualities: Annotated[
        str | None,
        typer.Option(
            "--qualities", "-q", help="Comma list of rungs, e.g. 720p,360p (default: all that fit)."
        ),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow the renditions until the video is ready or failed.")
    ] = False,
    callback_url: Annotated[
        str | None, typer.Option(help="Also send this video's events here, signed.")
    ] = None,
    notify_email: Annotated[str | None, typer.Option(help="Email this address when it is done.")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object (≤ 4 KiB) kept with the video.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Send the same key again to get the first answer, not a second video.")
    ] = None,
    resumable: Annotated[
        bool | None,
        typer.Option(
            "--resumable/--no-resumable",
            help="Send the file in 8 MiB pieces (tus), resuming after a broken connection "
            "(default: for files of 64 MiB and more, without --idempotency-key).",
        ),
    ] = None,
    as_json: JsonOutput = False,
) -> None:
    """Upload a video, or import it from a URL; with --watch, follow it until it is ready or not.

    Exits 0 when the video is ready (or, without --watch, accepted), 1 when it failed. A large
    file is sent resumably (tus): a broken connection costs one 8 MiB piece, not the upload.

    With --json: the video; with --watch --json, every event as a JSON line instead (the first,
    video.uploaded, carries the video; the last is video.ready, video.failed or video.canceled).
    """
    s = session(ctx)
    options = {"qualities": qualities, "callback_url": callback_url, "notify_email": notify_email}
    fields = {k: v for k, v in {**options, "metadata": metadata}.items() if v}
    url = source if source.lower().startswith(("http://", "https://")) else None
    file = None if url else _readable(source)
    if resumable and (url is not None or idempotency_key):
        raise typer.BadParameter(
            "a resumable upload sends a file, and needs no --idempotency-key (it resumes instead)",
            param_hint="--resumable",
        )
    if resumable is None:
        resumable = file is not None and not idempotency_key and file.stat().st_size >= RESUMABLE_FROM
    with s.client() as api, bars(s.err, disable=as_json) as progress:
        if url is not None:
            task = progress.add_task("import", total=None, note=Text(url))
            video = api.import_video(url, fields=fields, idempotency_key=idempotency_key)
        else:
            assert file is not None  # noqa: S101 - not a URL
            size = file.stat().st_size
            task = progress.add_task("upload", total=size, bytes=True, note=Text(file.name))
            if resumable:
                with file.open("rb") as body:
                    video = api.upload_resumable(
                        body,
                        size,
                        file.name,
                        fields=fields,
                        on_progress=lambda at: progress.update(task, completed=at),
                    )
            else:
                with CountingFile(file, lambda at: progress.update(task, completed=at)) as body:
                    video = api.upload(body, file.name, fields=fields, idempotency_key=idempotency_key)
        progress.update(task, note=Text(video["id"]))
        ending = _watch(api, progress, video, as_json) if watch else None
    if ending is not None:
        _finish(s, video["id"], *ending, as_json)
    elif as_json:
        views.emit_json(video)
    else:
        planned = " ".join(r.get("quality", "") for r in video.get("renditions") or [])
        s.out.print(f"{video['id']} {video.get('status')}: {planned}  (follow it: vidq watch {video['id']})")


def _readable(source: str) -> Path:
    """The file to upload; a usage error (exit 2) when there is none to read."""
    path = Path(source)
    if not path.is_file():
        raise typer.BadParameter(f"{source}: no such file (or give an http(s) URL)", param_hint="FILE_OR_URL")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise typer.BadParameter(f"{source}: {exc.strerror}", param_hint="FILE_OR_URL") from None
    return path


def watch(
    ctx: typer.Context,
    video_id: Annotated[str, typer.Argument(metavar="VIDEO_ID", help="The video (vid_…).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every event as a JSON line on stdout.")
    ] = False,
) -> None:
    """Follow a video's renditions live until it is ready (exit 0), failed or canceled (exit 1)."""
    s = session(ctx)
    with s.client() as api, bars(s.err, disable=as_json) as progress:
        ending = _watch(api, progress, {"id": video_id} if as_json else api.video(video_id), as_json)
    _finish(s, video_id, *ending, as_json)
