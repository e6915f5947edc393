"""A gateway's stop is bounded: a database connection still in use does not hold it up."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncpg
import pytest

from gateway.app import close_pool


class Pool:
    def __init__(self, *, stuck: bool) -> None:
        self.stuck, self.closed, self.terminated = stuck, False, False

    async def close(self) -> None:
        if self.stuck:  # a connection is never released
            await asyncio.Event().wait()
        self.closed = True

    def terminate(self) -> None:
        self.terminated = True


async def test_a_pool_whose_connections_stay_in_use_is_cut_after_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = Pool(stuck=True)
    await asyncio.wait_for(close_pool(cast("asyncpg.Pool", pool), limit_s=0.05), 5)
    assert (pool.closed, pool.terminated) == (False, True)
    assert "still in use" in caplog.text


async def test_a_pool_that_closes_is_closed_not_cut() -> None:
    pool: Any = Pool(stuck=False)
    await close_pool(pool, limit_s=5)
    assert (pool.closed, pool.terminated) == (True, False)
