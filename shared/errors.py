"""The vidq exception tree. Adapters translate library errors into it at their boundary.

::

    PipelineError
    ├── TransientError          retry later: broker/db blips, SMTP 4xx, webhook non-2xx/timeout,
    │   │                       ffmpeg killed or timed out
    │   └── Deferred            not now, and not a failure: wait a little without using an attempt
    ├── WorkCanceled            the video was canceled or deleted while work was in flight
    └── PermanentError          never retry; the consumer publishes the *.failed report and
        │                       dead-letters the message
        ├── RetriesExhausted    the handler's own retry schedule is used up
        ├── MalformedMessage    body or properties fail the schema; the handler is never called
        ├── InvalidSource       not a video, empty, truncated, over limits (ffprobe says so)
        ├── EncodeFailed        ffmpeg exit != 0 on a probed input; carries the end of stderr
        └── ForbiddenDestination  webhook URL resolves to a private/loopback/link-local address

Apart from the tree, :class:`StartupError`: a service cannot start as configured (a vhost,
database or role that is missing and that it may not create); its process says so in one line
and exits with status 78 (``EX_CONFIG``), no traceback.

The single ack / retry / dead-letter decision that acts on these lives in
``shared/messaging/consumer.py``.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline decides on."""


class TransientError(PipelineError):
    """Worth retrying later. ``retry_after`` (seconds) asks for at least that long a wait."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Deferred(TransientError):
    """The work cannot start now (e.g. its endpoint is busy); try again soon, no attempt spent."""


class WorkCanceled(PipelineError):
    """The video was canceled or deleted: the work is dropped on purpose."""


class PermanentError(PipelineError):
    """Retrying cannot help."""


class RetriesExhausted(PermanentError):
    """A handler that counts its own attempts has used up its retry schedule."""


class MalformedMessage(PermanentError):
    """A message that cannot be decoded or validated."""


class InvalidSource(PermanentError):
    """The uploaded file is not a usable video."""


class EncodeFailed(PermanentError):
    """ffmpeg failed on an input that probed fine."""

    def __init__(self, message: str, *, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail


class ForbiddenDestination(PermanentError):
    """A webhook URL that resolves to an address vidq refuses to call."""


class Unreachable(RuntimeError):
    """A broker or database that did not answer within the start's patience (worth a restart)."""


class StartupError(RuntimeError):
    """The service cannot start as configured; the message says what to do."""
