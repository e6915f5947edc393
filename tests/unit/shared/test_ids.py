"""Prefixed ids: time-sortable new ids, deterministic event ids."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from shared import ids
from shared.events import EventId
from shared.ids import PREFIXES, event_id, new_id
from shared.storage import source_key


@pytest.mark.parametrize("prefix", sorted(PREFIXES))
def test_a_new_id_is_its_prefix_then_time_then_random_hex(prefix: str) -> None:
    assert re.fullmatch(rf"{prefix}_[0-9a-f]{{12}}[0-9a-f]{{16}}", new_id(prefix))


def test_an_unknown_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="'usr'"):
        new_id("usr")


def test_new_ids_are_unique() -> None:
    made = [new_id("evt") for _ in range(2000)]

    assert len(set(made)) == len(made)


def test_new_ids_sort_by_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    for millis in (1_000, 1_001, 65_536, 1_700_000_000_000):
        monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda millis=millis: millis * 1_000_000))
        made.append(new_id("vid"))

    assert sorted(made) == made
    assert made[0].startswith("vid_0000000003e8")


def test_a_new_video_id_is_accepted_by_storage() -> None:
    assert source_key(new_id("vid")).startswith("videos/vid_")


def test_event_id_is_the_same_for_the_same_parts() -> None:
    assert event_id("job_1", "rendition.completed") == event_id("job_1", "rendition.completed")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("job_1", "rendition.completed"), ("job_2", "rendition.completed")),
        (("job_1", "rendition.completed"), ("job_1", "rendition.failed")),
        (("ab", "c"), ("a", "bc")),
        (("a",), ("a", "")),
    ],
)
def test_event_id_differs_when_the_parts_differ(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert event_id(*a) != event_id(*b)


def test_event_id_is_a_valid_event_id() -> None:
    from pydantic import TypeAdapter

    value = event_id("vid_1", "thumbnail.completed")

    assert re.fullmatch(r"evt_[0-9a-f]{32}", value)
    assert TypeAdapter(EventId).validate_python(value) == value
    assert TypeAdapter(EventId).validate_python(new_id("evt"))
