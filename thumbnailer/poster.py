"""Pure functions for the poster: when to look, which widths, and the ffmpeg command.

The frame is representative, not the first and not random: ffmpeg's ``thumbnail`` filter picks,
among a batch of frames starting a quarter of the way in (past intros and fades), the one whose
colour histogram is closest to the batch average, i.e. the most typical picture. The candidates
are key frames only (``-skip_frame nokey``): the decoder skips every other frame, so the poster
of a 1080p video costs a tenth of the CPU of decoding a batch of consecutive frames from the
previous key frame on (docs/benchmarks.md), and never competes with the encodes for long; key
frames are also the encoder's sharpest pictures, and they span more of the video. A video with no
key frame after that point (a short one with long groups of pictures) is looked at again, every
frame this time, then decoded from the start up to that point (a seek in a file without an index,
such as MPEG-TS, can land past its only key frame), and last from its first frame (a video of
one frame) (:func:`attempts`). A short, small video is looked at frame by frame at once:
its frames decode so cheaply that the whole look costs about as much as starting ffmpeg, and
a first pass among key frames would mostly find none (docs/benchmarks.md, "Many small jobs").
One ffmpeg run decodes once and writes every width.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import ffmpeg

from shared.ladder import even

WIDTHS = (1280, 640, 320)
#: Key frames the ``thumbnail`` filter compares (fewer when the video has fewer after the start).
BATCH = 50


def timestamp(duration_s: float) -> float:
    """Where the batch of candidate frames starts: a quarter of the way in."""
    return round(max(0.0, duration_s) * 0.25, 3)


#: Up to this many pixels a frame, and this many seconds, every frame is looked at straight away.
CHEAP_PIXELS = 640 * 360
CHEAP_DURATION_S = 10.0


class Look(NamedTuple):
    """One try at the poster: from where, and how the frames are read."""

    at_s: float
    key_frames_only: bool
    #: Decode from the start and drop the frames before ``at_s`` (``trim``) instead of seeking:
    #: for a file whose seek lands past the key frame it needs (MPEG-TS has no index, and a short
    #: one may have a single key frame, at the start).
    from_start: bool = False


def attempts(duration_s: float, width: int, height: int) -> list[Look]:
    """Where and how to look, in order, until a frame comes out.

    The last resort looks from the very start, every frame: a video of one frame has nothing
    else to show (its only picture is the poster, frame 0 or not).
    """
    at_s = timestamp(duration_s)
    last = [Look(at_s, key_frames_only=False, from_start=True), Look(0.0, key_frames_only=False)]
    if width * height <= CHEAP_PIXELS and duration_s <= CHEAP_DURATION_S:
        return [Look(at_s, key_frames_only=False), *last]
    return [Look(at_s, key_frames_only=True), Look(at_s, key_frames_only=False), *last]


def sizes(display_width: int, display_height: int) -> list[tuple[int, int]]:
    """Widths 1280/640/320 that do not upscale (the source width alone if it is smaller)."""
    widths = [w for w in WIDTHS if w <= display_width] or [even(display_width)]
    return [(w, even(w * display_height / display_width)) for w in widths]


def argv(source: str, look: Look, outputs: list[tuple[int, int, Path]]) -> list[str]:
    """One ffmpeg run: go to ``look.at_s``, pick the representative frame, write each size."""
    skip = {"skip_frame": "nokey"} if look.key_frames_only else {}
    if look.from_start:
        video = ffmpeg.input(source, **skip).video.filter("trim", start=look.at_s)
    else:
        video = ffmpeg.input(source, ss=look.at_s, **skip).video
    frame = video.filter("thumbnail", BATCH)
    copies = frame.filter_multi_output("split", len(outputs))
    streams = [
        copies.stream(i)
        .filter("scale", w, h)
        .filter("setsar", "1")  # square pixels, as the sizes are (an anamorphic source's too)
        .output(str(path), vframes=1, update=1, **{"q:v": 3, "f": "image2"})
        for i, (w, h, path) in enumerate(outputs)
    ]
    merged = ffmpeg.merge_outputs(*streams).global_args(
        "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1"
    )
    return list(merged.compile(cmd="ffmpeg", overwrite_output=True))
