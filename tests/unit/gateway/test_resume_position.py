"""Where an event stream resumes: ``?after=``, ``Last-Event-ID``, or the start."""

from __future__ import annotations

import pytest

from gateway.api.videos import resume_position
from gateway.errors import InvalidRequest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("after", "last_event_id", "position"),
    [
        (None, None, 0),
        (None, "7", 7),
        (None, " 7 ", 7),
        (3, "7", 3),  # ?after= wins
        (None, "abc", 0),
        (None, "-1", 0),
        (None, "\u00b2", 0),  # superscript two: str.isdigit says yes, int() says no
        (None, "1\u00b3", 0),
        (None, "\u0663", 0),  # an Arabic-Indic three: a digit, not an ASCII one
    ],
)
def test_a_position_is_ascii_digits_or_the_start(
    after: int | None, last_event_id: str | None, position: int
) -> None:
    assert resume_position(after, last_event_id) == position


def test_a_position_past_any_sequence_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="Last-Event-ID is past any event's sequence"):
        resume_position(None, "99999999999")
