"""Small builders of valid resources, events and commands for unit tests (defaults overridable)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.commands import TranscodeRendition
from shared.ids import new_id
from shared.ladder import Quality
from shared.resources import Rendition, Source, Thumbnail, Video

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def source(**values: Any) -> Source:
    fields: dict[str, Any] = {
        "filename": "holiday.mp4",
        "size_bytes": 1_000_000,
        "width": 1920,
        "height": 1080,
        "duration_s": 10.0,
        "video_codec": "h264",
        "audio_codec": "aac",
    }
    fields.update(values)
    return Source(**fields)


def rendition(video_id: str, quality: str = "720p", **values: Any) -> Rendition:
    fields: dict[str, Any] = {
        "video_id": video_id,
        "quality": quality,
        "status": "ready",
        "width": 1280,
        "height": 720,
    }
    fields.update(values)
    return Rendition(**fields)


def video(**values: Any) -> Video:
    fields: dict[str, Any] = {
        "id": new_id("vid"),
        "status": "queued",
        "created_at": WHEN,
        "updated_at": WHEN,
        "source": source(),
        "renditions": [],
        "thumbnail": Thumbnail(status="queued"),
    }
    fields.update(values)
    return Video(**fields)


def transcode(**values: Any) -> TranscodeRendition:
    fields: dict[str, Any] = {
        "job_id": new_id("job"),
        "video_id": new_id("vid"),
        "quality": Quality.P720,
        "width": 1280,
        "height": 720,
        "has_audio": True,
        "duration_s": 10.0,
    }
    fields.update(values)
    return TranscodeRendition(**fields)
