"""Prometheus metrics of the transcoder's encodes.

Only the transcoder registers them; the metrics every service has are in ``shared/metrics.py``.
"""

from __future__ import annotations

from prometheus_client import Histogram

RENDITION_QUEUE_WAIT = Histogram(
    "vidq_rendition_queue_wait_seconds",
    "Time from a rendition's dispatch to a transcoder claiming it, by quality.",
    ["quality"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
FFMPEG_SPEED = Histogram(
    "vidq_ffmpeg_speed_ratio",
    "Media seconds encoded per wall-clock second, by quality.",
    ["quality"],
    buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
