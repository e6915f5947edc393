"""ffprobe and ffmpeg as asyncio subprocesses, with their failures mapped to vidq errors.

* :func:`probe` → :class:`ProbeResult`, or :class:`~shared.errors.InvalidSource` saying why the
  file is not a usable video (audio only, a still image, no duration, unreadable).
* :func:`run` runs an ffmpeg command built elsewhere (ffmpeg-python builds them), reads its
  ``-progress pipe:1`` output, and kills it on cancellation, on a stall (no progress for
  ``stall_timeout`` seconds) or past ``timeout``. Exit status != 0 → ``EncodeFailed`` with the
  end of stderr; killed or timed out → ``TransientError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import re
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from shared.errors import EncodeFailed, InvalidSource, TransientError
from shared.ladder import display_size

log = logging.getLogger(__name__)

#: A start time past this, in a container without stream durations, is checked (:func:`with_tail`).
_LATE_START_S = 0.5
_STILL_IMAGE_FORMATS = {"image2", "mjpeg", "gif_pipe", "apng"}
_STDERR_TAIL = 4000
#: The address ffmpeg logs beside a component's name (``[mov,mp4,… @ 0x55d0c0ffee00]``): noise to
#: a reader of an error, and different in every run.
_LOG_ADDRESS = re.compile(r" @ 0x[0-9a-fA-F]+\]")


def tidy(line: str) -> str:
    """One line of ffmpeg's log as a client may read it: without the component's memory address."""
    return _LOG_ADDRESS.sub("]", line)


#: Lines ffmpeg writes after the cause of a failure, true and no help to a reader of it.
_AFTERMATH = (
    "Error marking filters as finished",
    "Conversion failed!",
    "Error while filtering",
    "Error while processing the decoded data",
    "Failed to inject frame into filter network",
    "Error sending frames to consumers",
    "Nothing was written into output file",
    "Finishing stream",
    "Error closing",
    "Error flushing",
    "Last message repeated",
)


def telling(lines: Sequence[str]) -> str:
    """The line of ffmpeg's log that says best what went wrong (pure).

    A source that ends before its index says it does names the offset it could not read
    ("partial file"); otherwise the cause is the last line before ffmpeg's aftermath of it
    ("Error marking filters as finished", "Conversion failed!").
    """
    for line in lines:
        if "partial file" in line:
            return line
    for line in reversed(lines):
        if not any(marker in line for marker in _AFTERMATH):
            return line
    return lines[-1] if lines else "no message"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What vidq needs to know about a source. ``width``/``height`` are as stored."""

    format_name: str
    duration_s: float
    width: int
    height: int
    rotation: int
    video_codec: str
    pix_fmt: str | None
    frame_rate: float | None
    audio_codec: str | None
    bit_rate: int | None = None
    #: The stored pixels' shape (``sample_aspect_ratio``): 1 but for anamorphic sources.
    sample_aspect: Fraction = Fraction(1)

    @property
    def display_width(self) -> int:
        return display_size(self.width, self.height, self.rotation, self.sample_aspect)[0]

    @property
    def display_height(self) -> int:
        return display_size(self.width, self.height, self.rotation, self.sample_aspect)[1]

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return round(float(side["rotation"])) % 360
    rotate = (stream.get("tags") or {}).get("rotate")
    return round(float(rotate)) % 360 if rotate else 0


def _sample_aspect(text: str | None) -> Fraction:
    """``"32:27"`` → 32/27; ``"0:1"`` (unknown), absent or absurd → 1 (square pixels)."""
    num, _, den = (text or "").partition(":")
    try:
        value = Fraction(int(num), int(den))
    except (ValueError, ZeroDivisionError):
        return Fraction(1)
    return value if Fraction(1, 10) <= value <= 10 else Fraction(1)  # noqa: PLR2004


def _rate(text: str | None) -> float | None:
    try:
        value = Fraction(text or "0/0")
    except (ValueError, ZeroDivisionError):
        return None
    return round(float(value), 3) if value > 0 else None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _duration(fmt: dict[str, Any], streams: list[dict[str, Any]]) -> float | None:
    """How long the source plays, as an encode of it will: from its first timestamp to its last.

    That is the container's duration, except where the container counts it from zero although
    the media starts later (an MP4 with an empty edit or cut with ``-ss … -c copy``, timestamps
    offset by ``-output_ts_offset``): ffmpeg's outputs start at zero, so a source whose streams
    start 10 s in and play 2 s is 2 s long, not the 12 s MP4 declares. The streams' own
    durations tell; a container without them (Matroska) is read at its end (:func:`with_tail`).
    """
    declared = _float(fmt.get("duration"))
    start = _float(fmt.get("start_time")) or 0.0
    lengths = [d for d in (_float(s.get("duration")) for s in streams) if d and d > 0]
    if declared and lengths and start > 0 and declared > max(lengths) + start / 2:
        return max(lengths)
    return declared or (max(lengths) if lengths else None)


def parse_probe(data: dict[str, Any]) -> ProbeResult:
    """Interpret ``ffprobe -show_format -show_streams -of json`` output (pure)."""
    streams = data.get("streams") or []
    fmt = data.get("format") or {}
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos:
        if audios:
            raise InvalidSource("the file has audio but no video stream")
        raise InvalidSource("no video stream found")
    format_name = str(fmt.get("format_name", ""))
    if format_name in _STILL_IMAGE_FORMATS or format_name.endswith("_pipe"):
        raise InvalidSource(f"a still image ({format_name}), not a video")
    video = videos[0]
    for kind, stream in (("video", video), *((("audio", audios[0]),) if audios else ())):
        if stream.get("codec_name") in (None, "", "unknown", "none"):  # it names every codec it can decode
            tag = stream.get("codec_tag_string") or "?"
            raise InvalidSource(f"the {kind} stream is in a format ffmpeg cannot decode (codec tag {tag})")
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width <= 0 or height <= 0:
        raise InvalidSource("the video stream has no frame size")
    duration = _duration(fmt, [video, *audios])
    if not duration or duration <= 0:
        raise InvalidSource("the video has no duration (a single frame, or truncated)")
    return ProbeResult(
        format_name=format_name,
        duration_s=round(duration, 3),
        width=width,
        height=height,
        rotation=_rotation(video),
        video_codec=str(video.get("codec_name", "unknown")),
        pix_fmt=video.get("pix_fmt"),
        frame_rate=_rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        audio_codec=str(audios[0].get("codec_name", "unknown")) if audios else None,
        bit_rate=int(fmt["bit_rate"]) if str(fmt.get("bit_rate", "")).isdigit() else None,
        sample_aspect=_sample_aspect(video.get("sample_aspect_ratio")),
    )


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the service that started it dies.

    A service killed outright (``kill -9``, the OOM killer) cannot stop its ffmpeg, which would
    otherwise encode to the end for nobody while the job's next owner encodes it again (ffmpeg
    ignores the closing of its progress pipe). Linux's ``PR_SET_PDEATHSIG``, through ctypes: no
    library offers it; the function is looked up in the parent, so the child only calls it.
    """
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


_PR_SET_PDEATHSIG = 1
_prctl: Any = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


async def _spawn(argv: list[str]) -> asyncio.subprocess.Process:
    """Start ``argv`` with stdout and stderr piped; a missing binary is a transient error."""
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )
    except FileNotFoundError as exc:
        raise TransientError(f"{argv[0]} is not installed") from exc


async def _communicate(argv: list[str], timeout: float) -> tuple[int, bytes, bytes]:
    proc = await _spawn(argv)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out, err


async def probe(path: Path, *, timeout: float = 60.0, ffprobe: str = "ffprobe") -> ProbeResult:
    """Probe a local file.

    Raises:
        InvalidSource: the file is not a usable video (the message says why).
        TransientError: ffprobe is missing or timed out.
    """
    argv = [ffprobe, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)]
    try:
        code, out, err = await _communicate(argv, timeout)
    except TimeoutError as exc:
        raise TransientError(f"ffprobe did not finish within {timeout:.0f} s") from exc
    if code != 0:
        raise InvalidSource(_probe_refusal(err.decode(errors="replace"), path, code))
    try:
        data = json.loads(out)
    except json.JSONDecodeError as exc:
        raise InvalidSource("ffprobe gave unreadable output") from exc
    if _offset_unknown(data):
        data = with_tail(data, await _tail_packets(path, timeout, ffprobe))
    return parse_probe(data)


#: ffprobe's last line when it cannot read a file as media at all (no format it knows, or a
#: format whose header it cannot parse).
_UNREADABLE = ("Invalid data found when processing input", "Invalid argument")


def _probe_refusal(stderr: str, path: Path, code: int) -> str:
    """Why ffprobe refused a file, as the client reads it (the upload's 422 ``detail``).

    ffprobe ends with ``<path>: <strerror>``; a line before it, if any, says what was wrong
    (``moov atom not found``), which is worth passing on.
    """
    lines = [tidy(line.strip()).removeprefix(f"{path}: ") for line in stderr.strip().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return f"not a video file ffmpeg can read (ffprobe exited with status {code})"
    if lines[-1] not in _UNREADABLE:
        return lines[-1]
    cause = re.sub(r"^\[[^\]]*\]\s*", "", lines[-2]) if len(lines) > 1 else ""
    return f"not a video file ffmpeg can read ({cause})" if cause else "not a video file ffmpeg can read"


def _offset_unknown(data: dict[str, Any]) -> bool:
    """Media that starts late in a container whose streams carry no durations (Matroska)."""
    start = _float((data.get("format") or {}).get("start_time")) or 0.0
    durations = [_float(s.get("duration")) for s in data.get("streams") or []]
    return start > _LATE_START_S and not any(d and d > 0 for d in durations)


async def _tail_packets(path: Path, timeout: float, ffprobe: str) -> list[dict[str, Any]]:
    """The last packets of the file (a seek to its end: cheap with an index, as Matroska has)."""
    argv = [ffprobe, "-v", "error", "-read_intervals", "999999999%", "-show_entries"]
    argv += ["packet=pts_time,duration_time", "-of", "json", str(path)]
    try:
        code, out, _ = await _communicate(argv, timeout)
        if code != 0:
            return []
        packets: list[dict[str, Any]] = json.loads(out).get("packets") or []
    except (TimeoutError, json.JSONDecodeError):
        return []  # the declared duration stands
    return packets


def with_tail(data: dict[str, Any], packets: list[dict[str, Any]]) -> dict[str, Any]:
    """``data`` with the duration its last packets show, where the container counted from zero.

    Matroska written with a start offset declares the time of its last frame as its duration
    (12 s for 2 s of media from 10 s on); an encode starts at zero and plays 2 s. Only a
    declared duration that matches the last timestamp, not the length, is replaced (pure).
    """
    fmt = data.get("format") or {}
    start, declared = _float(fmt.get("start_time")) or 0.0, _float(fmt.get("duration"))
    ends = [
        (_float(p.get("pts_time")) or 0.0) + (_float(p.get("duration_time")) or 0.0)
        for p in packets
        if _float(p.get("pts_time")) is not None
    ]
    if not ends or declared is None:
        return data
    length = max(ends) - start
    if length <= 0 or abs(declared - max(ends)) >= abs(declared - length):
        return data
    return {**data, "format": {**fmt, "duration": f"{length:.6f}"}}


@dataclass(frozen=True, slots=True)
class Progress:
    """One block of ffmpeg's ``-progress`` output."""

    out_time_s: float
    speed: float | None
    frame: int | None
    done: bool


def parse_progress_block(fields: dict[str, str]) -> Progress:
    """Turn the ``key=value`` lines of one progress block into a :class:`Progress` (pure)."""
    micros = fields.get("out_time_us") or fields.get("out_time_ms") or "0"
    try:
        out_time = max(0.0, int(micros) / 1_000_000)
    except ValueError:
        out_time = 0.0
    speed_text = fields.get("speed", "").strip().rstrip("x")
    frame_text = fields.get("frame", "")
    return Progress(
        out_time_s=out_time,
        speed=_float(speed_text) if speed_text not in ("", "N/A") else None,
        frame=int(frame_text) if frame_text.isdigit() else None,
        done=fields.get("progress") == "end",
    )


OnProgress = Callable[[Progress], Awaitable[None]]


class _Watch:
    def __init__(self) -> None:
        self.last_progress = asyncio.get_running_loop().time()
        self.stderr: deque[str] = deque(maxlen=200)


async def _read_progress(stream: asyncio.StreamReader, watch: _Watch, on_progress: OnProgress | None) -> None:
    fields: dict[str, str] = {}
    async for raw in stream:
        key, _, value = raw.decode(errors="replace").strip().partition("=")
        fields[key] = value
        if key == "progress":
            watch.last_progress = asyncio.get_running_loop().time()
            if on_progress is not None:
                await on_progress(parse_progress_block(fields))
            fields = {}


async def _read_stderr(stream: asyncio.StreamReader, watch: _Watch) -> None:
    async for raw in stream:
        line = tidy(raw.decode(errors="replace").rstrip())
        if line:
            watch.stderr.append(line)


async def _supervise(
    readers: asyncio.Future[Any], watch: _Watch, timeout: float | None, stall_timeout: float | None
) -> str | None:
    """Wait for ffmpeg's output to end; return why it must be killed, if it must."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    tick = 1.0 if stall_timeout is None else min(1.0, stall_timeout / 4)
    while not readers.done():
        await asyncio.wait({readers}, timeout=tick)
        now = loop.time()
        if timeout is not None and now - started > timeout:
            return f"ffmpeg ran past its {timeout:.0f} s limit"
        if stall_timeout is not None and now - watch.last_progress > stall_timeout:
            return f"ffmpeg made no progress for {stall_timeout:.0f} s"
    readers.result()  # a failing progress callback surfaces here
    return None


async def run(
    argv: list[str],
    *,
    timeout: float | None = None,
    stall_timeout: float | None = None,
    on_progress: OnProgress | None = None,
) -> list[str]:
    """Run ffmpeg to completion and return the last lines it wrote to stderr (its warnings).

    See the module docstring for what each failure raises.
    """
    proc = await _spawn(argv)
    assert proc.stdout is not None  # noqa: S101 - PIPE given above
    assert proc.stderr is not None  # noqa: S101
    watch = _Watch()
    readers = asyncio.gather(
        _read_progress(proc.stdout, watch, on_progress), _read_stderr(proc.stderr, watch)
    )
    try:
        killed_for = await _supervise(readers, watch, timeout, stall_timeout)
        if killed_for is not None:
            with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
                proc.kill()
        code = await proc.wait()
    except BaseException:
        # Canceled (video deleted, lease lost, shutdown) or a progress callback failed:
        # never leave an ffmpeg running behind us.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    finally:
        readers.cancel()
        with contextlib.suppress(BaseException):
            await readers
    if killed_for is not None:
        raise TransientError(killed_for)
    if code < 0:
        raise TransientError(f"ffmpeg was killed by signal {-code}")
    if code != 0:
        tail = "\n".join(watch.stderr)[-_STDERR_TAIL:]
        raise EncodeFailed(f"ffmpeg exited with status {code}: {telling(watch.stderr)}", stderr_tail=tail)
    return list(watch.stderr)
