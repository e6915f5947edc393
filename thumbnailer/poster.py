"""Pure functions for the poster: when to look, which widths, and the ffmpeg command.

The frame is representative, not the first and not random: ffmpeg's ``thumbnail`` filter picks,
among a batch of frames starting a quarter of the way in (past intros and fades), the one whose
colour histogram is closest to the batch average, i.e. the most typical picture. One ffmpeg run
decodes once and writes every width.
"""

from __future__ import annotations

from pathlib import Path

import ffmpeg

from shared.ladder import even

WIDTHS = (1280, 640, 320)
#: Frames the ``thumbnail`` filter compares (about two seconds of video).
BATCH = 50


def timestamp(duration_s: float) -> float:
    """Where the batch of candidate frames starts: a quarter of the way in."""
    return round(max(0.0, duration_s) * 0.25, 3)


def sizes(display_width: int, display_height: int) -> list[tuple[int, int]]:
    """Widths 1280/640/320 that do not upscale (the source width alone if it is smaller)."""
    widths = [w for w in WIDTHS if w <= display_width] or [even(display_width)]
    return [(w, even(w * display_height / display_width)) for w in widths]


def argv(source: str, at_s: float, outputs: list[tuple[int, int, Path]]) -> list[str]:
    """One ffmpeg run: seek to ``at_s``, pick the representative frame, write each size."""
    frame = ffmpeg.input(source, ss=at_s).video.filter("thumbnail", BATCH)
    copies = frame.filter_multi_output("split", len(outputs))
    streams = [
        copies.stream(i)
        .filter("scale", w, h)
        .output(str(path), vframes=1, update=1, **{"q:v": 3, "f": "image2"})
        for i, (w, h, path) in enumerate(outputs)
    ]
    merged = ffmpeg.merge_outputs(*streams).global_args(
        "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1"
    )
    return list(merged.compile(cmd="ffmpeg", overwrite_output=True))
