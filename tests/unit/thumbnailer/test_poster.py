"""Poster sizes (1280/640/320, never upscaled, even), where to look, and the ffmpeg command."""

from __future__ import annotations

from pathlib import Path

import pytest

from thumbnailer.poster import BATCH, Look, argv, attempts, sizes, timestamp


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (3840, 2160, [(1280, 720), (640, 360), (320, 180)]),
        (1920, 1080, [(1280, 720), (640, 360), (320, 180)]),
        (1280, 720, [(1280, 720), (640, 360), (320, 180)]),
        (1279, 720, [(640, 360), (320, 180)]),
        (800, 600, [(640, 480), (320, 240)]),
        (640, 360, [(640, 360), (320, 180)]),
        (1080, 1920, [(640, 1136), (320, 568)]),
        (320, 240, [(320, 240)]),
        (319, 239, [(318, 238)]),
        (160, 90, [(160, 90)]),
        (101, 57, [(100, 56)]),
    ],
)
def test_poster_widths_are_1280_640_320_without_upscaling(
    width: int, height: int, expected: list[tuple[int, int]]
) -> None:
    assert sizes(width, height) == expected


@pytest.mark.parametrize(
    ("width", "height"),
    [(1920, 1080), (1080, 1920), (1281, 721), (333, 777), (99, 1001), (4096, 1716), (2, 2)],
)
def test_poster_sizes_are_even_never_larger_than_the_source_and_keep_the_aspect(
    width: int, height: int
) -> None:
    made = sizes(width, height)

    assert made
    assert [w for w, _ in made] == sorted((w for w, _ in made), reverse=True)
    for w, h in made:
        assert w % 2 == 0
        assert h % 2 == 0
        assert w <= width
        assert h <= height
        assert w / h == pytest.approx(width / height, rel=0.05, abs=0.02)


@pytest.mark.parametrize(
    ("duration", "expected"), [(10.0, 2.5), (1.0, 0.25), (3601.0, 900.25), (0.01, 0.003)]
)
def test_the_poster_is_looked_for_a_quarter_of_the_way_in_never_at_frame_zero(
    duration: float, expected: float
) -> None:
    assert timestamp(duration) == expected
    assert timestamp(duration) > 0


@pytest.mark.parametrize("duration", [0.0, -5.0])
def test_a_video_without_duration_is_looked_at_from_the_start(duration: float) -> None:
    assert timestamp(duration) == 0.0


def test_one_ffmpeg_run_seeks_picks_a_typical_frame_and_writes_every_size() -> None:
    outputs = [
        (1280, 720, Path("/t/1280.jpg")),
        (640, 360, Path("/t/640.jpg")),
        (320, 180, Path("/t/320.jpg")),
    ]

    args = argv("/media/source", Look(2.5, key_frames_only=True), outputs)

    assert args[args.index("-ss") + 1] == "2.5"
    assert args.index("-ss") < args.index("-i")
    assert args[args.index("-skip_frame") + 1] == "nokey"  # key frames only: cheap to decode
    assert args.index("-skip_frame") < args.index("-i")
    graph = args[args.index("-filter_complex") + 1]
    assert f"thumbnail={BATCH}" in graph
    assert "split=3" in graph
    for w, h, path in outputs:
        assert f"scale={w}:{h}" in graph
        assert str(path) in args
    assert args.count("-vframes") == 3
    assert graph.count("setsar=1") == 3  # square pixels, whatever the source's


def test_looking_at_every_frame_does_not_skip_any() -> None:
    args = argv("/media/source", Look(2.5, key_frames_only=False), [(320, 180, Path("/t/320.jpg"))])

    assert args[args.index("-ss") + 1] == "2.5"
    assert "-skip_frame" not in args


def test_the_poster_is_looked_for_among_key_frames_then_every_frame_then_from_the_start() -> None:
    assert attempts(8.0, 1920, 1080) == [
        Look(2.0, key_frames_only=True),
        Look(2.0, key_frames_only=False),
        Look(2.0, key_frames_only=False, from_start=True),  # no index to seek by (MPEG-TS)
        Look(0.0, key_frames_only=False),  # a video of one frame
    ]
    assert attempts(60.0, 640, 360)[:2] == [
        Look(15.0, key_frames_only=True),
        Look(15.0, key_frames_only=False),
    ]


@pytest.mark.parametrize(
    ("duration", "width", "height"), [(1.0, 256, 144), (10.0, 640, 360), (4.0, 360, 640)]
)
def test_a_short_small_video_is_looked_at_frame_by_frame_at_once(
    duration: float, width: int, height: int
) -> None:
    assert attempts(duration, width, height)[0] == Look(duration / 4, key_frames_only=False)
    assert len(attempts(duration, width, height)) == 3  # and the two last resorts


def test_looking_from_the_start_decodes_up_to_the_point_instead_of_seeking() -> None:
    look = Look(2.5, key_frames_only=False, from_start=True)
    args = argv("/media/source", look, [(320, 180, Path("/t/320.jpg"))])

    assert "-ss" not in args
    assert "trim=start=2.5" in args[args.index("-filter_complex") + 1]
