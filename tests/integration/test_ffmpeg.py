"""The real ffmpeg through vidq's own code: probe, encode, watchdogs and posters.

Every case writes small lavfi clips (or uses the shipped ``BIG_BUCK_BUNNY``) under ``tmp_path``,
runs the production argv builders with :func:`shared.ffmpeg.run`, and asserts on what ffprobe
reads back from the files, i.e. what a player would see.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.commands import TranscodeRendition
from shared.errors import EncodeFailed, InvalidSource, TransientError
from shared.ffmpeg import ProbeResult, Progress, probe, run
from shared.ladder import PlannedRendition, Quality, plan
from shared.messaging.memory import InMemoryPublisher
from shared.messaging.topology import build
from shared.storage import LocalStorage, rendition_key, source_key
from tests.media import (
    BIG_BUCK_BUNNY,
    audio_stream,
    ffprobe,
    make_clip,
    moov_before_mdat,
    video_stream,
)
from tests.settings import make
from tests.unit.transcoder.fakes import FakeClaims
from thumbnailer import poster
from transcoder.claims import Job
from transcoder.encode import EncodeProfile, argv, argv_many
from transcoder.handlers import Encoder, TranscoderDeps, check_complete, encode_batch
from transcoder.runner import JobRunner
from transcoder.settings import TranscoderSettings

pytestmark = pytest.mark.ffmpeg

FAST = EncodeProfile(preset="ultrafast")
#: SPEC: "Duration within 0.1 s of the source".
DURATION_TOLERANCE_S = 0.1


# --- helpers ----------------------------------------------------------------------------------


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def make_audio_only(path: Path, duration: float = 1.0) -> Path:
    """An AAC-in-MP4 file with no video stream (a podcast upload)."""
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}", "-c:a", "aac", str(path))
    return path


def make_png(path: Path) -> Path:
    """A single-frame PNG still image."""
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", str(path))
    return path


def make_black_then_pattern(path: Path, *, black_s: float = 1.0, pattern_s: float = 3.0) -> Path:
    """A clip whose first ``black_s`` seconds are solid black, then a moving pattern."""
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"color=c=black:size=320x240:rate=25:duration={black_s}",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=320x240:rate=25:duration={pattern_s}",
        "-filter_complex",
        "[0:v][1:v]concat=n=2:v=1:a=0",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(path),
    )
    return path


def truncate(source: Path, target: Path, fraction: float) -> Path:
    """Copy the first ``fraction`` of ``source``'s bytes (an interrupted upload)."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def mean_luma(image: Path) -> float:
    """The mean luma (0–255) of the first frame of ``image``, decoded by ffmpeg to raw gray."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(image),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert raw, f"ffmpeg decoded nothing from {image}"
    return sum(raw) / len(raw)


def gray_frame(video: Path, at_s: float, side: int = 64) -> bytes:
    """The frame at ``at_s`` as displayed (ffmpeg auto-rotates), squeezed to ``side``² gray."""
    return subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-ss",
            str(at_s),
            "-i",
            str(video),
            "-frames:v",
            "1",
            "-vf",
            f"scale={side}:{side}:flags=area",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout


def mean_abs_diff(a: bytes, b: bytes) -> float:
    assert a
    assert len(a) == len(b)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def rotation_of(stream: dict[str, Any]) -> int:
    """The display rotation a player would apply: display matrix side data or ``rotate`` tag."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return round(float(side["rotation"])) % 360
    return round(float((stream.get("tags") or {}).get("rotate", 0))) % 360


def command_for(planned: PlannedRendition, *, has_audio: bool, duration_s: float) -> TranscodeRendition:
    return TranscodeRendition(
        job_id="job_test",
        video_id="vid_0123456789abcdef",
        quality=planned.quality,
        width=planned.width,
        height=planned.height,
        has_audio=has_audio,
        duration_s=duration_s,
    )


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may contain spaces, so split after the last ")"
    return int(stat.rsplit(")", 1)[1].split()[1])


def our_ffmpeg_children(marker: str) -> list[int]:
    """Pids of processes whose parent is this test process and whose argv contains ``marker``.

    ``run`` does not expose its child's pid, so the tests find the child in ``/proc``: its
    parent is us (``create_subprocess_exec`` forks directly) and its command line holds a path
    unique to the test (``tmp_path``), so no other ffmpeg on the machine can match.
    """
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and _ppid(int(entry.name)) == me:
            found.append(int(entry.name))
    return found


def process_exists(pid: int) -> bool:
    """True while ``pid`` is in the process table, zombies included (not yet reaped)."""
    return Path(f"/proc/{pid}").exists()


async def wait_for_child(marker: str, within_s: float = 10.0) -> int:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        pids = our_ffmpeg_children(marker)
        if pids:
            return pids[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no ffmpeg child with {marker!r} appeared within {within_s} s")


def endless_argv(sink: Path, *, stats_period: int) -> list[str]:
    """An ffmpeg that runs for a minute at real-time speed and writes nothing (``-f null``).

    ``sink`` is never opened (the null muxer takes no file) but makes the command line unique.
    The first progress block comes as soon as the output starts, the next one ``stats_period``
    seconds later.
    """
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-progress",
        "pipe:1",
        "-stats_period",
        str(stats_period),
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=60",
        "-f",
        "null",
        str(sink),
    ]


# --- 1. probe ---------------------------------------------------------------------------------


async def test_probe_real_clip() -> None:
    result = await probe(BIG_BUCK_BUNNY)

    assert (result.width, result.height) == (1280, 720)
    assert (result.display_width, result.display_height) == (1280, 720)
    assert result.rotation == 0
    assert result.video_codec == "h264"
    assert result.audio_codec == "aac"
    assert result.has_audio
    assert result.pix_fmt == "yuv420p"
    assert result.frame_rate == 25.0
    assert result.duration_s == pytest.approx(5.3, abs=0.1)
    assert result.bit_rate is not None
    assert result.bit_rate > 0


async def test_probe_rotated_clip_reports_rotation_and_display_size(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "rotated.mp4", width=320, height=240, rotate=90)

    result = await probe(clip)

    assert (result.width, result.height) == (320, 240)
    assert result.rotation == 90
    assert (result.display_width, result.display_height) == (240, 320)


async def test_probe_clip_without_audio(tmp_path: Path) -> None:
    result = await probe(make_clip(tmp_path / "silent.mp4", audio=False))

    assert result.audio_codec is None
    assert not result.has_audio
    assert result.video_codec == "h264"


async def test_probe_audio_only_file_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidSource, match="audio"):
        await probe(make_audio_only(tmp_path / "podcast.m4a"))


async def test_probe_still_image_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidSource, match="still image"):
        await probe(make_png(tmp_path / "still.png"))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.mp4", b"hello, this is not a video\n" * 20),
        ("noise.mp4", random.Random(1).randbytes(20_000)),
        ("noise", random.Random(4).randbytes(5_000)),  # ffprobe: "Invalid argument"
        ("empty.mp4", b""),
    ],
    ids=["text", "random-bytes", "random-bytes-no-format", "empty"],
)
async def test_probe_unreadable_file_is_invalid(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(InvalidSource, match="not a video file ffmpeg can read"):
        await probe(path)


async def test_probe_truncated_upload_with_moov_at_the_end_is_invalid(tmp_path: Path) -> None:
    # An encoder's default layout (BBB too) writes moov after mdat: the first 30 % has no moov.
    assert not moov_before_mdat(BIG_BUCK_BUNNY)
    partial = truncate(BIG_BUCK_BUNNY, tmp_path / "partial.mp4", 0.3)

    with pytest.raises(InvalidSource, match="not a video file ffmpeg can read"):
        await probe(partial)


@pytest.mark.parametrize("kept", [0.3, 0.8])
async def test_truncated_faststart_upload_probes_but_encodes_short(tmp_path: Path, kept: float) -> None:
    # With +faststart the moov (the index) comes first, so the first bytes carry the whole
    # header: ffprobe reads the declared geometry and duration and cannot tell that the media
    # data is cut short. The truncation only shows when the file is decoded: ffmpeg warns,
    # exits 0 and writes what it could decode, so the transcoder must compare durations --
    # to SPEC's 0.1 s once ffmpeg has said that it could not read everything (80 % kept: the
    # output is 0.4 s short of 2 s, which a looser tolerance took for a complete encode).
    source = tmp_path / "faststart.mp4"
    _ffmpeg(
        "-i", str(make_clip(tmp_path / "clip.mp4", width=320, height=240, duration=2)),
        "-c", "copy", "-movflags", "+faststart", str(source),
    )  # fmt: skip
    assert moov_before_mdat(source)
    partial = truncate(source, tmp_path / "partial.mp4", kept)

    probed = await probe(partial)
    assert (probed.width, probed.height) == (320, 240)
    assert probed.duration_s == pytest.approx(2.0, abs=DURATION_TOLERANCE_S)

    out = tmp_path / "144p.mp4"
    (rendition,) = plan(probed.width, probed.height, probed.rotation, [Quality.P144])
    cmd = command_for(rendition, has_audio=probed.has_audio, duration_s=probed.duration_s)
    progress: list[Progress] = []

    async def collect(item: Progress) -> None:
        progress.append(item)

    warnings = await run(argv(str(partial), str(out), cmd, FAST), timeout=60, on_progress=collect)
    made = await probe(out)

    assert any("partial file" in line for line in warnings), warnings
    assert made.duration_s < probed.duration_s - 0.3
    # ffmpeg's closing progress block (what the transcoder goes by) tells the same story
    assert progress[-1].done
    assert progress[-1].out_time_s == pytest.approx(made.duration_s, abs=DURATION_TOLERANCE_S)
    with pytest.raises(EncodeFailed, match=r"truncated or corrupt .*partial file"):
        check_complete(cmd, progress[-1].out_time_s, warnings)


def _deps(storage: LocalStorage) -> TranscoderDeps:
    """The transcoder's handlers with the real ffmpeg and storage, and no broker or database."""
    settings = make(TranscoderSettings)
    claims = FakeClaims()
    return TranscoderDeps(
        settings=settings,
        topology=build(settings),
        publisher=InMemoryPublisher(),
        storage=storage,
        claims=claims,
        runner=JobRunner(slots=1, claims=claims, heartbeat_s=60),
        encoder=Encoder(),
    )


async def test_a_slideshow_without_audio_is_encoded_whole(tmp_path: Path) -> None:
    # At 1 fps with no audio, ffmpeg's closing block gives the time of the last frame (3 s),
    # not the end of the file (4 s): the transcoder measures such an output instead of
    # failing it as truncated, and reports the file's duration.
    storage = LocalStorage(tmp_path / "storage")
    video_id = "vid_0123456789abcdef"
    source = storage.local_path(source_key(video_id))
    source.parent.mkdir(parents=True)
    make_clip(tmp_path / "slides.mp4", width=320, height=240, duration=4, fps=1, audio=False).rename(source)
    probed = await probe(source)
    (rendition,) = plan(probed.width, probed.height, probed.rotation, [Quality.P144])
    cmd = command_for(rendition, has_audio=False, duration_s=probed.duration_s)
    progress: list[Progress] = []

    async def collect(item: Progress) -> None:
        progress.append(item)

    await run(argv(str(source), str(tmp_path / "out.mp4"), cmd, FAST), timeout=60, on_progress=collect)
    assert progress[-1].out_time_s == pytest.approx(3.0, abs=0.05)  # the premise

    (report,) = await encode_batch([Job(cmd, 1)], _deps(storage))

    assert report.duration_s == pytest.approx(4.0, abs=DURATION_TOLERANCE_S)
    out = storage.local_path(rendition_key(video_id, "144p"))
    assert float(ffprobe(out)["format"]["duration"]) == pytest.approx(4.0, abs=DURATION_TOLERANCE_S)


# --- 2. encoding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A source clip (``None`` builds nothing: the shipped clip) and the ladder it must get."""

    clip: dict[str, Any] | None
    #: every planned rendition as (quality, width, height), highest first
    planned: list[tuple[str, int, int]]
    #: the rungs to encode (all of them when ``None``)
    encode: tuple[str, ...] | None = None


CASES = {
    "landscape": Case(
        {"width": 640, "height": 360},
        [("360p", 640, 360), ("240p", 426, 240), ("144p", 256, 144)],
    ),
    "portrait": Case(
        {"width": 360, "height": 640},
        [("360p", 360, 640), ("240p", 240, 426), ("144p", 144, 256)],
    ),
    "rotated": Case(
        {"width": 320, "height": 240, "rotate": 90},
        [("240p", 240, 320), ("144p", 144, 192)],
    ),
    "odd-size": Case(
        {"width": 321, "height": 241, "audio": False},
        [("240p", 318, 240), ("144p", 190, 144)],
    ),
    "tiny": Case({"width": 96, "height": 54}, [("144p", 96, 54)]),
    # 360x240 with 32:27 pixels displays 16:9 (427x240): renditions have square pixels
    "anamorphic": Case(
        {"width": 360, "height": 240, "sar": "32/27"},
        [("240p", 426, 240), ("144p", 256, 144)],
    ),
    "mono": Case(
        {"width": 320, "height": 240, "mono": True},
        [("240p", 320, 240), ("144p", 192, 144)],
    ),
    "big-buck-bunny": Case(
        None,
        [
            ("720p", 1280, 720),
            ("480p", 852, 480),
            ("360p", 640, 360),
            ("240p", 426, 240),
            ("144p", 256, 144),
        ],
        encode=("480p", "144p"),
    ),
}


def assert_rendition(out: Path, rendition: PlannedRendition, source: Path, probed: ProbeResult) -> None:
    """What SPEC "Quality ladder" promises of every output, read back with ffprobe."""
    info = ffprobe(out)
    video, audio = video_stream(info), audio_stream(info)
    label = f"{rendition.quality.value} of {source.name}"
    assert info["format"]["format_name"].startswith("mov,mp4"), label
    assert video["codec_name"] == "h264", label
    assert video["pix_fmt"] == "yuv420p", label
    # -profile:v high is a ceiling for x264: ultrafast uses no High features, so the stream
    # is Constrained Baseline; any of these plays everywhere
    assert video["profile"] in {"Constrained Baseline", "Main", "High"}, label
    # the exact planned size, shown upright: no rotation is left for the player to apply
    assert (video["width"], video["height"]) == (rendition.width, rendition.height), label
    assert video["width"] % 2 == 0, label
    assert video["height"] % 2 == 0, label
    assert rotation_of(video) == 0, label
    assert video.get("sample_aspect_ratio", "1:1") == "1:1", label
    # and the picture is the source's as displayed: not stretched into the rotated size,
    # not turned the wrong way (a wrong orientation differs by ~70 grey levels here)
    assert mean_abs_diff(gray_frame(out, 1.0), gray_frame(source, 1.0)) < 8, label
    if probed.has_audio:
        assert audio is not None, label
        assert audio["codec_name"] == "aac", label
        assert audio["channels"] == 2, label
    else:
        assert audio is None, label
    assert float(info["format"]["duration"]) == pytest.approx(probed.duration_s, abs=DURATION_TOLERANCE_S), (
        label
    )
    # Matroska's streams carry no duration of their own: the probed one stands for it
    source_duration = video_stream(ffprobe(source)).get("duration") or probed.duration_s
    assert float(video["duration"]) == pytest.approx(float(source_duration), abs=DURATION_TOLERANCE_S), label
    assert moov_before_mdat(out), label


def assert_progress(progress: list[Progress], out: Path, probed: ProbeResult) -> None:
    # ffmpeg 5.1 writes one block as soon as the output starts, one per -stats_period, and a
    # final "progress=end" block, which is the only one marked done and counts every frame
    assert progress, out
    assert progress[-1].done, out
    assert not any(p.done for p in progress[:-1]), out
    assert progress[-1].frame == int(video_stream(ffprobe(out))["nb_frames"]), out
    assert progress[-1].out_time_s == pytest.approx(probed.duration_s, abs=DURATION_TOLERANCE_S), out
    times = [p.out_time_s for p in progress]
    assert times == sorted(times), out


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_encode_ladder(tmp_path: Path, case: Case) -> None:
    source = (
        BIG_BUCK_BUNNY if case.clip is None else make_clip(tmp_path / "source.mp4", duration=2, **case.clip)
    )
    src_info = ffprobe(source)
    src_audio = audio_stream(src_info)
    if case.clip is not None:  # the builder made what the case says (odd sizes included)
        src_video = video_stream(src_info)
        assert (src_video["width"], src_video["height"]) == (case.clip["width"], case.clip["height"])
        assert (src_audio is not None) == case.clip.get("audio", True)
        if case.clip.get("mono"):
            assert src_audio is not None
            assert src_audio["channels"] == 1
    probed = await probe(source)
    assert probed.has_audio == (src_audio is not None)

    planned = plan(probed.width, probed.height, probed.rotation, sample_aspect=probed.sample_aspect)
    assert [(r.quality.value, r.width, r.height) for r in planned] == case.planned

    for rendition in planned:
        if case.encode is not None and rendition.quality.value not in case.encode:
            continue
        out = tmp_path / f"{rendition.quality.value}.mp4"
        cmd = command_for(rendition, has_audio=probed.has_audio, duration_s=probed.duration_s)
        progress: list[Progress] = []

        async def collect(item: Progress, sink: list[Progress] = progress) -> None:
            sink.append(item)

        await run(argv(str(source), str(out), cmd, FAST), timeout=60, stall_timeout=30, on_progress=collect)

        assert_rendition(out, rendition, source, probed)
        assert_progress(progress, out, probed)


# --- 3. failures and watchdogs ----------------------------------------------------------------


async def test_run_on_garbage_input_raises_encode_failed_with_ffmpegs_reason(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(random.Random(2).randbytes(20_000))
    cmd = TranscodeRendition(
        job_id="job_test",
        video_id="vid_0123456789abcdef",
        quality=Quality.P144,
        width=256,
        height=144,
        has_audio=True,
        duration_s=2.0,
    )

    with pytest.raises(EncodeFailed) as caught:
        await run(argv(str(garbage), str(tmp_path / "out.mp4"), cmd, FAST), timeout=30)

    assert "exited with status 1" in str(caught.value)
    assert "Invalid data found when processing input" in str(caught.value)
    assert "moov atom not found" in caught.value.stderr_tail


async def test_stall_watchdog_kills_ffmpeg(tmp_path: Path) -> None:
    # One progress block comes as the output starts, the next only 30 s later: the 1 s stall
    # limit fires in between, although ffmpeg is busy and would run for a minute.
    marker = str(tmp_path / "stall-sink")
    started = time.monotonic()
    task = asyncio.create_task(run(endless_argv(Path(marker), stats_period=30), stall_timeout=1.0))
    pid = await wait_for_child(marker)

    with pytest.raises(TransientError, match="no progress"):
        await task

    assert 1.0 <= time.monotonic() - started < 5.0
    assert not process_exists(pid)
    assert our_ffmpeg_children(marker) == []


async def test_overall_timeout_kills_ffmpeg(tmp_path: Path) -> None:
    # Progress every second (no stall), but the whole run may take only 1 s.
    marker = str(tmp_path / "timeout-sink")
    task = asyncio.create_task(run(endless_argv(Path(marker), stats_period=1), timeout=1.0))
    pid = await wait_for_child(marker)
    started = time.monotonic()

    with pytest.raises(TransientError, match="ran past its 1 s limit"):
        await task

    assert time.monotonic() - started < 4.0
    assert not process_exists(pid)


async def test_cancelling_run_kills_ffmpeg(tmp_path: Path) -> None:
    # The child is found in /proc by parent pid and a command line unique to this test; after
    # the cancellation it must be gone from the process table entirely (killed *and* reaped,
    # so not even a zombie is left behind).
    marker = str(tmp_path / "cancel-sink")
    task = asyncio.create_task(run(endless_argv(Path(marker), stats_period=1)))
    pid = await wait_for_child(marker)
    assert process_exists(pid)

    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.monotonic() - started < 2.0
    assert not process_exists(pid)
    assert our_ffmpeg_children(marker) == []


# --- 4. thumbnails ----------------------------------------------------------------------------


async def make_poster(source: Path, folder: Path) -> list[tuple[int, int, Path]]:
    """Probe ``source`` and write its posters as the thumbnailer does; return (w, h, path)."""
    probed = await probe(source)
    outputs = [
        (w, h, folder / f"poster-{w}.jpg")
        for w, h in poster.sizes(probed.display_width, probed.display_height)
    ]
    looks = poster.attempts(probed.duration_s, probed.display_width, probed.display_height)
    for look in looks:  # as the thumbnailer does
        await run(poster.argv(str(source), look, outputs), timeout=60)
        if all(path.is_file() for _, _, path in outputs):
            break
    return outputs


def assert_jpeg(path: Path, width: int, height: int) -> None:
    assert path.is_file(), path
    assert path.stat().st_size > 0, path
    video = video_stream(ffprobe(path))
    assert video["codec_name"] == "mjpeg", path
    assert (video["width"], video["height"]) == (width, height), path
    assert video["height"] % 2 == 0, path


async def test_poster_of_real_clip_at_every_width(tmp_path: Path) -> None:
    outputs = await make_poster(BIG_BUCK_BUNNY, tmp_path)

    assert [(w, h) for w, h, _ in outputs] == [(1280, 720), (640, 360), (320, 180)]
    for w, h, path in outputs:
        assert_jpeg(path, w, h)
        assert mean_luma(path) > 20, path


async def test_poster_of_small_clip_is_not_upscaled(tmp_path: Path) -> None:
    outputs = await make_poster(make_clip(tmp_path / "small.mp4", width=200, height=150), tmp_path)

    assert [(w, h) for w, h, _ in outputs] == [(200, 150)]
    assert_jpeg(outputs[0][2], 200, 150)


async def test_poster_of_rotated_clip_is_upright(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "rotated.mp4", width=320, height=240, rotate=90)

    outputs = await make_poster(clip, tmp_path)

    assert [(w, h) for w, h, _ in outputs] == [(240, 320)]
    assert_jpeg(outputs[0][2], 240, 320)
    assert rotation_of(video_stream(ffprobe(outputs[0][2]))) == 0


async def test_poster_of_an_anamorphic_clip_has_square_pixels_and_its_displayed_aspect(
    tmp_path: Path,
) -> None:
    clip = make_clip(tmp_path / "dvd.mp4", width=720, height=480, sar="32/27", audio=False)

    outputs = await make_poster(clip, tmp_path)

    assert [(w, h) for w, h, _ in outputs] == [(640, 360), (320, 180)]
    for w, h, path in outputs:
        assert_jpeg(path, w, h)
        assert video_stream(ffprobe(path)).get("sample_aspect_ratio", "1:1") in {"1:1", "0:1"}


async def test_poster_of_one_second_clip_still_gets_a_frame(tmp_path: Path) -> None:
    # Fewer frames remain after the seek than the thumbnail filter's batch: it must still
    # pick one when the input ends.
    clip = make_clip(tmp_path / "short.mp4", width=320, height=240, duration=1)

    outputs = await make_poster(clip, tmp_path)

    assert [(w, h) for w, h, _ in outputs] == [(320, 240)]
    assert_jpeg(outputs[0][2], 320, 240)


async def test_poster_is_not_the_first_frame(tmp_path: Path) -> None:
    clip = make_black_then_pattern(tmp_path / "black-intro.mp4", black_s=1.0, pattern_s=3.0)
    assert mean_luma(clip) < 5  # frame 0 really is black

    outputs = await make_poster(clip, tmp_path)

    assert len(outputs) == 1
    assert_jpeg(outputs[0][2], 320, 240)
    assert mean_luma(outputs[0][2]) > 40


async def ladder_outputs(
    source: Path, folder: Path
) -> tuple[ProbeResult, list[PlannedRendition], list[tuple[str, TranscodeRendition]]]:
    """The source probed, its ladder planned, and a file in ``folder`` and a command per rung."""
    probed = await probe(source)
    planned = plan(probed.width, probed.height, probed.rotation)
    outputs = [
        (str(folder / f"{p.quality.value}.mp4"), command_for(p, has_audio=True, duration_s=probed.duration_s))
        for p in planned
    ]
    return probed, planned, outputs


async def test_one_decode_makes_every_rendition_exactly(tmp_path: Path) -> None:
    """``argv_many``: one ffmpeg, one decode, each output as if encoded on its own."""
    source = make_clip(tmp_path / "src.mp4", width=640, height=360, duration=2)
    probed, planned, outputs = await ladder_outputs(source, tmp_path)
    await run(argv_many(str(source), outputs, EncodeProfile(preset="ultrafast")))
    assert len(outputs) == 3
    for (path, cmd), p in zip(outputs, planned, strict=True):
        info = ffprobe(Path(path))
        stream = video_stream(info)
        assert (stream["width"], stream["height"]) == (p.width, p.height)
        assert stream["pix_fmt"] == "yuv420p"
        sound = audio_stream(info)
        assert sound is not None
        assert sound["channels"] == 2
        assert abs(float(info["format"]["duration"]) - probed.duration_s) <= 0.1
        assert moov_before_mdat(Path(path)), cmd.quality
    # the sound one ffmpeg per rendition would have made, byte for byte (it is encoded once and
    # shared by every file), and as many pictures (x264's bits themselves vary a little from run
    # to run on a busy machine, with a bitrate cap and several threads, so they are not compared)
    audio = {audio_hash(Path(path)) for path, _ in outputs}
    assert len(audio) == 1
    for path, cmd in outputs:
        alone = tmp_path / f"alone-{cmd.quality.value}.mp4"
        await run(argv(str(source), str(alone), cmd, EncodeProfile(preset="ultrafast")))
        assert audio_hash(alone) in audio, cmd.quality
        assert video_stream(ffprobe(Path(path)))["nb_frames"] == video_stream(ffprobe(alone))["nb_frames"]


def audio_hash(path: Path) -> str:
    """A hash of the audio stream's packets (``streamhash``)."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a", "-c", "copy", "-f", "streamhash", "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


async def test_poster_of_a_video_with_key_frames_after_the_quarter_mark_needs_one_cheap_run(
    tmp_path: Path,
) -> None:
    source = tmp_path / "gop.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", str(source)],
        check=True,
    )  # fmt: skip
    output = tmp_path / "poster.jpg"

    look = poster.Look(poster.timestamp(4.0), key_frames_only=True)
    await run(poster.argv(str(source), look, [(320, 240, output)]))

    assert_jpeg(output, 320, 240)


async def test_a_source_with_two_audio_tracks_gives_renditions_with_its_first_only(tmp_path: Path) -> None:
    source = tmp_path / "two-tracks.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x240:duration=1",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
        "-f", "lavfi", "-i", "sine=frequency=880:duration=1",
        "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast",
        "-c:a", "aac", "-ac", "1", str(source),
    )  # fmt: skip
    *_, outputs = await ladder_outputs(source, tmp_path)
    await run(argv_many(str(source), outputs, EncodeProfile(preset="ultrafast")))  # one decode
    alone = tmp_path / "alone.mp4"
    await run(argv(str(source), str(alone), outputs[0][1], EncodeProfile(preset="ultrafast")))
    for path in [*(Path(p) for p, _ in outputs), alone]:
        sounds = [s for s in ffprobe(path)["streams"] if s["codec_type"] == "audio"]
        assert [(s["codec_name"], s["channels"]) for s in sounds] == [("aac", 2)], path


@pytest.mark.parametrize("container", ["mp4", "mkv"])
async def test_a_source_whose_media_starts_late_is_as_long_as_it_plays(
    tmp_path: Path, container: str
) -> None:
    # timestamps from 10 s on: the container declares 12 s, the encode (from zero) plays 2 s
    source = tmp_path / f"offset.{container}"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x240:duration=2",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-output_ts_offset", "10", str(source),
    )  # fmt: skip
    assert float(ffprobe(source)["format"]["duration"]) == pytest.approx(12.0, abs=0.1)
    probed = await probe(source)
    assert probed.duration_s == pytest.approx(2.0, abs=0.1)
    [*_, lowest] = plan(probed.width, probed.height, probed.rotation)
    out = tmp_path / "144p.mp4"
    cmd = command_for(lowest, has_audio=True, duration_s=probed.duration_s)
    await run(argv(str(source), str(out), cmd, FAST), timeout=60)
    assert_rendition(out, lowest, source, probed)


async def test_poster_of_an_mpeg_ts_with_one_key_frame_is_found_past_the_intro(tmp_path: Path) -> None:
    # no index to seek by, and x264's default GOP (250 frames) is longer than the video: a seek
    # lands past the only key frame, so the poster is decoded from the start up to its point
    mp4 = make_black_then_pattern(tmp_path / "black-intro.mp4", black_s=1.0, pattern_s=3.0)
    clip = tmp_path / "broadcast.ts"
    _ffmpeg("-i", str(mp4), "-c:v", "libx264", "-preset", "ultrafast", "-g", "250", str(clip))

    outputs = await make_poster(clip, tmp_path)

    assert_jpeg(outputs[0][2], 320, 240)
    assert mean_luma(outputs[0][2]) > 40  # past the black intro: not frame 0


async def test_poster_of_a_video_of_one_frame_is_that_frame(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "one-frame.mp4", width=320, height=240, duration=0.04, audio=False)
    assert video_stream(ffprobe(clip))["nb_frames"] == "1"

    outputs = await make_poster(clip, tmp_path)

    assert_jpeg(outputs[0][2], 320, 240)
