"""SPEC "Quality ladder", rule by rule, over stored frame sizes and rotation metadata."""

from __future__ import annotations

from fractions import Fraction

import pytest

from shared.ladder import RUNGS, PlannedRendition, Quality, display_size, even, parse_qualities, plan

Q = Quality


def sizes(planned: list[PlannedRendition]) -> list[tuple[str, int, int]]:
    return [(p.quality.value, p.width, p.height) for p in planned]


LANDSCAPE_1080 = [
    ("1080p", 1920, 1080),
    ("720p", 1280, 720),
    ("480p", 852, 480),
    ("360p", 640, 360),
    ("240p", 426, 240),
    ("144p", 256, 144),
]
PORTRAIT_1080 = [(q, h, w) for q, w, h in LANDSCAPE_1080]


@pytest.mark.parametrize(
    ("width", "height", "rotation", "expected"),
    [
        pytest.param(1920, 1080, 0, LANDSCAPE_1080, id="landscape-1080"),
        pytest.param(1080, 1920, 0, PORTRAIT_1080, id="portrait-phone-is-1080p"),
        pytest.param(1920, 1080, 90, PORTRAIT_1080, id="rotated-90"),
        pytest.param(1920, 1080, 270, PORTRAIT_1080, id="rotated-270"),
        pytest.param(1920, 1080, -90, PORTRAIT_1080, id="rotated-minus-90"),
        pytest.param(1920, 1080, 180, LANDSCAPE_1080, id="upside-down-keeps-sides"),
        pytest.param(1080, 1920, 90, LANDSCAPE_1080, id="portrait-stored-rotated-back"),
        pytest.param(
            3840,
            2160,
            0,
            [("2160p", 3840, 2160), ("1440p", 2560, 1440), *LANDSCAPE_1080],
            id="4k-gets-every-rung",
        ),
        pytest.param(
            1281,
            721,
            0,
            [
                ("720p", 1278, 720),
                ("480p", 852, 480),
                ("360p", 638, 360),
                ("240p", 426, 240),
                ("144p", 254, 144),
            ],
            id="odd-sizes-give-even-outputs",
        ),
        pytest.param(
            640,
            480,
            0,
            [("480p", 640, 480), ("360p", 480, 360), ("240p", 320, 240), ("144p", 192, 144)],
            id="4-by-3",
        ),
        pytest.param(
            1080, 1080, 0, [(q, int(q[:-1]), int(q[:-1])) for q, _, _ in LANDSCAPE_1080], id="square"
        ),
        pytest.param(256, 144, 0, [("144p", 256, 144)], id="exactly-144p"),
    ],
)
def test_plan_produces_every_rung_up_to_the_displayed_short_side(
    width: int, height: int, rotation: int, expected: list[tuple[str, int, int]]
) -> None:
    assert sizes(plan(width, height, rotation)) == expected


@pytest.mark.parametrize(
    ("width", "height", "rotation", "expected"),
    [
        (160, 90, 0, (160, 90)),
        (96, 54, 0, (96, 54)),
        (101, 57, 0, (100, 56)),
        (90, 160, 0, (90, 160)),
        (160, 90, 90, (90, 160)),
        (255, 143, 0, (254, 142)),
    ],
)
def test_a_source_below_144p_gets_one_144p_rendition_at_its_own_even_size(
    width: int, height: int, rotation: int, expected: tuple[int, int]
) -> None:
    assert sizes(plan(width, height, rotation)) == [("144p", *expected)]


@pytest.mark.parametrize(
    ("qualities", "expected"),
    [
        ((Q.P720, Q.P360), ["720p", "360p"]),
        ((Q.P360, Q.P720), ["720p", "360p"]),
        ((Q.P2160, Q.P1440, Q.P720), ["720p"]),
        ((Q.P144,), ["144p"]),
        ((Q.P2160, Q.P1440), []),
    ],
)
def test_a_qualities_subset_keeps_requested_rungs_and_drops_those_above_the_source(
    qualities: tuple[Quality, ...], expected: list[str]
) -> None:
    planned = plan(1920, 1080, 0, qualities)

    assert [p.quality.value for p in planned] == expected
    full = {p.quality: p for p in plan(1920, 1080)}
    assert all(p == full[p.quality] for p in planned)


def test_a_sub_144p_source_with_a_subset_without_144p_plans_nothing() -> None:
    assert plan(160, 90, 0, (Q.P720, Q.P360)) == []
    assert sizes(plan(160, 90, 0, (Q.P720, Q.P144))) == [("144p", 160, 90)]


@pytest.mark.parametrize(
    ("width", "height", "rotation"),
    [
        (w, h, r)
        for w, h in [
            (1920, 1080),
            (1080, 1920),
            (1281, 721),
            (333, 777),
            (4096, 2160),
            (720, 576),
            (145, 1000),
        ]
        for r in (0, 90, 180, 270)
    ],
)
def test_plan_never_upscales_keeps_the_aspect_ratio_and_gives_even_sides(
    width: int, height: int, rotation: int
) -> None:
    shown_w, shown_h = (height, width) if rotation in (90, 270) else (width, height)
    planned = plan(width, height, rotation)

    assert planned
    for p in planned:
        assert min(p.width, p.height) <= min(shown_w, shown_h)
        assert min(p.width, p.height) == p.quality.short_side
        assert p.width % 2 == 0
        assert p.height % 2 == 0
        assert (p.width >= p.height) == (shown_w >= shown_h) or shown_w == shown_h
        assert p.width / p.height == pytest.approx(shown_w / shown_h, rel=0.02)


def test_plan_lists_renditions_highest_rung_first() -> None:
    planned = plan(3840, 2160)

    assert [p.quality for p in planned] == list(RUNGS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("720p", (Q.P720,)),
        ("720p,360p", (Q.P720, Q.P360)),
        (" 1080P , 144p ", (Q.P1080, Q.P144)),
        ("720p,720p,360p", (Q.P720, Q.P360)),
        ("360p,,720p,", (Q.P360, Q.P720)),
    ],
)
def test_parse_qualities_reads_a_comma_list(text: str, expected: tuple[Quality, ...]) -> None:
    assert parse_qualities(text) == expected


@pytest.mark.parametrize(
    ("text", "named"), [("720p,999p", "999p"), ("4k", "4k"), ("720", "720"), ("hd,sd", "hd, sd")]
)
def test_parse_qualities_errors_name_the_bad_rung(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=f"unknown quality {named}"):
        parse_qualities(text)


@pytest.mark.parametrize("text", ["", "  ", ",", " , ,"])
def test_parse_qualities_refuses_an_empty_list(text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        parse_qualities(text)


def test_quality_short_side_is_the_number_of_the_rung() -> None:
    assert [q.short_side for q in RUNGS] == [2160, 1440, 1080, 720, 480, 360, 240, 144]


@pytest.mark.parametrize(
    ("value", "expected"), [(1281, 1280), (1280, 1280), (853.33, 852), (3, 2), (1, 2), (0.5, 2)]
)
def test_even_truncates_to_an_even_number_never_below_two(value: float, expected: int) -> None:
    assert even(value) == expected


@pytest.mark.parametrize(
    ("rotation", "expected"),
    [(0, (1920, 1080)), (90, (1080, 1920)), (-270, (1080, 1920)), (360, (1920, 1080))],
)
def test_display_size_swaps_sides_for_a_quarter_turn(rotation: int, expected: tuple[int, int]) -> None:
    assert display_size(1920, 1080, rotation) == expected


@pytest.mark.parametrize(
    ("sar", "rotation", "expected"),
    [
        (Fraction(32, 27), 0, (853, 480)),  # NTSC DVD, 16:9
        (Fraction(8, 9), 0, (640, 480)),  # NTSC DVD, 4:3
        (Fraction(32, 27), 90, (480, 853)),  # the pixels' shape first, then the turn
        (Fraction(1), 0, (720, 480)),
        (Fraction(0), 0, (720, 480)),  # unknown: square
    ],
)
def test_display_size_widens_anamorphic_pixels(
    sar: Fraction, rotation: int, expected: tuple[int, int]
) -> None:
    assert display_size(720, 480, rotation, sar) == expected


def test_an_anamorphic_source_is_planned_by_its_displayed_picture_with_square_pixels() -> None:
    planned = plan(720, 480, sample_aspect=Fraction(32, 27))

    assert [(r.quality, r.width, r.height) for r in planned] == [
        (Quality.P480, 852, 480),
        (Quality.P360, 640, 360),
        (Quality.P240, 426, 240),
        (Quality.P144, 256, 144),
    ]
