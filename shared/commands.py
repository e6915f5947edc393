"""Commands: imperative work items with one logical consumer each.

``TranscodeRendition`` goes to ``vidq.transcode`` (routing key = quality) and carries everything
the transcoder needs, so it never reads the gateway's tables. ``DeliverWebhook`` is the
notifier's own unit of retry: one per (event, endpoint). ``ReplayWebhook`` and ``SendTestEvent``
are what a client asks of an endpoint through the gateway (``vidq.deliveries``, keys ``replay``
and ``test``). ``EmailEndpointDisabled`` is the notifier's own, to its email queue (key
``notice``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from shared.ids import VideoId
from shared.ladder import Quality


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Sibling(Command):
    """Another rendition of the same video, dispatched together (see ``siblings``)."""

    job_id: str
    quality: Quality
    width: int = Field(ge=2)
    height: int = Field(ge=2)


class TranscodeRendition(Command):
    """Encode one rung of one video. ``job_id`` is new for every dispatch of the rung.

    ``siblings`` are the video's other renditions dispatched with it: a transcoder that serves
    them may claim them too and encode them all from one decode of the source (their own
    messages are then duplicates). A retried rendition travels alone.
    """

    job_id: str
    video_id: VideoId
    quality: Quality
    width: int = Field(ge=2)
    height: int = Field(ge=2)
    has_audio: bool
    duration_s: float = Field(gt=0)
    #: When the gateway dispatched it (measures the time renditions wait in their queue).
    dispatched_at: AwareDatetime | None = None
    siblings: tuple[Sibling, ...] = ()

    def sibling(self, other: Sibling) -> TranscodeRendition:
        """The command of a sibling rendition (travelling alone)."""
        return self.model_copy(
            update={
                "job_id": other.job_id,
                "quality": other.quality,
                "width": other.width,
                "height": other.height,
                "siblings": (),
            }
        )


class DeliverWebhook(Command):
    """Attempt one webhook delivery now (the notifier retries it through its delay queues)."""

    delivery_id: str
    manual: bool = False


class ReplayWebhook(Command):
    """Send an endpoint its events again: those that occurred in ``[since, until)``.

    With ``failed_only`` only the events whose delivery to it finally failed.
    """

    kind: Literal["replay"] = "replay"
    webhook_id: str
    since: AwareDatetime
    until: AwareDatetime | None = None
    failed_only: bool = False


class SendTestEvent(Command):
    """Send an endpoint a ``webhook.test`` event (ids chosen by the gateway, to answer with)."""

    kind: Literal["test"] = "test"
    webhook_id: str
    event_id: str
    delivery_id: str


class EmailEndpointDisabled(Command):
    """Email a client's owners that one of its endpoints was disabled (once per ``notice_id``).

    Its own message on the email queue, with the email schedule's retries and dead-letter queue:
    sent from the delivery that disabled the endpoint, a mail server that is away for a while
    lost the notice (the delivery, settled, was never run again).
    """

    type: Literal["webhook.disabled.notice"] = "webhook.disabled.notice"
    notice_id: str
    client_id: str
    webhook_id: str
    url: str
    reason: str


WebhookRequest = Annotated[ReplayWebhook | SendTestEvent, Field(discriminator="kind")]
WEBHOOK_REQUEST: TypeAdapter[WebhookRequest] = TypeAdapter(WebhookRequest)
