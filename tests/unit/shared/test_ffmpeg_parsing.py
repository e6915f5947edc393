"""What ffprobe's JSON and ffmpeg's ``-progress`` blocks mean, without running either."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from shared.errors import InvalidSource
from shared.ffmpeg import (
    ProbeResult,
    Progress,
    _probe_refusal,
    parse_probe,
    parse_progress_block,
    telling,
    tidy,
    with_tail,
)


def video_stream(**values: Any) -> dict[str, Any]:
    stream: dict[str, Any] = {
        "index": 0,
        "codec_type": "video",
        "codec_name": "h264",
        "width": 1920,
        "height": 1080,
        "pix_fmt": "yuv420p",
        "avg_frame_rate": "30000/1001",
        "r_frame_rate": "30000/1001",
        "duration": "9.976",
        "disposition": {"default": 1, "attached_pic": 0},
    }
    stream.update(values)
    return stream


def audio_stream(**values: Any) -> dict[str, Any]:
    stream: dict[str, Any] = {"index": 1, "codec_type": "audio", "codec_name": "aac", "channels": 2}
    stream.update(values)
    return stream


def probe_data(*streams: dict[str, Any], **fmt: Any) -> dict[str, Any]:
    format_: dict[str, Any] = {
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
        "duration": "10.010000",
        "bit_rate": "5000123",
    }
    format_.update(fmt)
    return {"streams": list(streams), "format": format_}


def test_parse_probe_reads_an_ordinary_mp4() -> None:
    result = parse_probe(probe_data(video_stream(), audio_stream()))

    assert result == ProbeResult(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration_s=10.01,
        width=1920,
        height=1080,
        rotation=0,
        video_codec="h264",
        pix_fmt="yuv420p",
        frame_rate=29.97,
        audio_codec="aac",
        bit_rate=5000123,
    )
    assert result.has_audio
    assert (result.display_width, result.display_height) == (1920, 1080)


@pytest.mark.parametrize(
    ("sar", "expected"),
    [
        ("32:27", Fraction(32, 27)),
        ("1:1", Fraction(1)),
        ("0:1", Fraction(1)),
        (None, Fraction(1)),
        ("1:0", Fraction(1)),
    ],
)
def test_parse_probe_reads_the_pixels_aspect(sar: str | None, expected: Fraction) -> None:
    stream = video_stream(width=720, height=480, **({"sample_aspect_ratio": sar} if sar else {}))

    result = parse_probe(probe_data(stream))

    assert result.sample_aspect == expected
    assert (result.display_width, result.display_height) == ((853, 480) if expected != 1 else (720, 480))


def test_parse_probe_without_audio_has_no_audio() -> None:
    result = parse_probe(probe_data(video_stream()))

    assert result.audio_codec is None
    assert not result.has_audio


@pytest.mark.parametrize(
    ("side_data", "expected"),
    [(-90, 270), (90, 90), (180, 180), (-180, 180), (270, 270), (0, 0), (-90.0000001, 270)],
)
def test_parse_probe_reads_rotation_from_the_display_matrix(side_data: float, expected: int) -> None:
    stream = video_stream(side_data_list=[{"side_data_type": "Display Matrix", "rotation": side_data}])

    assert parse_probe(probe_data(stream)).rotation == expected


def test_a_rotated_phone_clip_displays_portrait() -> None:
    stream = video_stream(side_data_list=[{"side_data_type": "Display Matrix", "rotation": -90}])

    result = parse_probe(probe_data(stream))

    assert (result.width, result.height) == (1920, 1080)
    assert (result.display_width, result.display_height) == (1080, 1920)


@pytest.mark.parametrize(("rotate", "expected"), [("90", 90), ("270", 270), ("-90", 270), ("0", 0)])
def test_parse_probe_reads_rotation_from_the_rotate_tag(rotate: str, expected: int) -> None:
    assert parse_probe(probe_data(video_stream(tags={"rotate": rotate}))).rotation == expected


def test_the_display_matrix_wins_over_the_rotate_tag() -> None:
    stream = video_stream(tags={"rotate": "180"}, side_data_list=[{"rotation": 90}])

    assert parse_probe(probe_data(stream)).rotation == 90


def test_side_data_without_rotation_is_skipped() -> None:
    stream = video_stream(side_data_list=[{"side_data_type": "CPB properties"}], tags={"rotate": "90"})

    assert parse_probe(probe_data(stream)).rotation == 90


def test_an_audio_only_file_is_not_a_video_and_the_error_says_audio() -> None:
    with pytest.raises(InvalidSource, match="audio"):
        parse_probe(probe_data(audio_stream(index=0), format_name="mp3"))


def test_cover_art_is_not_a_video_stream() -> None:
    cover = video_stream(codec_name="mjpeg", width=600, height=600, disposition={"attached_pic": 1})

    with pytest.raises(InvalidSource, match="audio"):
        parse_probe(probe_data(audio_stream(index=0), cover, format_name="mp3"))


def test_cover_art_before_the_real_video_is_skipped() -> None:
    cover = video_stream(index=0, codec_name="mjpeg", width=600, height=600, disposition={"attached_pic": 1})
    real = video_stream(index=1, width=1280, height=720)

    result = parse_probe(probe_data(cover, real, audio_stream(index=2)))

    assert (result.width, result.height, result.video_codec) == (1280, 720, "h264")


@pytest.mark.parametrize("format_name", ["image2", "png_pipe", "jpeg_pipe", "mjpeg", "gif_pipe", "apng"])
def test_a_still_image_is_not_a_video(format_name: str) -> None:
    stream = video_stream(codec_name="png", duration=None)

    with pytest.raises(InvalidSource, match="still image"):
        parse_probe(probe_data(stream, format_name=format_name, duration="0.040000"))


@pytest.mark.parametrize(
    ("format_duration", "stream_duration"), [(None, None), ("N/A", "N/A"), ("0.000000", None), ("-1", None)]
)
def test_a_video_without_a_duration_is_refused(
    format_duration: str | None, stream_duration: str | None
) -> None:
    data = probe_data(video_stream(duration=stream_duration), duration=format_duration)

    with pytest.raises(InvalidSource, match="duration"):
        parse_probe(data)


def test_the_stream_duration_is_used_when_the_format_has_none() -> None:
    data = probe_data(video_stream(duration="4.5"), duration=None)

    assert parse_probe(data).duration_s == 4.5


@pytest.mark.parametrize("data", [{}, {"streams": [], "format": {}}, {"streams": None, "format": None}])
def test_a_file_without_streams_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidSource, match="no video stream"):
        parse_probe(data)


def test_a_video_stream_without_a_frame_size_is_refused() -> None:
    with pytest.raises(InvalidSource, match="frame size"):
        parse_probe(probe_data(video_stream(width=0, height=None)))


def test_the_frame_rate_falls_back_to_r_frame_rate() -> None:
    stream = video_stream(avg_frame_rate="0/0", r_frame_rate="25/1")

    assert parse_probe(probe_data(stream)).frame_rate == 25.0


def test_an_unknown_frame_rate_is_none() -> None:
    stream = video_stream(avg_frame_rate="0/0", r_frame_rate="nonsense")

    assert parse_probe(probe_data(stream)).frame_rate is None


def test_a_bit_rate_that_is_not_a_number_is_none() -> None:
    assert parse_probe(probe_data(video_stream(), bit_rate="N/A")).bit_rate is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"frame": "45", "out_time_us": "1500000", "speed": "2.5x", "progress": "continue"},
            Progress(1.5, 2.5, 45, done=False),
        ),
        (
            {"out_time_us": "10000000", "speed": "   1x", "progress": "end"},
            Progress(10.0, 1.0, None, done=True),
        ),
        ({"out_time_us": "N/A", "speed": "N/A", "frame": "0"}, Progress(0.0, None, 0, done=False)),
        ({"out_time_us": "-23000", "speed": ""}, Progress(0.0, None, None, done=False)),
        ({"out_time_ms": "2000000"}, Progress(2.0, None, None, done=False)),
        ({}, Progress(0.0, None, None, done=False)),
    ],
    ids=["running", "end", "not-yet-known", "negative-start", "out_time_ms-fallback", "empty"],
)
def test_parse_progress_block_reads_time_speed_frame_and_end(
    fields: dict[str, str], expected: Progress
) -> None:
    assert parse_progress_block(fields) == expected


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_a_stream_in_a_format_ffmpeg_cannot_decode_is_refused_naming_it(kind: str) -> None:
    # what ffprobe prints for a stream it has no decoder for: no codec_name, its tag only
    streams = {"video": video_stream(), "audio": audio_stream()}
    del streams[kind]["codec_name"]
    streams[kind]["codec_tag_string"] = "zzzz"

    with pytest.raises(InvalidSource, match=rf"the {kind} stream .* cannot decode \(codec tag zzzz\)"):
        parse_probe(probe_data(*streams.values()))


@pytest.mark.parametrize(
    ("fmt", "video_duration", "expected"),
    [
        ({"start_time": "9.976009", "duration": "12.000000"}, "2.000000", 2.023),  # MP4 offset 10 s
        ({"start_time": "1.400000", "duration": "2.000000"}, "2.000000", 2.0),  # MPEG-TS: already so
        ({"start_time": "0.000000", "duration": "10.010000"}, "9.976", 10.01),  # the ordinary case
        ({"start_time": "9.977000", "duration": "12.000000"}, None, 12.0),  # Matroska: no stream durations
    ],
    ids=["mp4-offset", "ts", "ordinary", "matroska"],
)
def test_the_duration_is_from_the_first_timestamp_to_the_last(
    fmt: dict[str, str], video_duration: str | None, expected: float
) -> None:
    video = video_stream(duration=video_duration) if video_duration else video_stream()
    if video_duration is None:
        del video["duration"]
    audio = audio_stream(duration="2.023220") if video_duration else audio_stream()

    assert parse_probe(probe_data(video, audio, **fmt)).duration_s == expected


@pytest.mark.parametrize(
    ("declared", "packets", "expected"),
    [
        ("12.000000", [("11.960000", "0.040000"), ("11.997000", "0.023000")], 2.043),  # counted from zero
        ("2.043000", [("11.960000", "0.040000"), ("11.997000", "0.023000")], 2.043),  # already the length
        ("12.000000", [], 12.0),  # the end could not be read: the declared duration stands
    ],
    ids=["declared-end", "declared-length", "no-packets"],
)
def test_a_late_start_in_matroska_is_measured_from_its_last_packets(
    declared: str, packets: list[tuple[str, str]], expected: float
) -> None:
    video = video_stream()
    del video["duration"]
    data = probe_data(video, format_name="matroska,webm", start_time="9.977000", duration=declared)

    fixed = with_tail(data, [{"pts_time": p, "duration_time": d} for p, d in packets])

    assert parse_probe(fixed).duration_s == expected


def test_a_log_line_loses_the_components_memory_address() -> None:
    line = "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x5653e5a7e640] stream 0, offset 0x30: partial file"
    assert tidy(line) == "[mov,mp4,m4a,3gp,3g2,mj2] stream 0, offset 0x30: partial file"
    assert tidy("[h264 @ 0xABC] error while decoding MB 3 4") == "[h264] error while decoding MB 3 4"
    assert tidy("no address here @ 0x12 but not in a tag") == "no address here @ 0x12 but not in a tag"


@pytest.mark.parametrize(
    ("stderr", "detail"),
    [
        ("/up/src: Invalid argument\n", "not a video file ffmpeg can read"),
        ("/up/src: Invalid data found when processing input\n", "not a video file ffmpeg can read"),
        (
            "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0c0ffee00] moov atom not found\n"
            "/up/src: Invalid data found when processing input\n",
            "not a video file ffmpeg can read (moov atom not found)",
        ),
        ("", "not a video file ffmpeg can read (ffprobe exited with status 1)"),
        ("/up/src: Permission denied\n", "Permission denied"),
    ],
    ids=["no format", "unparsable", "with a cause", "silent", "another error"],
)
def test_ffprobes_refusal_reads_as_a_sentence_for_the_client(stderr: str, detail: str) -> None:
    assert _probe_refusal(stderr, Path("/up/src"), 1) == detail


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # ffmpeg's aftermath of a failure is passed over for its cause
        (
            [
                "Error while decoding stream #0:0: Invalid data found when processing input",
                "    Last message repeated 1 times",
                "Cannot determine format of input stream 0:0 after EOF",
                "Error marking filters as finished",
                "Conversion failed!",
            ],
            "Cannot determine format of input stream 0:0 after EOF",
        ),
        # a source cut short says where, before what its decoder makes of it
        (
            [
                "[mov,mp4,m4a,3gp,3g2,mj2] stream 1, offset 0x5db7a: partial file",
                "[h264] Invalid NAL unit size (9026 > 1564).",
                "Error while decoding stream #0:0: Invalid data found when processing input",
            ],
            "[mov,mp4,m4a,3gp,3g2,mj2] stream 1, offset 0x5db7a: partial file",
        ),
        (["Error marking filters as finished"], "Error marking filters as finished"),
        ([], "no message"),
    ],
)
def test_telling_picks_the_line_that_says_what_went_wrong(lines: list[str], expected: str) -> None:
    assert telling(lines) == expected
