"""Prometheus metrics of the gateway's outbox and live streams.

Only the gateway registers them; the metrics every service has are in ``shared/metrics.py``.
"""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

OUTBOX_PENDING = Gauge("vidq_outbox_pending", "Outbox rows not yet published, all gateways'.")
OUTBOX_OLDEST = Gauge("vidq_outbox_oldest_seconds", "Age of the oldest unpublished outbox row.")
OUTBOX_LAG = Histogram(
    "vidq_outbox_lag_seconds",
    "Time from an outbox row being written to its publish being confirmed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300),
)
SSE_CLIENTS = Gauge("vidq_sse_clients", "Open server-sent event streams.")
