"""Request and listing models of the REST API (public resources are in ``shared/resources.py``)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AnyHttpUrl, BaseModel, BeforeValidator, ConfigDict, EmailStr, Field, UrlConstraints

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

#: Spaces and control characters have no place in a URL. URL parsers drop tabs and line breaks
#: and encode spaces, so such a URL would be kept as another one than the client wrote.
_NOT_IN_URLS = re.compile(r"[\x00-\x20\x7f]")
NOT_IN_URLS = "has spaces or control characters; percent-encode them (a space is %20)"


def printable_url(value: Any) -> Any:
    """Refuse a URL with spaces or control characters in it (a ``BeforeValidator``)."""
    if isinstance(value, str) and _NOT_IN_URLS.search(value):
        raise ValueError(f"the URL {NOT_IN_URLS}")
    return value


#: Why a webhook or callback URL may not carry ``user:password@``: never sent (a receiver behind
#: basic auth would fail every delivery), and it would be shown back in every listing.
CREDENTIALS_REFUSED = (
    "credentials in a URL (user:password@) are not sent: vidq signs every delivery instead "
    "(check the webhook-signature header)"
)


def no_credentials(value: Any) -> Any:
    """Refuse a URL with ``user:password@`` in it (a ``BeforeValidator``)."""
    if isinstance(value, str) and "@" in value:
        try:
            parts = urlsplit(value)
            credentials = parts.username is not None or parts.password is not None
        except ValueError:  # not a URL: the URL's own validation says so
            return value
        if credentials:
            raise ValueError(CREDENTIALS_REFUSED)
    return value


#: A URL to download from (an import): the downloader refuses credentials with its own words.
SourceUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=MAX_URL_LENGTH), BeforeValidator(printable_url)]
WebhookUrl = Annotated[
    AnyHttpUrl,
    UrlConstraints(max_length=MAX_URL_LENGTH),
    BeforeValidator(no_credentials),
    BeforeValidator(printable_url),
]


class VideoImport(BaseModel):
    """POST /v1/videos as JSON: the video at `url` instead of a file, with the upload's options."""

    model_config = ConfigDict(extra="forbid")

    url: SourceUrl = Field(description="An http(s) URL of the video file; vidq downloads it.")
    qualities: str | list[str] | None = Field(
        default=None, description='Rungs, as a comma list ("720p,360p") or a list; default all that fit.'
    )
    callback_url: str | None = Field(
        default=None,
        description="Receives this video's events, signed.",
        json_schema_extra={"format": "uri"},
    )
    notify_email: str | None = Field(
        default=None,
        description="Gets an email on video.ready / video.failed.",
        json_schema_extra={"format": "email"},
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="A JSON object, at most 4 KiB and 32 levels deep, echoed back."
    )


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
    previous_secrets_sign_until: list[datetime] = Field(
        default_factory=list,
        description=(
            "When each earlier secret, still signing beside the current one after a rotation, "
            "stops (newest first); empty when only the current secret signs."
        ),
    )
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookPublic):
    secret: str = Field(description="Standard Webhooks signing secret (whsec_…); shown only now.")


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: int = Field(
        default=86_400,
        ge=0,
        le=604_800,
        description=(
            "How long the secrets in use until now keep signing beside the new one (at most "
            "this long; 0 stops them at once, for a secret that leaked). Default 24 hours."
        ),
    )


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
    video_id: str | None = Field(description="The event's video; null for a test event (webhook.test).")
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    completed_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[AttemptPublic]


class DeliveryDetail(DeliveryPublic):
    payload: dict[str, Any] = Field(
        description="The event as the endpoint received it: the body every attempt sent (its bytes signed)."
    )


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


#: A direct upload's URL lasts an hour unless asked otherwise; a week at most (as Mux's).
UPLOAD_TIMEOUT_S = 3600
MAX_UPLOAD_TIMEOUT_S = 7 * 24 * 3600


class UploadCreate(BaseModel):
    """A direct upload: the new video's options, set by the client; the file comes from a browser."""

    model_config = ConfigDict(extra="forbid")

    qualities: list[str] | None = Field(
        default=None, max_length=16, description='Rungs to make, e.g. ["720p", "360p"].'
    )
    callback_url: str | None = Field(
        default=None, max_length=MAX_URL_LENGTH, description="Receives the video's events, signed."
    )
    notify_email: str | None = Field(
        default=None, max_length=320, description="Gets an email on video.ready / video.failed."
    )
    metadata: dict[str, object] | None = Field(
        default=None, description="At most 4 KiB of JSON, echoed back."
    )
    timeout_s: int = Field(
        default=UPLOAD_TIMEOUT_S,
        ge=60,
        le=MAX_UPLOAD_TIMEOUT_S,
        description="How long the URL takes an upload, in seconds.",
    )
    cors_origin: str | None = Field(
        default=None,
        max_length=MAX_URL_LENGTH,
        description='The web page origin that uploads (e.g. "https://app.example.com", or "*"): '
        "its browser may read the answer.",
    )


class DirectUpload(BaseModel):
    """A URL that takes one upload without the API key, for the client that made it."""

    id: str
    status: str = Field(description="waiting, asset_created, cancelled or timed_out.")
    url: str | None = Field(description="POST the file here (multipart, field 'file'), while waiting.")
    expires_at: datetime
    created_at: datetime
    video_id: str | None = Field(description="The video the upload made (asset_created).")
    cors_origin: str | None
    qualities: list[str] | None
    callback_url: str | None
    notify_email: str | None
    metadata: dict[str, object]


class UploadPage(BaseModel):
    data: list[DirectUpload]
