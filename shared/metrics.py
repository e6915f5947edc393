"""Prometheus metrics shared by every service.

The gateway serves them at ``/metrics``; a worker serves them on ``VIDQ_METRICS_PORT`` when set.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MESSAGES = Counter(
    "vidq_messages_total",
    "Messages consumed, by queue and outcome (ack, retry, dead-letter, canceled, requeue).",
    ["queue", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "vidq_handler_seconds",
    "Time spent in a message handler, by queue.",
    ["queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PUBLISHED = Counter("vidq_published_total", "Messages published, by exchange.", ["exchange"])
OUTBOX_PENDING = Gauge("vidq_outbox_pending", "Outbox rows not yet published, all gateways' (gateway).")
OUTBOX_OLDEST = Gauge("vidq_outbox_oldest_seconds", "Age of the oldest unpublished outbox row (gateway).")
OUTBOX_LAG = Histogram(
    "vidq_outbox_lag_seconds",
    "Time from an outbox row being written to its publish being confirmed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300),
)
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
WEBHOOK_DELIVERIES = Counter(
    "vidq_webhook_deliveries_total", "Webhook delivery attempts, by outcome.", ["outcome"]
)
WEBHOOK_SECONDS = Histogram(
    "vidq_webhook_delivery_seconds",
    "Time for a webhook POST to be answered.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
)
WEBHOOK_EVENT_LAG = Histogram(
    "vidq_webhook_event_lag_seconds",
    "Time from an event occurring (its timestamp) to the notifier sending its first deliveries.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
DELIVERY_LOG_WRITE_SECONDS = Histogram(
    "vidq_delivery_log_write_seconds",
    "Time of one shared write to the delivery log (notifier), by write: claim, lease or record.",
    ["write"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
DELIVERY_LOG_WRITE_ROWS = Histogram(
    "vidq_delivery_log_write_rows",
    "Events (claim) or deliveries (lease, record) served by one shared write to the delivery log.",
    ["write"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)
SSE_CLIENTS = Gauge("vidq_sse_clients", "Open server-sent event streams (gateway).")


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Start the Prometheus exporter thread of a worker service (no-op when ``port`` is 0)."""
    if port:
        start_http_server(port, addr=host)
