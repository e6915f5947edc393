from __future__ import annotations

import pytest

from vidq.sse import ServerEvent, parse


def test_a_blank_line_dispatches_an_event() -> None:
    lines = [
        "id: 1",
        "event: video.uploaded",
        'data: {"a": 1}',
        "",
        "id: 2",
        "event: video.ready",
        "data: {}",
        "",
    ]
    assert list(parse(lines)) == [
        ServerEvent("1", "video.uploaded", '{"a": 1}'),
        ServerEvent("2", "video.ready", "{}"),
    ]


def test_comments_and_events_without_data_are_skipped() -> None:
    lines = [": ping", "", "event: nothing", "", "data: x", ""]
    assert list(parse(lines)) == [ServerEvent("", "message", "x")]


def test_data_lines_join_with_newlines_and_one_leading_space_goes() -> None:
    assert list(parse(["data:a", "data:  b", ""])) == [ServerEvent("", "message", "a\n b")]


def test_the_last_id_persists_and_an_unfinished_event_is_dropped() -> None:
    events = list(parse(["id: 7", "data: a", "", "data: b", "", "id: 8", "data: cut short"]))
    assert [(e.id, e.data) for e in events] == [("7", "a"), ("7", "b")]


def test_an_event_knows_its_sequence_and_body() -> None:
    event = ServerEvent("3", "video.ready", '{"type": "video.ready", "sequence": 3}')
    assert event.sequence == 3
    assert event.json() == {"type": "video.ready", "sequence": 3}
    assert ServerEvent("", "message", "{}").sequence == 0


def test_an_event_whose_data_is_not_an_object_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        ServerEvent("1", "x", "[1]").json()
