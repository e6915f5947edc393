"""Group commit: concurrent requests share a batch, a lone one runs at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from notifier.batch import Batcher


class Recorder:
    """A batch function that records its batches and can be held until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        return [i * 10 for i in items]


async def test_a_lone_request_runs_at_once() -> None:
    run = Recorder()
    assert await Batcher(run, name="test").submit(1) == 10
    assert run.batches == [[1]]


async def test_requests_arriving_during_a_batch_run_together_next() -> None:
    run = Recorder()
    batcher = Batcher(run, name="test")
    run.gate.clear()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # the first batch is in flight
    others = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    run.gate.set()
    assert await first == 10
    assert [await t for t in others] == [20, 30, 40]
    assert run.batches == [[1], [2, 3, 4]]


async def test_a_batch_holds_at_most_max_size() -> None:
    run = Recorder()
    batcher = Batcher(run, name="test", max_size=2)
    run.gate.clear()
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
    await asyncio.sleep(0)
    run.gate.set()
    assert [await t for t in tasks] == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1], [2, 3], [4]]


async def test_a_failed_batch_fails_each_of_its_callers() -> None:
    async def broken(items: Sequence[int]) -> list[int]:
        raise ConnectionError("database away")

    batcher: Batcher[int, int] = Batcher(broken, name="test")
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    for task in tasks:
        with pytest.raises(ConnectionError):
            await task


async def test_a_batch_one_request_of_which_the_statement_refuses_fails_only_that_one() -> None:
    ran: list[list[int]] = []

    async def refuses_13(items: Sequence[int]) -> list[int]:
        ran.append(list(items))
        if 13 in items:  # e.g. a text holding NUL: the whole statement fails
            raise ValueError("invalid byte sequence for encoding UTF8: 0x00")
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(refuses_13, name="test")
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batcher.submit(i)) for i in (12, 13, 14)]
    assert await first == 10
    assert await rest[0] == 120
    with pytest.raises(ValueError, match="0x00"):
        await rest[1]
    assert await rest[2] == 140
    assert ran == [[1], [12, 13, 14], [12], [13], [14]]  # the batch, then each alone


def _observed(metric: str, name: str) -> float:
    return REGISTRY.get_sample_value(metric, {"write": name}) or 0.0


async def test_each_batch_reports_its_size_and_time_under_its_name() -> None:
    run = Recorder()
    batcher = Batcher(run, name="sizes")
    run.gate.clear()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    others = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.01)  # the first batch is held this long
    run.gate.set()
    await asyncio.gather(first, *others)
    assert _observed("vidq_delivery_log_write_rows_count", "sizes") == 2  # two batches
    assert _observed("vidq_delivery_log_write_rows_sum", "sizes") == 4  # of 1 and 3 requests
    assert _observed("vidq_delivery_log_write_seconds_sum", "sizes") >= 0.01


async def test_a_failed_batch_is_timed_too() -> None:
    async def broken(items: Sequence[int]) -> list[int]:
        raise ConnectionError("database away")

    with pytest.raises(ConnectionError):
        await Batcher(broken, name="broken").submit(1)
    assert _observed("vidq_delivery_log_write_seconds_count", "broken") == 1
