"""How results look: the API's JSON for scripts (``--json``), rich tables and panels for people.

JSON goes to stdout exactly as the API sent it; a single document is indented, a stream is one
compact document per line. Human views read the resource shapes of ``shared/resources.py``
tolerantly (``.get``), so a field the gateway adds later never breaks them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer
from rich.console import Console, Group, RenderableType
from rich.filesize import decimal
from rich.table import Column, Table
from rich.text import Text

Json = dict[str, Any]

_STYLES = {"ready": "green", "failed": "red", "canceled": "dim", "processing": "yellow", "queued": "blue"}
_MARKS = {"ready": "✓", "failed": "✗", "canceled": "-"}
_NO_WRAP = frozenset({"STATUS", "CREATED", "WHEN", "EVENT", "RENDITIONS"})


def emit_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def emit_line(raw: str) -> None:
    """One document of a JSON-lines stream, as received."""
    typer.echo(" ".join(raw.splitlines()))


def status(value: str | None) -> Text:
    return Text(value or "?", style=_STYLES.get(value or "", ""))


def when(value: str | None) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value


def size(value: int | None) -> str:
    return decimal(value) if value is not None else ""


_MINUTE, _HOUR = 60, 3600


def _ordinal(n: int) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th") if n % 100 // 10 != 1 else "th"
    return f"{n}{suffix}"


def seconds(value: float) -> str:
    if value < _MINUTE:
        return f"{value:.1f} s"
    whole = round(value)
    if whole >= _HOUR:
        return f"{whole // _HOUR} h {whole % _HOUR // _MINUTE} min"
    return f"{whole // _MINUTE} min {whole % _MINUTE} s"


def timing(rendition: Json, *, place: bool = True) -> str:
    """Its wait, its work left or the work it took (``3rd in line``, ``about 12.0 s left``).

    ``place=False`` leaves out its place in the queue: an event's copy tells where it was when
    the video was uploaded, not where it is now.
    """
    state, position = rendition.get("status"), rendition.get("queue_position")
    if place and state == "queued" and isinstance(position, int) and position > 0:
        return "next in line" if position == 1 else f"{_ordinal(position)} in line"
    eta, took = rendition.get("eta_s"), rendition.get("encode_seconds")
    if state == "processing" and isinstance(eta, int | float):
        return f"about {seconds(eta)} left"
    if state == "ready" and isinstance(took, int | float):
        return f"encoded in {seconds(took)}"
    return ""


def rungs(renditions: list[Json]) -> str:
    """``3/5 ready, 1 failed``: the renditions at a glance."""
    counts: dict[str, int] = {}
    for r in renditions:
        counts[r.get("status", "")] = counts.get(r.get("status", ""), 0) + 1
    summary = f"{counts.pop('ready', 0)}/{len(renditions)} ready"
    return ", ".join([summary, *(f"{n} {state}" for state, n in counts.items() if state != "queued")])


def _table(rows: list[Json], *headers: str) -> Table:
    """A plain table whose first column holds ids (never wrapped or cut: people copy them)."""
    width = max((len(str(r.get("id", ""))) for r in rows), default=2)
    table = Table(Column(headers[0], no_wrap=True, min_width=width), box=None, pad_edge=False)
    for header in headers[1:]:
        table.add_column(header, no_wrap=header in _NO_WRAP, overflow="fold")
    return table


def videos_table(videos: list[Json]) -> Table:
    table = _table(videos, "ID", "STATUS", "CREATED", "RENDITIONS", "FILE")
    for v in videos:
        source = v.get("source") or {}
        table.add_row(
            v.get("id", ""),
            status(v.get("status")),
            when(v.get("created_at")),
            rungs(v.get("renditions") or [])
            + (f", {v['progress']:.0f} %" if v.get("status") == "processing" and "progress" in v else ""),
            f"{source.get('filename', '')} ({source.get('duration_s', 0):.1f}s)",
        )
    return table


def renditions_table(renditions: list[Json]) -> Table:
    table = Table("QUALITY", "STATUS", "PROGRESS", "RESOLUTION", "SIZE", box=None, pad_edge=False)
    for r in renditions:
        status_cell = status(r.get("status"))
        if told := timing(r):
            status_cell.append(f" ({told})", style="dim")
        if r.get("error"):
            status_cell.append(f" ({r['error']})")
        table.add_row(
            r.get("quality", ""),
            status_cell,
            f"{r.get('progress', 0):.0f}%",
            f"{r.get('width')}x{r.get('height')}",
            size(r.get("size_bytes")),
        )
    return table


def video_view(video: Json) -> RenderableType:
    source = video.get("source") or {}
    thumbnail = video.get("thumbnail") or {}
    facts = Table.grid(padding=(0, 2))
    facts.add_column()
    facts.add_column(overflow="fold")
    facts.add_row("id", video.get("id", ""))
    state = status(video.get("status"))
    if video.get("status") == "processing" and isinstance(video.get("progress"), int | float):
        state.append(f"  {video['progress']:.0f} %", style="dim")
        if isinstance(video.get("eta_s"), int | float):
            state.append(f", about {seconds(video['eta_s'])} left", style="dim")
    facts.add_row("status", state)
    if video.get("error"):
        facts.add_row("error", Text(video["error"], style="red"))
    facts.add_row("created", when(video.get("created_at")))
    facts.add_row(
        "source",
        f"{source.get('filename', '')}  {size(source.get('size_bytes'))}  "
        f"{source.get('width')}x{source.get('height')}  {source.get('duration_s', 0):.1f}s  "
        f"{source.get('video_codec', '')}{'/' + source['audio_codec'] if source.get('audio_codec') else ''}",
    )
    thumb = status(thumbnail.get("status"))
    if thumbnail.get("widths"):
        thumb.append(f"  {', '.join(str(w) for w in thumbnail['widths'])} px wide")
    facts.add_row("thumbnail", thumb)
    if video.get("metadata"):
        facts.add_row("metadata", json.dumps(video["metadata"], ensure_ascii=False))
    parts: list[RenderableType] = [facts, Text(""), renditions_table(video.get("renditions") or [])]
    if any(r.get("status") == "ready" for r in video.get("renditions") or []):
        parts.append(Text(f"\nget one: vidq download {video.get('id')} --quality QUALITY", style="dim"))
    return Group(*parts)


def print_video(console: Console, video: Json) -> None:
    """The video (:func:`video_view`), then its signed links, one line each and never broken.

    A link cut in two by a narrow terminal or a pipe (80 columns) is not a link once copied:
    printed with ``soft_wrap``, the terminal wraps it for the eye only.
    """
    console.print(video_view(video))
    signed = [
        (r.get("quality", ""), r["signed_url"]) for r in video.get("renditions") or [] if r.get("signed_url")
    ]
    if signed:
        console.print(Text("\nlinks that play without a key, until they expire:", style="dim"))
        width = max(len(quality) for quality, _ in signed)
        for quality, link in signed:
            console.print(f"{quality:<{width}}  {link}", soft_wrap=True, markup=False)


def webhooks_table(hooks: list[Json]) -> Table:
    table = _table(hooks, "ID", "URL", "EVENTS", "ENABLED", "DESCRIPTION")
    for h in hooks:
        enabled = Text("yes", style="green") if h.get("enabled") else Text("no", style="red")
        if h.get("disabled_reason"):
            enabled.append(f" ({h['disabled_reason']})")
        table.add_row(
            h.get("id", ""),
            h.get("url", ""),
            ",".join(h.get("events") or []),
            enabled,
            h.get("description", ""),
        )
    return table


def deliveries_table(deliveries: list[Json]) -> Table:
    table = _table(deliveries, "ID", "EVENT", "VIDEO", "STATUS", "ATTEMPTS", "LAST", "WHEN")
    styles = {"succeeded": "green", "failed": "red", "pending": "yellow"}
    for d in deliveries:
        last = str(d.get("last_status_code") or d.get("last_error") or "")
        table.add_row(
            d.get("id", ""),
            d.get("event_type", ""),
            d.get("video_id", ""),
            Text(d.get("status", ""), style=styles.get(d.get("status", ""), "")),
            str(d.get("attempts", 0)),
            last,
            when(d.get("completed_at") or d.get("next_attempt_at") or d.get("created_at")),
        )
    return table
