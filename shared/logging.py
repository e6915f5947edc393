"""Structured logs: one JSON object per line, with the service and the message context.

``video_id``, ``event_id`` and ``queue`` are context variables: the consumer sets them around a
handler, the gateway around a request, so every line a handler logs says what it was about.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

video_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("video_id", default=None)
event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)
queue_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("queue", default=None)

_CONTEXT = (("video_id", video_id_var), ("event_id", event_id_var), ("queue", queue_var))
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with context variables and ``extra=`` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in _CONTEXT:
            value = var.get()
            if value is not None:
                line[name] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class BrokerClientNoise(logging.Filter):
    """What the broker client libraries log of a connection the broker closed, as vidq sees it.

    A robust connection reconnects by itself and restores its channels and consumers, so the
    close is one WARNING (aiormq logs it as an ERROR), without aiormq's traceback of its reader
    ("Cancelling cause reader exited abnormally") and without aio-pika's ERRORs of the robust
    channels' close callbacks failing on the closed connection: an alert on ERROR pages for
    failures, not for every reconnect. Anything else of theirs passes unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "aiormq.connection":
            message = record.getMessage()
            if message.startswith("Unexpected connection close from remote"):
                record.levelno, record.levelname = logging.WARNING, "WARNING"
            elif message.startswith("Cancelling cause reader exited abnormally"):
                return False
        elif record.name == "aio_pika.tools" and "RobustChannel._on_close" in record.getMessage():
            return False
        return True


_NOISE = BrokerClientNoise()


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Send every log line of the process to stderr, as JSON (or plain text for humans)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for chatty in ("aiormq.connection", "aio_pika.tools"):
        if _NOISE not in logging.getLogger(chatty).filters:
            logging.getLogger(chatty).addFilter(_NOISE)


@contextmanager
def log_context(
    *, video_id: str | None = None, event_id: str | None = None, queue: str | None = None
) -> Iterator[None]:
    """Set the context variables for the duration of a block."""
    tokens = [
        (var, var.set(value))
        for value, var in ((video_id, video_id_var), (event_id, event_id_var), (queue, queue_var))
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
