"""Test clips made with ffmpeg's lavfi sources, each with exactly what a test needs.

``make_clip`` writes an H.264 MP4 from ``testsrc2`` (a moving pattern) and, with ``audio``, a
``sine`` tone; ``rotate`` adds display-rotation metadata as phones do. ``BIG_BUCK_BUNNY`` is the
real clip shipped with the tests (see ``tests/data/README.md``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
BIG_BUCK_BUNNY = DATA / "bigbuckbunny.mp4"


def make_clip(
    path: Path,
    *,
    width: int = 320,
    height: int = 240,
    duration: float = 1.0,
    fps: int = 25,
    audio: bool = True,
    rotate: int | None = None,
    mono: bool = False,
    sar: str | None = None,
) -> Path:
    """Write a clip to ``path`` and return it (``sar``: anamorphic pixels, e.g. ``"32/27"``)."""
    # odd sizes need a pixel format without chroma subsampling constraints; the graph must ask
    # for it too, or testsrc2 negotiates yuv420p and silently rounds the size down to even
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    argv = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate={fps}:duration={duration},format={pix_fmt}"
        + (f",setsar={sar}" if sar else ""),
    ]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={duration}"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", pix_fmt]
    if audio:
        argv += ["-c:a", "aac", "-ac", "1" if mono else "2"]
    target = path if rotate is None else path.with_suffix(".norot.mp4")
    subprocess.run([*argv, str(target)], check=True)
    if rotate is not None:
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-i",
                str(target),
                "-c",
                "copy",
                "-metadata:s:v:0",
                f"rotate={rotate}",
                str(path),
            ],
            check=True,
        )
        target.unlink()
    return path


def ffprobe(path: Path) -> dict[str, Any]:
    """ffprobe's JSON for ``path`` (format and streams)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def video_stream(info: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in info["streams"] if s["codec_type"] == "video")


def audio_stream(info: dict[str, Any]) -> dict[str, Any] | None:
    return next((s for s in info["streams"] if s["codec_type"] == "audio"), None)


def moov_before_mdat(path: Path) -> bool:
    """``+faststart``: the ``moov`` atom comes before ``mdat`` in the file."""
    data = path.read_bytes()
    moov, mdat = data.find(b"moov"), data.find(b"mdat")
    return 0 <= moov < mdat
