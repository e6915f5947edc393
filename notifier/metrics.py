"""Prometheus metrics of the notifier's deliveries and delivery log.

Only the notifier registers them; the metrics every service has are in ``shared/metrics.py``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
    "Time of one shared write to the delivery log, by write: claim, lease or record.",
    ["write"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
DELIVERY_LOG_WRITE_ROWS = Histogram(
    "vidq_delivery_log_write_rows",
    "Events (claim) or deliveries (lease, record) served by one shared write to the delivery log.",
    ["write"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)
