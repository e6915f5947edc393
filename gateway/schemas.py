"""Request and listing models of the REST API (public resources are in ``shared/resources.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, EmailStr, Field, UrlConstraints

from shared.resources import Video


class VideoPage(BaseModel):
    data: list[Video]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last one.")
    has_more: bool


#: The longest webhook URL: every HTTP client and proxy takes 2,048 characters (httpx refuses
#: 65,536); a longer one could be registered and never sent to.
MAX_URL_LENGTH = 2048
#: The most patterns one subscription may have (every event type is far fewer).
MAX_PATTERNS = 50

WebhookUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=MAX_URL_LENGTH)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    events: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=MAX_PATTERNS,
        description='Event type patterns, e.g. ["video.*", "rendition.completed"]; "*" is every event.',
    )
    description: str = Field(default="", max_length=500)


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl | None = None
    events: list[str] | None = Field(default=None, min_length=1, max_length=MAX_PATTERNS)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookPublic):
    secret: str = Field(description="Standard Webhooks signing secret (whsec_…); shown only now.")


class WebhookPage(BaseModel):
    data: list[WebhookPublic]


class AttemptPublic(BaseModel):
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_body: str | None
    manual: bool


class DeliveryPublic(BaseModel):
    id: str
    event_id: str
    event_type: str
    video_id: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    completed_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[AttemptPublic]


class DeliveryPage(BaseModel):
    data: list[DeliveryPublic]
    next_cursor: str | None
    has_more: bool


class Account(BaseModel):
    client_id: str
    name: str
    callback_secret: str = Field(description="Signs events sent to a video's callback_url (whsec_…).")
    notify_emails: list[str] = Field(
        description="Get an email for every video.ready / video.failed, and when an endpoint is disabled."
    )


class AccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notify_emails: list[EmailStr] = Field(max_length=10)
