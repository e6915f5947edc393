"""``vidq ls``, ``show``, ``download``, ``retry`` and ``rm``: the client's videos and their files."""

from __future__ import annotations

import sys
from contextlib import suppress
from pathlib import Path
from typing import IO, Annotated

import typer

from vidq import views
from vidq.client import Json, VidqClient
from vidq.errors import UsageProblem, VidqError
from vidq.options import JsonOutput
from vidq.progress import bars
from vidq.session import Session, session

_PAGE = 100  # the API's largest page


def list_videos(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(help="Only videos in this state: queued, processing, ready, failed, canceled."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    every: Annotated[bool, typer.Option("--all", help="Every video (follows the pages to the end).")] = False,
    as_json: JsonOutput = False,
) -> None:
    """List your videos, newest first."""
    s = session(ctx)
    with s.client() as api:
        page = api.videos(status=status, limit=min(limit, _PAGE))
        videos: list[Json] = list(page.get("data") or [])
        while page.get("next_cursor") and (every or len(videos) < limit):
            wanted = _PAGE if every else min(limit - len(videos), _PAGE)
            page = api.videos(status=status, limit=wanted, cursor=page["next_cursor"])
            videos.extend(page.get("data") or [])
    if as_json:
        views.emit_json({**page, "data": videos})
    elif videos:
        s.out.print(views.videos_table(videos))
    else:
        s.err.print("no videos" + (f" with status {status}" if status else ""))


def show(
    ctx: typer.Context,
    video_id: Annotated[str, typer.Argument(metavar="VIDEO_ID", help="The video (vid_…).")],
    as_json: JsonOutput = False,
) -> None:
    """Show one video: its source, renditions (with download URLs) and thumbnail."""
    s = session(ctx)
    with s.client() as api:
        video = api.video(video_id)
    if as_json:
        views.emit_json(video)
    else:
        views.print_video(s.out, video)


def _best(api: VidqClient, video_id: str) -> str:
    ready = [r for r in api.video(video_id).get("renditions") or [] if r.get("status") == "ready"]
    if not ready:
        raise VidqError(f"video {video_id} has no rendition ready yet (see vidq show {video_id})")
    best = max(ready, key=lambda r: int(r.get("height") or 0) * int(r.get("width") or 0))
    return str(best["quality"])


def _save(s: Session, api: VidqClient, video_id: str, quality: str, sink: IO[bytes]) -> int:
    written = 0
    with api.rendition(video_id, quality) as response, bars(s.err) as progress:
        total = int(response.headers.get("content-length") or 0) or None
        task = progress.add_task(quality, total=total, bytes=True, note="")
        for chunk in response.iter_bytes():
            sink.write(chunk)
            written += len(chunk)
            progress.update(task, completed=written)
    return written


def download(
    ctx: typer.Context,
    video_id: Annotated[str, typer.Argument(metavar="VIDEO_ID", help="The video (vid_…).")],
    quality: Annotated[
        str | None,
        typer.Option("--quality", "-q", help="The rendition, e.g. 720p (default: the largest ready)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File or folder to write (default: <id>-<quality>.mp4; - for stdout)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing file.")] = False,
) -> None:
    """Download a rendition's MP4, with a progress bar."""
    s = session(ctx)
    with s.client() as api:
        quality = quality or _best(api, video_id)
        name = f"{video_id}-{quality}.mp4"
        if output == Path("-"):
            _save(s, api, video_id, quality, sys.stdout.buffer)
            return
        target = output / name if output is not None and output.is_dir() else output or Path(name)
        if target.exists() and not force:
            raise UsageProblem(f"{target} exists; add --force to overwrite it")
        partial = target.with_name(f".{target.name}.part")
        try:
            with partial.open("wb") as sink:
                written = _save(s, api, video_id, quality, sink)
            partial.replace(target)
        except OSError as exc:
            raise VidqError(f"cannot write {target}: {exc.strerror or exc}") from exc
        finally:
            with suppress(OSError):
                partial.unlink(missing_ok=True)
    s.out.print(f"{target}  {views.size(written)}")


def remove(
    ctx: typer.Context,
    video_ids: Annotated[
        list[str], typer.Argument(metavar="VIDEO_ID", help="The videos (vid_…).", show_default=False)
    ],
) -> None:
    """Delete videos: work in flight is canceled, files are removed (a video.deleted event follows)."""
    s = session(ctx)
    with s.client() as api:
        for video_id in video_ids:
            api.delete_video(video_id)
            s.out.print(f"deleted {video_id}")


def retry(
    ctx: typer.Context,
    video_id: Annotated[str, typer.Argument(metavar="VIDEO_ID", help="The video (vid_…).")],
    parts: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PART",
            help="Renditions (720p, …) or 'thumbnail'; every failed one when none is named.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOutput = False,
) -> None:
    """Run a video's failed renditions or thumbnail again (the video is then processing again)."""
    s = session(ctx)
    with s.client() as api:
        video = api.video(video_id)
        if not parts:
            parts = [r["quality"] for r in video.get("renditions") or [] if r.get("status") == "failed"]
            if (video.get("thumbnail") or {}).get("status") == "failed":
                parts.append("thumbnail")
            if not parts:
                raise VidqError(f"{video_id} has no failed rendition or thumbnail to retry")
        for part in parts:
            video = (
                api.retry_thumbnail(video_id) if part == "thumbnail" else api.retry_rendition(video_id, part)
            )
            s.err.print(f"{part} queued again")
    if as_json:
        views.emit_json(video)
    else:
        views.print_video(s.out, video)
