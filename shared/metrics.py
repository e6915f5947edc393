"""Prometheus metrics every service has (consumed and published messages, handler times).

The gateway serves its metrics at ``/metrics``; a worker serves its on ``VIDQ_METRICS_PORT`` when
set. A service's own metrics are in its ``metrics`` module (``gateway/metrics.py``, …), so a
process exports only what it measures.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

MESSAGES = Counter(
    "vidq_messages_total",
    "Messages consumed by queue and outcome (ack, retry, dead-letter, dropped, canceled, deferred, requeue).",
    ["queue", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "vidq_handler_seconds",
    "Time spent in a message handler, by queue.",
    ["queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PUBLISHED = Counter("vidq_published_total", "Messages published, by exchange.", ["exchange"])


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Start the Prometheus exporter thread of a worker service (no-op when ``port`` is 0)."""
    if port:
        start_http_server(port, addr=host)
