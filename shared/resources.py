"""The public JSON shapes of vidq: what the REST API returns and what events carry as ``data``.

SPEC makes an event's ``data`` equal to the REST resource, and the event body equal to the
webhook payload, so these models are defined once and used by the gateway's responses, by
``shared/events.py`` and by the notifier. Readers are tolerant: unknown fields are ignored, and
new fields arrive with defaults.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Lifecycle of a video, a rendition and a thumbnail (SPEC "Statuses").
Status = Literal["queued", "processing", "ready", "failed", "canceled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"ready", "failed", "canceled"})


class Resource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Source(Resource):
    """What ffprobe found in the upload. ``width``/``height`` are the *displayed* size."""

    filename: str
    size_bytes: int
    width: int
    height: int
    duration_s: float
    video_codec: str
    audio_codec: str | None = None
    rotation: int = 0
    frame_rate: float | None = None
    format_name: str | None = None


class Rendition(Resource):
    """One MP4 rung of a video. ``progress`` is a percentage (0–100)."""

    video_id: str
    quality: str
    status: Status
    progress: float = Field(default=0.0, ge=0, le=100)
    width: int
    height: int
    size_bytes: int | None = None
    duration_s: float | None = None
    url: str | None = None
    #: ``url`` signed for whoever holds it (a ``<video src>``, an email), until it expires.
    signed_url: str | None = None
    error: str | None = None
    attempts: int = 0
    #: While ``queued``: its place in its rung's queue (1 = next), across every client's videos.
    queue_position: int | None = Field(default=None, ge=1)
    #: While ``processing``: the seconds its encode should still take, at the encoder's speed.
    eta_s: float | None = Field(default=None, ge=0)
    #: Once ``ready``: the wall seconds of the ffmpeg run that made it (one run can make several
    #: rungs of a video from one decode; each of them shows the run's time).
    encode_seconds: float | None = Field(default=None, ge=0)


class Thumbnail(Resource):
    """The poster JPEGs; ``urls`` and ``widths`` are parallel lists, largest first."""

    status: Status
    urls: list[str] = Field(default_factory=list)
    #: ``urls`` signed for whoever holds them, until they expire.
    signed_urls: list[str] = Field(default_factory=list)
    widths: list[int] = Field(default_factory=list)
    error: str | None = None


class Video(Resource):
    """A client's upload and everything made from it."""

    id: str
    status: Status
    created_at: AwareDatetime
    updated_at: AwareDatetime
    source: Source
    renditions: list[Rendition]
    thumbnail: Thumbnail
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    callback_url: str | None = None
    notify_email: str | None = None
    #: The share of its encoding done (0–100): the renditions' progress weighted by their pixels,
    #: as the work of an encode grows with them (a 1080p rung is 55 of a 1080p ladder's 100).
    progress: float = Field(default=0.0, ge=0, le=100)
    #: While processing: the seconds until its last rendition should be done, when every
    #: rendition not yet done is encoding at a known speed (``None`` while one still waits).
    eta_s: float | None = Field(default=None, ge=0)
