"""Pure functions: the ffmpeg command for one rendition, and progress as a percentage.

Output per SPEC: MP4, H.264 ``yuv420p``, AAC stereo when the source has audio, ``+faststart``,
the exact even frame size planned by the ladder (so the aspect ratio is kept), the source's
duration. ffmpeg auto-rotates the input, so frames arrive in display orientation and are scaled
to the display size. Rate control is constrained quality: ``-crf`` with a per-rung ``-maxrate``
cap, so simple scenes cost few bytes and complex ones cannot blow past the rung's budget.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import ffmpeg

from shared.commands import TranscodeRendition
from shared.ladder import Quality

#: Video bitrate cap per rung, in kbit/s (≈ common streaming ladders at 30 fps).
MAXRATE_KBPS: dict[Quality, int] = {
    Quality.P2160: 16000,
    Quality.P1440: 9000,
    Quality.P1080: 5000,
    Quality.P720: 2800,
    Quality.P480: 1400,
    Quality.P360: 800,
    Quality.P240: 400,
    Quality.P144: 200,
}
AUDIO_KBPS = 128


@dataclass(frozen=True, slots=True)
class EncodeProfile:
    preset: str = "veryfast"
    crf: int = 23
    threads: int = 0
    realtime: bool = False


def argv(source: str, output: str, cmd: TranscodeRendition, profile: EncodeProfile) -> list[str]:
    """The ffmpeg command line that encodes ``cmd`` from ``source`` into ``output``."""
    return argv_many(source, [(output, cmd)], profile)


def argv_many(
    source: str, outputs: list[tuple[str, TranscodeRendition]], profile: EncodeProfile
) -> list[str]:
    """One ffmpeg command that decodes ``source`` once and encodes every rendition of ``outputs``.

    The decoded frames are split, then each branch is scaled and encoded on its own; the audio
    is decoded and encoded once, for all of them. Against one ffmpeg per rendition this saves a
    decode of the source per extra rendition (about a fifth of the CPU for a 1080p source and
    five rungs), and an AAC encode per extra rendition (another fifth: every rung carries the
    same 128 kbit/s stereo track). The files carry what one ffmpeg per rendition would write: the
    same audio, byte for byte, and the same video (byte for byte too on a quiet machine; x264
    with a bitrate cap and several threads varies its bits slightly from run to run under load).
    """
    inp = ffmpeg.input(source, **({"re": None} if profile.realtime else {}))
    if len(outputs) == 1:
        ((output, cmd),) = outputs
        stream = ffmpeg.output(*_rendition(inp, inp.video, cmd), output, **_options(cmd, profile))
    else:
        stream = _tee(inp, outputs, profile)
    return list(
        stream.global_args(
            "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1", "-stats_period", "1"
        ).compile(cmd="ffmpeg", overwrite_output=True)
    )


def _tee(inp: Any, outputs: list[tuple[str, TranscodeRendition]], profile: EncodeProfile) -> Any:
    """Every rendition's video, and the audio once, into ffmpeg's ``tee`` muxer.

    The tee hands each file its own video stream and the shared audio stream (``select``); the
    encoders are those of the one output, so per-rung options name their stream (``maxrate:v:2``)
    and the headers the MP4 muxer needs are asked for explicitly (``global_header``), as the tee
    muxer cannot tell the encoders itself.
    """
    split = inp.video.filter_multi_output("split", len(outputs))
    videos = [_rendition(inp, split.stream(i), cmd)[0] for i, (_, cmd) in enumerate(outputs)]
    has_audio = any(cmd.has_audio for _, cmd in outputs)
    options: dict[str, object] = {
        "f": "tee",
        "flags": "+global_header",
        **{k: v for k, v in _options(outputs[0][1], profile).items() if k not in _PER_FILE},
    }
    for i, (_, cmd) in enumerate(outputs):
        options.update(_cap(cmd, f":v:{i}"))
    files = "|".join(
        f"[select=\\'v:{i}{',a' if cmd.has_audio else ''}\\':f=mp4:movflags=+faststart]{_tee_escape(path)}"
        for i, (path, cmd) in enumerate(outputs)
    )
    return ffmpeg.output(*videos, *([_audio(inp)] if has_audio else []), files, **options)


#: Options of one file that the tee gives each of its files instead (or per stream).
_PER_FILE = frozenset({"f", "movflags", "maxrate", "bufsize"})


def _tee_escape(path: str) -> str:
    """A file name as the tee muxer reads it: absolute, its special characters escaped."""
    return re.sub(r"([\\'|\[\]\s])", r"\\\1", os.path.abspath(path))


def _rendition(inp: Any, branch: Any, cmd: TranscodeRendition) -> list[Any]:
    video = (
        branch.filter("scale", cmd.width, cmd.height, flags="bicubic")
        .filter("setsar", "1")
        .filter("format", "yuv420p")
    )
    return [video, _audio(inp)] if cmd.has_audio else [video]


def _audio(inp: Any) -> Any:
    """The source's first audio stream, the one the probe describes: a rendition has one track."""
    return inp["a:0"]


def _cap(cmd: TranscodeRendition, stream: str = "") -> dict[str, object]:
    """The rung's bitrate cap (``-maxrate``, with a buffer of twice it), for ``stream`` if named."""
    maxrate = MAXRATE_KBPS[cmd.quality]
    return {f"maxrate{stream}": f"{maxrate}k", f"bufsize{stream}": f"{2 * maxrate}k"}


def _options(cmd: TranscodeRendition, profile: EncodeProfile) -> dict[str, object]:
    options: dict[str, object] = {
        "f": "mp4",
        "c:v": "libx264",
        "preset": profile.preset,
        "crf": profile.crf,
        **_cap(cmd),
        "profile:v": "high",
        "movflags": "+faststart",
        "map_metadata": -1,
    }
    if cmd.has_audio:
        options.update({"c:a": "aac", "b:a": f"{AUDIO_KBPS}k", "ac": 2})
    if profile.threads:
        options["threads"] = profile.threads
    return options


def percent(out_time_s: float, duration_s: float) -> float:
    """Progress of an encode, 0–99.9 (100 is reported only by ``rendition.completed``)."""
    if duration_s <= 0:
        return 0.0
    return round(min(99.9, max(0.0, out_time_s / duration_s * 100)), 1)
