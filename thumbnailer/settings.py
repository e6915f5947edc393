"""Thumbnailer settings."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class ThumbnailerSettings(ServiceSettings):
    #: Posters made at once (the queue's prefetch).
    thumbnailer_concurrency: int = Field(default=2, ge=1)
    thumbnailer_timeout_s: float = Field(default=120.0, gt=0)
    #: ffmpeg is killed (and the poster retried) after this long without progress.
    thumbnailer_stall_timeout_s: float = Field(default=30.0, gt=0)
