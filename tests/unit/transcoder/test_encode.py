"""The ffmpeg command of one rendition (SPEC output format) and progress as a percentage."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shared.ladder import Quality
from tests.unit import factories
from transcoder.encode import MAXRATE_KBPS, EncodeProfile, argv, argv_many, percent


def value_after(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def command_line(*, realtime: bool = False, threads: int = 0, **command: Any) -> list[str]:
    profile = EncodeProfile(realtime=realtime, threads=threads)
    return argv("/media/source", "/media/out.mp4", factories.transcode(**command), profile)


def test_the_command_encodes_h264_yuv420p_mp4_with_faststart() -> None:
    args = command_line()

    assert args[0] == "ffmpeg"
    assert value_after(args, "-i") == "/media/source"
    assert value_after(args, "-c:v") == "libx264"
    assert value_after(args, "-f") == "mp4"
    assert value_after(args, "-movflags") == "+faststart"
    assert "format=yuv420p" in value_after(args, "-filter_complex")
    assert "/media/out.mp4" in args
    assert "-y" in args


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (720, 1280), (254, 144), (160, 90)])
def test_the_command_scales_to_the_exact_planned_size(width: int, height: int) -> None:
    args = command_line(width=width, height=height)

    assert f"scale={width}:{height}" in value_after(args, "-filter_complex")


def test_audio_is_encoded_to_aac_stereo_when_the_source_has_audio() -> None:
    args = command_line(has_audio=True)

    assert value_after(args, "-c:a") == "aac"
    assert value_after(args, "-ac") == "2"
    assert "0:a:0" in args  # the first audio stream only: one track


def test_there_is_no_audio_stream_when_the_source_has_none() -> None:
    args = command_line(has_audio=False)

    assert "-c:a" not in args
    assert "-ac" not in args
    assert not any(a.startswith("0:a") for a in args)


def test_realtime_reads_the_input_at_its_native_rate() -> None:
    realtime = command_line(realtime=True)

    assert realtime.index("-re") < realtime.index("-i")
    assert "-re" not in command_line(realtime=False)


@pytest.mark.parametrize("quality", list(Quality))
def test_the_bitrate_is_capped_per_rung(quality: Quality) -> None:
    args = command_line(quality=quality)

    assert value_after(args, "-maxrate") == f"{MAXRATE_KBPS[quality]}k"
    assert value_after(args, "-bufsize") == f"{2 * MAXRATE_KBPS[quality]}k"


def test_threads_are_passed_only_when_set() -> None:
    assert value_after(command_line(threads=3), "-threads") == "3"
    assert "-threads" not in command_line()


def test_progress_is_written_to_stdout_for_the_runner() -> None:
    assert value_after(command_line(), "-progress") == "pipe:1"


LADDER = ((Quality.P720, 1280, 720), (Quality.P360, 640, 360), (Quality.P144, 256, 144))


def many(*, has_audio: bool = True, directory: str = "/media") -> list[str]:
    outputs = [
        (f"{directory}/{q.value}.mp4", factories.transcode(quality=q, width=w, height=h, has_audio=has_audio))
        for q, w, h in LADDER
    ]
    return argv_many("/media/source", outputs, EncodeProfile())


def tee_files(args: list[str]) -> list[str]:
    """The tee's files, split where an unescaped ``|`` separates them."""
    (spec,) = [a for a in args if a.startswith("[select=")]
    return re.split(r"(?<!\\)\|", spec)


def test_one_command_encodes_every_rung_from_one_decode_and_the_audio_once() -> None:
    args = many()

    assert args.count("-i") == 1
    assert "split=3" in value_after(args, "-filter_complex")
    assert [args[i + 1] for i, a in enumerate(args) if a == "-map"].count("0:a:0") == 1
    assert args.count("-c:a") == 1
    assert value_after(args, "-f") == "tee"
    assert value_after(args, "-flags") == "+global_header"


def test_each_file_of_the_tee_gets_its_own_video_the_shared_audio_and_faststart() -> None:
    assert tee_files(many()) == [
        f"[select=\\'v:{i},a\\':f=mp4:movflags=+faststart]/media/{q.value}.mp4"
        for i, (q, _, _) in enumerate(LADDER)
    ]
    assert all(",a" not in f for f in tee_files(many(has_audio=False)))
    assert not any(a.startswith("0:a") for a in many(has_audio=False))


def test_each_rung_of_one_command_keeps_its_own_bitrate_cap() -> None:
    args = many()

    for i, (quality, _, _) in enumerate(LADDER):
        assert value_after(args, f"-maxrate:v:{i}") == f"{MAXRATE_KBPS[quality]}k"
        assert value_after(args, f"-bufsize:v:{i}") == f"{2 * MAXRATE_KBPS[quality]}k"
    assert "-maxrate" not in args


def test_file_names_that_mean_something_to_the_tee_are_escaped() -> None:
    files = tee_files(many(directory="/var/my videos|[1]'s"))

    assert len(files) == len(LADDER)
    assert files[0].endswith("]/var/my\\ videos\\|\\[1\\]\\'s/720p.mp4")


def test_a_relative_file_name_is_made_absolute_for_the_tee(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert tee_files(many(directory="var/storage"))[0].endswith(f"]{tmp_path}/var/storage/720p.mp4")


@pytest.mark.parametrize(
    ("out_time", "duration", "expected"),
    [
        (0, 10, 0.0),
        (5, 10, 50.0),
        (1, 3, 33.3),
        (9.99, 10, 99.9),
        (10, 10, 99.9),
        (25, 10, 99.9),
        (-1, 10, 0.0),
        (5, 0, 0.0),
        (5, -1, 0.0),
    ],
)
def test_percent_is_clamped_between_0_and_99_9(out_time: float, duration: float, expected: float) -> None:
    assert percent(out_time, duration) == expected
