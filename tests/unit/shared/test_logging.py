"""The process log: what the broker client libraries say of a reconnect is one WARNING."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from shared.logging import configure_logging


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sink = io.StringIO()
    monkeypatch.setattr("sys.stderr", sink)
    configure_logging("notifier", "INFO", "text")
    yield sink
    root.handlers[:] = handlers
    root.setLevel(level)


def _reader_exited() -> None:
    try:
        raise ConnectionError("[Errno 320] CONNECTION_FORCED - broker forced connection closure")
    except ConnectionError:
        logging.getLogger("aiormq.connection").warning(
            "Cancelling cause reader exited abnormally", exc_info=True
        )


def test_a_connection_the_broker_closed_is_one_warning_without_the_libraries_tracebacks(
    stderr: io.StringIO,
) -> None:
    # what aiormq and aio-pika log when the broker closes a robust connection (seen on 3.10)
    logging.getLogger("aiormq.connection").error(
        'Unexpected connection close from remote "%s", %r',
        "amqp://vidq:******@127.0.0.1:5672/vidq",
        "Connection.Close(reply_code=320, reply_text='CONNECTION_FORCED')",
    )
    _reader_exited()
    logging.getLogger("aio_pika.tools").error(
        "Callback %r error: %s",
        "<OneShotCallback: cb=<bound method RobustChannel._on_close of <RobustChannel>>>",
        "ChannelInvalidStateError: No active transport in channel",
    )

    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert " notifier WARNING aiormq.connection: Unexpected connection close from remote" in lines[0]


def test_the_libraries_other_errors_pass_unchanged(stderr: io.StringIO) -> None:
    logging.getLogger("aiormq.connection").error("Connection attempt failed: %s", "refused")
    logging.getLogger("aio_pika.tools").error("Callback %r error: %s", "<some other callback>", "boom")

    lines = stderr.getvalue().splitlines()
    assert [line.split(" ", 4)[3] for line in lines] == ["ERROR", "ERROR"]
