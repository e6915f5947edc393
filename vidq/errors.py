"""What can go wrong in a ``vidq`` command, and the exit status each case ends with.

Every failure is one of these; ``vidq.__main__`` prints it as one line (``vidq: <message>``)
on stderr and exits with its code, so scripts can tell the cases apart::

    VidqError            1  the operation failed (a video ended failed, a webhook test failed, …)
    ├── UsageProblem     2  the command line cannot work (2 is also typer's own usage errors)
    ├── ApiError         1, 3 (404), 4 (401/403) or 5 (5xx): a problem+json answer of the API
    ├── NoCredentials    4  no API key configured
    └── Unreachable      5  connection refused, DNS, timeouts, a broken stream
"""

from __future__ import annotations

from enum import IntEnum

_HTTP_NOT_FOUND = 404
_HTTP_SERVER_ERROR = 500
_AUTH_STATUSES = frozenset({401, 403})


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    AUTH = 4
    UNAVAILABLE = 5


class VidqError(Exception):
    """A failure with a human message (one line) and the exit status it ends the command with."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the server sent
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageProblem(VidqError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.USAGE)


class NoCredentials(VidqError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.AUTH)


class Unreachable(VidqError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.UNAVAILABLE)


def exit_code_for(status: int) -> ExitCode:
    """The exit status of a command that got this HTTP error status."""
    if status == _HTTP_NOT_FOUND:
        return ExitCode.NOT_FOUND
    if status in _AUTH_STATUSES:
        return ExitCode.AUTH
    if status >= _HTTP_SERVER_ERROR:
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILED


class ApiError(VidqError):
    """An error answer of the API: its status, the problem's ``title`` and human ``detail``."""

    def __init__(self, status: int, title: str, detail: str, *, retry_after: float | None = None) -> None:
        kind = title[:1].lower() + title[1:] if title else f"HTTP {status}"
        super().__init__(f"{kind}: {detail}" if detail else kind, exit_code_for(status))
        self.status = status
        self.title = title
        self.detail = detail
        #: Seconds the answer's ``Retry-After`` asked to wait, if it gave a number.
        self.retry_after = retry_after
