"""The ten public lifecycle events (SPEC "Events"): the body on ``vidq.events`` and of webhooks.

Body: ``{"id": "evt_…", "type": "video.ready", "timestamp": …, "sequence": 7, "data": {…}}``.
``timestamp`` is when the event occurred; ``sequence`` rises by one with each event of the same
video. The gateway is the only publisher of these (it numbers them in the same transaction that
changes the video); workers report what they did on ``vidq.results`` (``shared/reports.py``).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from shared.messaging.codec import OutgoingMessage, outgoing
from shared.resources import Rendition, Video

EventId = Annotated[str, StringConstraints(pattern=r"^evt_[0-9a-zA-Z_]+$", max_length=64)]

EVENT_TYPES: tuple[str, ...] = (
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
)
#: After one of these, a video's event stream ends.
TERMINAL_EVENT_TYPES: frozenset[str] = frozenset(
    {"video.ready", "video.failed", "video.canceled", "video.deleted"}
)


class Event(BaseModel):
    """The envelope every public event shares."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: EventId
    type: str
    timestamp: AwareDatetime
    sequence: int = Field(ge=1)

    @property
    def video_id(self) -> str:
        """The video this event is about."""
        raise NotImplementedError


class VideoEvent(Event):
    data: Video

    @property
    def video_id(self) -> str:
        return self.data.id


class RenditionEvent(Event):
    data: Rendition

    @property
    def video_id(self) -> str:
        return self.data.video_id


class VideoUploaded(VideoEvent):
    type: Literal["video.uploaded"] = "video.uploaded"


class RenditionProgress(RenditionEvent):
    type: Literal["rendition.progress"] = "rendition.progress"


class RenditionCompleted(RenditionEvent):
    type: Literal["rendition.completed"] = "rendition.completed"


class RenditionFailed(RenditionEvent):
    type: Literal["rendition.failed"] = "rendition.failed"


class ThumbnailCompleted(VideoEvent):
    type: Literal["thumbnail.completed"] = "thumbnail.completed"


class ThumbnailFailed(VideoEvent):
    type: Literal["thumbnail.failed"] = "thumbnail.failed"


class VideoReady(VideoEvent):
    type: Literal["video.ready"] = "video.ready"


class VideoFailed(VideoEvent):
    type: Literal["video.failed"] = "video.failed"


class VideoCanceled(VideoEvent):
    type: Literal["video.canceled"] = "video.canceled"


class VideoDeleted(VideoEvent):
    type: Literal["video.deleted"] = "video.deleted"


AnyEvent = Annotated[
    VideoUploaded
    | RenditionProgress
    | RenditionCompleted
    | RenditionFailed
    | ThumbnailCompleted
    | ThumbnailFailed
    | VideoReady
    | VideoFailed
    | VideoCanceled
    | VideoDeleted,
    Field(discriminator="type"),
]
ANY_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

#: The concrete class of each event type.
EVENT_CLASSES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        VideoUploaded,
        RenditionProgress,
        RenditionCompleted,
        RenditionFailed,
        ThumbnailCompleted,
        ThumbnailFailed,
        VideoReady,
        VideoFailed,
        VideoCanceled,
        VideoDeleted,
    )
}


def to_message(event: Event, *, app_id: str = "gateway") -> OutgoingMessage:
    """The AMQP message of a public event: ``message_id`` = event id, ``type`` = event type."""
    return outgoing(event, message_id=event.id, type=event.type, correlation_id=event.video_id, app_id=app_id)


def pattern_matches(pattern: str, event_type: str) -> bool:
    """Whether a subscription pattern (``video.*``, ``*.failed``, ``*``) selects ``event_type``."""
    return fnmatch.fnmatchcase(event_type, pattern)


#: A pattern's parts, between dots, are each a word of an event type or ``*``.
_PATTERN = re.compile(r"(\*|[a-z][a-z_]*)(\.(\*|[a-z][a-z_]*))*")


def unknown_patterns(patterns: list[str]) -> list[str]:
    """The patterns that are not made of words and ``*``, or select no event type (typos)."""
    return [
        p
        for p in patterns
        if not _PATTERN.fullmatch(p) or not any(pattern_matches(p, t) for t in EVENT_TYPES)
    ]
