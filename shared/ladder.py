"""The quality ladder (SPEC "Quality ladder"), as pure functions over probe geometry.

A rung is named by the short side of the *displayed* picture: a 1080x1920 portrait clip is
1080p, a 1920x1080 clip stored with 90° rotation metadata displays as 1080x1920, and an anamorphic
720x480 frame with 32:27 pixels displays as 853x480 (renditions have square pixels). Every rung
whose short side is at most the source's is produced; nothing is upscaled. A source smaller than
144p gets one ``144p`` rendition at its own size. Both output sides are even (``trunc(x/2)*2``)
and the aspect ratio is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction


class Quality(StrEnum):
    """A rung of the ladder, highest first. The value is also the routing key and queue suffix."""

    P2160 = "2160p"
    P1440 = "1440p"
    P1080 = "1080p"
    P720 = "720p"
    P480 = "480p"
    P360 = "360p"
    P240 = "240p"
    P144 = "144p"

    @property
    def short_side(self) -> int:
        """The rung's short side in pixels (``720`` for ``720p``)."""
        return int(self.value[:-1])


#: Rungs from highest to lowest.
RUNGS: tuple[Quality, ...] = tuple(Quality)


@dataclass(frozen=True, slots=True)
class PlannedRendition:
    """One output the transcoder will make: a rung and its exact frame size."""

    quality: Quality
    width: int
    height: int


def even(value: float | Fraction) -> int:
    """Round down to an even number, never below 2 (H.264 with yuv420p needs even sides)."""
    return max(2, int(value / 2) * 2)


def display_size(
    width: int, height: int, rotation: int, sample_aspect: Fraction = Fraction(1)
) -> tuple[int, int]:
    """The displayed size of a stored frame, in square pixels.

    An anamorphic frame (``sample_aspect`` ≠ 1, e.g. DVD's 720x480 at 32:27) is as wide as its
    pixels make it (853x480); then the sides swap for a 90° or 270° rotation.
    """
    shown_w, shown_h = _displayed(width, height, rotation, sample_aspect)
    return max(1, round(shown_w)), max(1, round(shown_h))


def _displayed(width: int, height: int, rotation: int, sample_aspect: Fraction) -> tuple[Fraction, Fraction]:
    """:func:`display_size` before rounding: rungs are scaled from the exact aspect."""
    shown_w = width * sample_aspect if sample_aspect > 0 else Fraction(width)
    if rotation % 180 == 90:  # noqa: PLR2004 - a quarter turn
        return Fraction(height), shown_w
    return shown_w, Fraction(height)


def scaled_size(width: float | Fraction, height: float | Fraction, short_side: int) -> tuple[int, int]:
    """Scale a displayed ``width x height`` so its short side is ``short_side``, aspect kept."""
    if width <= height:
        return even(short_side), even(height * short_side / width)
    return even(width * short_side / height), even(short_side)


def parse_qualities(text: str) -> tuple[Quality, ...]:
    """Parse a comma list such as ``"720p,360p"``; raises ``ValueError`` naming a bad rung."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("qualities is empty; name at least one rung, e.g. 720p")
    known = {q.value: q for q in Quality}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"unknown quality {', '.join(unknown)}; rungs are {', '.join(q.value for q in RUNGS)}"
        )
    return tuple(dict.fromkeys(known[name] for name in names))


def plan(
    width: int,
    height: int,
    rotation: int = 0,
    qualities: Iterable[Quality] | None = None,
    sample_aspect: Fraction = Fraction(1),
) -> list[PlannedRendition]:
    """Plan the renditions for a source of stored size ``width x height`` and ``rotation``.

    Args:
        width: stored frame width from ffprobe.
        height: stored frame height from ffprobe.
        rotation: rotation metadata in degrees (any sign; 90 and 270 swap the sides).
        qualities: the client's subset, or ``None`` for every rung that fits.
        sample_aspect: the stored pixels' aspect ratio (anamorphic sources); renditions have
            square pixels.

    Returns:
        The renditions to make, highest rung first. Empty when the subset asks only for rungs
        above the source.
    """
    shown_w, shown_h = _displayed(width, height, rotation, sample_aspect)
    short = min(shown_w, shown_h)
    wanted = set(RUNGS if qualities is None else qualities)
    if short < Quality.P144.short_side:
        if Quality.P144 not in wanted:
            return []
        return [PlannedRendition(Quality.P144, even(shown_w), even(shown_h))]
    return [
        PlannedRendition(q, *scaled_size(shown_w, shown_h, q.short_side))
        for q in RUNGS
        if q in wanted and q.short_side <= short
    ]
