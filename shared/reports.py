"""What workers report to the gateway on ``vidq.results``; the gateway turns them into events.

Besides the media workers, the notifier reports here when an endpoint must be disabled: the
gateway owns the subscriptions, so it makes the change.

Workers cannot number a video's events (several processes work on one video at once), so they
report facts here and the gateway's projection, which owns the video, records each fact and
publishes the public event of the same ``id`` and ``type`` with the next ``sequence`` (see
``docs/architecture.md``). Report ids are deterministic (``shared.ids.event_id``), so a
redelivered job reports the same ids and the projection drops the duplicates.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from shared.events import EventId
from shared.messaging.codec import outgoing
from shared.messaging.publisher import Publisher
from shared.messaging.topology import RESULTS

#: On a ``video.uploaded`` message that the gateway sends the thumbnailer again (a retry of a
#: failed poster): the run's id, which the thumbnailer's reports carry.
THUMBNAIL_RUN_HEADER = "vidq-thumbnail-run"


class Report(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: EventId
    type: str
    timestamp: AwareDatetime
    video_id: str


class RenditionReport(Report):
    job_id: str
    quality: str


class RenditionProgressReport(RenditionReport):
    type: Literal["rendition.progress"] = "rendition.progress"
    progress: float = Field(ge=0, le=100)
    speed: float | None = None


class RenditionCompletedReport(RenditionReport):
    type: Literal["rendition.completed"] = "rendition.completed"
    width: int
    height: int
    size_bytes: int
    duration_s: float
    encode_seconds: float


class RenditionFailedReport(RenditionReport):
    type: Literal["rendition.failed"] = "rendition.failed"
    error: str
    attempts: int = 1


class ThumbnailReport(Report):
    #: The thumbnail's run: ``None`` for the upload's own, an id for each retry (the message's
    #: :data:`THUMBNAIL_RUN_HEADER`); the projection ignores a report of a run that is not current.
    run: str | None = None


class ThumbnailStartedReport(ThumbnailReport):
    """The poster is being made: the thumbnail (and the video, if it was still queued) is processing."""

    type: Literal["thumbnail.started"] = "thumbnail.started"


class ThumbnailCompletedReport(ThumbnailReport):
    type: Literal["thumbnail.completed"] = "thumbnail.completed"
    widths: list[int]


class ThumbnailFailedReport(ThumbnailReport):
    type: Literal["thumbnail.failed"] = "thumbnail.failed"
    error: str


class WebhookDisabledReport(BaseModel):
    """The notifier's word that an endpoint must stop receiving (it answered 410 Gone, …)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: EventId
    type: Literal["webhook.disabled"] = "webhook.disabled"
    timestamp: AwareDatetime
    webhook_id: str
    reason: str


VideoReport = Annotated[
    RenditionProgressReport
    | RenditionCompletedReport
    | RenditionFailedReport
    | ThumbnailStartedReport
    | ThumbnailCompletedReport
    | ThumbnailFailedReport,
    Field(discriminator="type"),
]
AnyReport = Annotated[
    RenditionProgressReport
    | RenditionCompletedReport
    | RenditionFailedReport
    | ThumbnailStartedReport
    | ThumbnailCompletedReport
    | ThumbnailFailedReport
    | WebhookDisabledReport,
    Field(discriminator="type"),
]
ANY_REPORT: TypeAdapter[AnyReport] = TypeAdapter(AnyReport)


async def publish_report(
    publisher: Publisher, report: Report | WebhookDisabledReport, *, app_id: str
) -> None:
    """Publish a report to ``vidq.results`` (key = its type), with confirms."""
    video_id = report.video_id if isinstance(report, Report) else None
    message = outgoing(report, message_id=report.id, type=report.type, correlation_id=video_id, app_id=app_id)
    await publisher.publish(RESULTS, report.type, message)
