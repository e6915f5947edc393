"""Background work that fails in a way nobody foresaw is started again, not lost for good."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import pytest

from shared.runtime import run_until_stopped, supervised


async def test_a_failing_job_is_started_again_and_each_failure_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    steady = asyncio.Event()

    async def relay() -> None:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            raise asyncpg.exceptions.ObjectNotInPrerequisiteStateError(
                'database "vidq" is not currently accepting connections'
            )
        if len(runs) == 2:
            return  # ended by itself: started again too
        steady.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervised(relay, "outbox relay", first_delay_s=0.01))
    await asyncio.wait_for(steady.wait(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert runs == [1, 2, 3]
    failed, stopped = [r for r in caplog.records if r.name == "shared.runtime"]
    assert failed.levelno == logging.ERROR
    assert failed.getMessage().startswith("outbox relay failed; starting it again")
    assert failed.exc_info is not None  # with its traceback
    assert stopped.getMessage().startswith("outbox relay stopped; starting it again")


class _Consumers:
    def __init__(self) -> None:
        self.stopped = False

    async def start(self) -> None:
        return None

    async def stop(self, grace: float) -> None:
        self.stopped = True


async def test_a_services_background_task_that_fails_does_not_stop_the_service() -> None:
    # The notifier's listener died on a database refusing connections, and took the process with it.
    stop = asyncio.Event()
    calls = 0

    async def listen() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("boom")
        stop.set()  # the third run: the service is still up; now it is told to stop
        await asyncio.Event().wait()

    consumers = _Consumers()
    await asyncio.wait_for(
        run_until_stopped(consumers, grace=1, background=[listen], stop=stop),  # type: ignore[arg-type]
        timeout=10,
    )

    assert calls == 3
    assert consumers.stopped
