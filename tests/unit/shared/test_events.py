"""SPEC "Events": the envelope, the ten types, tolerant reading, patterns; and worker reports."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.events import (
    ANY_EVENT,
    EVENT_CLASSES,
    EVENT_TYPES,
    TERMINAL_EVENT_TYPES,
    RenditionCompleted,
    VideoReady,
    pattern_matches,
    to_message,
    unknown_patterns,
)
from shared.ids import event_id
from shared.reports import (
    ANY_REPORT,
    RenditionCompletedReport,
    RenditionFailedReport,
    RenditionProgressReport,
    ThumbnailCompletedReport,
    ThumbnailFailedReport,
    WebhookDisabledReport,
)
from tests.unit import factories

SPEC_EVENT_TYPES = [
    "video.uploaded",
    "rendition.progress",
    "rendition.completed",
    "rendition.failed",
    "thumbnail.completed",
    "thumbnail.failed",
    "video.ready",
    "video.failed",
    "video.canceled",
    "video.deleted",
]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def body_of(event_type: str, **overrides: Any) -> dict[str, Any]:
    """A JSON body of ``event_type`` as it travels on the wire."""
    video = factories.video()
    data = (
        factories.rendition(video.id).model_dump(mode="json")
        if event_type.startswith("rendition.")
        else video.model_dump(mode="json")
    )
    body = {
        "id": event_id(video.id, event_type),
        "type": event_type,
        "timestamp": "2025-01-02T03:04:05.123456Z",
        "sequence": 3,
        "data": data,
    }
    body.update(overrides)
    return body


def test_event_types_are_exactly_the_ten_of_the_spec() -> None:
    assert list(EVENT_TYPES) == SPEC_EVENT_TYPES
    assert set(EVENT_CLASSES) == set(SPEC_EVENT_TYPES)
    assert {"video.ready", "video.failed", "video.canceled", "video.deleted"} == TERMINAL_EVENT_TYPES


def test_an_event_serialises_to_exactly_the_spec_envelope() -> None:
    video = factories.video(status="ready")
    event = VideoReady(id=event_id(video.id, "ready"), timestamp=datetime.now(UTC), sequence=7, data=video)

    body = json.loads(event.model_dump_json())

    assert set(body) == {"id", "type", "timestamp", "sequence", "data"}
    assert re.fullmatch(r"evt_[0-9a-f]{32}", body["id"])
    assert body["type"] == "video.ready"
    assert RFC3339.match(body["timestamp"]), body["timestamp"]
    assert datetime.fromisoformat(body["timestamp"]) == event.timestamp
    assert body["sequence"] == 7
    assert body["data"] == json.loads(video.model_dump_json())


@pytest.mark.parametrize("event_type", SPEC_EVENT_TYPES)
def test_any_event_picks_the_class_of_each_type(event_type: str) -> None:
    event = ANY_EVENT.validate_json(json.dumps(body_of(event_type)))

    assert type(event) is EVENT_CLASSES[event_type]
    assert event.type == event_type
    assert event.sequence == 3
    assert event.timestamp == datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


@pytest.mark.parametrize("event_type", SPEC_EVENT_TYPES)
def test_an_event_round_trips_through_json(event_type: str) -> None:
    event = ANY_EVENT.validate_python(body_of(event_type))

    assert ANY_EVENT.validate_json(event.model_dump_json()) == event


def test_any_event_refuses_an_unknown_type() -> None:
    with pytest.raises(ValidationError, match=r"video\.exploded"):
        ANY_EVENT.validate_python(body_of("video.exploded"))


def test_a_rendition_event_refuses_a_video_as_data() -> None:
    body = body_of("video.ready")
    body["type"] = "rendition.completed"

    with pytest.raises(ValidationError):
        ANY_EVENT.validate_python(body)


@pytest.mark.parametrize(
    "overrides",
    [
        {"id": "vid_123"},
        {"id": "evt_has spaces"},
        {"sequence": 0},
        {"timestamp": "2025-01-02T03:04:05"},
        {"timestamp": "yesterday"},
    ],
    ids=["wrong-prefix", "bad-chars", "sequence-from-1", "naive-timestamp", "not-a-time"],
)
def test_an_event_with_a_bad_envelope_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ANY_EVENT.validate_python(body_of("video.ready", **overrides))


def test_unknown_fields_are_ignored_at_every_level() -> None:
    body = body_of("rendition.completed", future_field={"x": 1})
    body["data"]["codec_profile"] = "high"

    event = ANY_EVENT.validate_python(body)

    assert isinstance(event, RenditionCompleted)
    assert "future_field" not in event.model_dump()
    assert "codec_profile" not in event.data.model_dump()


def test_video_id_of_an_event_is_its_video() -> None:
    video = factories.video()
    rendition_event = ANY_EVENT.validate_python(
        {**body_of("rendition.failed"), "data": factories.rendition(video.id).model_dump(mode="json")}
    )
    video_event = ANY_EVENT.validate_python(
        {**body_of("video.failed"), "data": video.model_dump(mode="json")}
    )

    assert rendition_event.video_id == video.id
    assert video_event.video_id == video.id


def test_to_message_carries_the_event_id_type_and_video() -> None:
    video = factories.video()
    event = RenditionCompleted(
        id=event_id("job_1", "rendition.completed"),
        timestamp=datetime.now(UTC),
        sequence=2,
        data=factories.rendition(video.id),
    )

    message = to_message(event)

    assert message.message_id == event.id
    assert message.type == "rendition.completed"
    assert message.correlation_id == video.id
    assert message.app_id == "gateway"
    assert ANY_EVENT.validate_json(message.body) == event


@pytest.mark.parametrize(
    ("pattern", "selected"),
    [
        ("video.*", {"video.uploaded", "video.ready", "video.failed", "video.canceled", "video.deleted"}),
        ("*.failed", {"rendition.failed", "thumbnail.failed", "video.failed"}),
        ("rendition.*", {"rendition.progress", "rendition.completed", "rendition.failed"}),
        ("video.ready", {"video.ready"}),
        ("*", set(SPEC_EVENT_TYPES)),
        ("video", set()),
        ("#", set()),
    ],
)
def test_pattern_matches_selects_event_types_like_a_shell_glob(pattern: str, selected: set[str]) -> None:
    assert {t for t in EVENT_TYPES if pattern_matches(pattern, t)} == selected


def test_pattern_matching_is_case_sensitive() -> None:
    assert not pattern_matches("VIDEO.*", "video.ready")


@pytest.mark.parametrize(
    "pattern", ["video.**", "video.r*", "video.[rf]*", "?ideo.ready", "video..ready", ".*", "Video.*"]
)
def test_a_pattern_is_words_and_stars_between_dots(pattern: str) -> None:
    assert unknown_patterns([pattern]) == [pattern]


def test_unknown_patterns_lists_only_the_patterns_that_select_nothing() -> None:
    assert unknown_patterns(["video.*", "vidoe.ready", "*", "thumbnail.done", "*.failed"]) == [
        "vidoe.ready",
        "thumbnail.done",
    ]
    assert unknown_patterns([]) == []


REPORTS: list[tuple[type[Any], dict[str, Any]]] = [
    (RenditionProgressReport, {"job_id": "job_1", "quality": "720p", "progress": 42.5, "speed": 1.5}),
    (
        RenditionCompletedReport,
        {
            "job_id": "job_1",
            "quality": "720p",
            "width": 1280,
            "height": 720,
            "size_bytes": 123,
            "duration_s": 10.0,
            "encode_seconds": 3.2,
        },
    ),
    (RenditionFailedReport, {"job_id": "job_1", "quality": "720p", "error": "ffmpeg exited with status 1"}),
    (ThumbnailCompletedReport, {"widths": [1280, 640, 320]}),
    (ThumbnailFailedReport, {"error": "no frame"}),
]


@pytest.mark.parametrize(("cls", "fields"), REPORTS, ids=[cls.__name__ for cls, _ in REPORTS])
def test_any_report_picks_the_class_of_each_report_type(cls: type[Any], fields: dict[str, Any]) -> None:
    report_type = cls.model_fields["type"].default
    body = {
        "id": event_id("x", report_type),
        "type": report_type,
        "timestamp": "2025-01-02T03:04:05Z",
        "video_id": "vid_0123456789ab",
        "unknown": "ignored",
        **fields,
    }

    report = ANY_REPORT.validate_json(json.dumps(body))

    assert type(report) is cls
    assert report_type in EVENT_TYPES
    assert not isinstance(report, WebhookDisabledReport)
    assert report.video_id == "vid_0123456789ab"


def test_report_types_are_the_worker_event_types() -> None:
    assert {cls.model_fields["type"].default for cls, _ in REPORTS} == {
        "rendition.progress",
        "rendition.completed",
        "rendition.failed",
        "thumbnail.completed",
        "thumbnail.failed",
    }


def test_a_webhook_disabled_report_decodes_without_a_video() -> None:
    body = {
        "id": event_id("whk_1", "webhook.disabled"),
        "type": "webhook.disabled",
        "timestamp": "2025-01-02T03:04:05Z",
        "webhook_id": "whk_1",
        "reason": "410 Gone",
    }
    report = ANY_REPORT.validate_json(json.dumps(body))
    assert isinstance(report, WebhookDisabledReport)
    assert report.webhook_id == "whk_1"


@pytest.mark.parametrize("progress", [-1, 100.1])
def test_a_progress_report_outside_0_to_100_is_refused(progress: float) -> None:
    with pytest.raises(ValidationError, match="progress"):
        ANY_REPORT.validate_python(
            {
                "id": "evt_1",
                "type": "rendition.progress",
                "timestamp": "2025-01-02T03:04:05Z",
                "video_id": "vid_0123456789ab",
                "job_id": "job_1",
                "quality": "720p",
                "progress": progress,
            }
        )


def test_any_report_refuses_a_public_only_event_type() -> None:
    with pytest.raises(ValidationError):
        ANY_REPORT.validate_python(
            {"id": "evt_1", "type": "video.ready", "timestamp": "2025-01-02T03:04:05Z", "video_id": "vid_1"}
        )


def test_the_largest_event_a_video_can_make_stays_under_20_kb() -> None:
    # Standard Webhooks advises payloads under ~20 kB; ours are bounded by construction:
    # metadata is at most 4 KiB, a video has at most 8 renditions, filenames 255 characters.
    rungs = ("2160p", "1440p", "1080p", "720p", "480p", "360p", "240p", "144p")
    video = factories.video(
        renditions=[
            factories.rendition("vid_0123456789ab", q, url="https://vidq.example/" + "x" * 200) for q in rungs
        ],
        metadata={"k": "v" * 4000},
        source=factories.source(filename="f" * 255),
    )
    body = VideoReady(id=event_id("v", "video.ready"), timestamp=datetime.now(UTC), sequence=1, data=video)
    assert len(body.model_dump_json().encode()) < 20_000
