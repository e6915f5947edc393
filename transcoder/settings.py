"""Transcoder settings: which rungs this process serves and how it runs ffmpeg."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode

from shared.ladder import RUNGS, Quality, parse_qualities
from shared.settings import ServiceSettings


def _qualities(value: object) -> object:
    return parse_qualities(value) if isinstance(value, str) else value


class TranscoderSettings(ServiceSettings):
    #: The rungs (queues) this process consumes, e.g. ``VIDQ_TRANSCODER_QUALITIES=720p,480p``.
    transcoder_qualities: Annotated[tuple[Quality, ...], NoDecode, BeforeValidator(_qualities)] = RUNGS
    #: Encodes run at once in this process.
    transcoder_concurrency: int = Field(default=1, ge=1)
    #: ffmpeg ``-threads`` (0 = ffmpeg decides).
    transcoder_threads: int = Field(default=0, ge=0)
    transcoder_preset: str = "veryfast"
    transcoder_crf: int = Field(default=23, ge=0, le=51)
    #: A claim is held this long without a heartbeat before another transcoder takes the job.
    transcoder_lease_s: float = Field(default=30.0, gt=0)
    #: How often expired leases are looked for.
    transcoder_reaper_interval_s: float = Field(default=5.0, gt=0)
    #: ffmpeg is killed (and the job retried) after this long without progress.
    transcoder_stall_timeout_s: float = Field(default=120.0, gt=0)
    #: ffmpeg is killed past max(min, factor x media duration) seconds.
    transcoder_timeout_factor: float = Field(default=20.0, gt=0)
    transcoder_min_timeout_s: float = Field(default=600.0, gt=0)
    transcoder_progress_interval_s: float = Field(default=1.0, gt=0)
    #: Encode the rungs of a video that this process serves from one decode of the source.
    transcoder_decode_once: bool = True
    #: With decode-once, encode the video's lowest rung in its own ffmpeg, scheduled first, so the
    #: video is playable early — at the cost of one more decode of the source (see
    #: docs/benchmarks.md). ``true``: always, so under load too every video is playable early.
    #: ``idle``: only when this process has no other encode running or waiting, so a backlog is
    #: encoded from one decode per video and drains faster. ``false``: every rung from one
    #: decode, all ready at the same moment.
    transcoder_lowest_alone: bool | Literal["idle"] = True
    #: Read the input at its native rate (``-re``): encodes last as long as the clip. For tests
    #: and demos of long jobs, never for production.
    transcoder_realtime: bool = False
