"""The delivery log's hot path: leases and attempts of concurrent deliveries, written together.

Every delivery takes a lease before its attempt and logs the attempt with its new state after
it. Deliveries in flight at the same moment do both through a :class:`~notifier.batch.Batcher`,
so under load one statement (one round trip, one commit) serves many of them; a delivery alone
runs at once. Each caller still gets its own row, and returns only once its write is committed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import asyncpg

from notifier import repository as repo
from notifier.batch import Batcher


class DeliveryLog:
    def __init__(self, pool: asyncpg.Pool, *, lease_s: float, max_batch: int = 100) -> None:
        self.pool = pool
        self.lease_s = lease_s
        self._leases: dict[bool, Batcher[str, asyncpg.Record | None]] = {
            manual: Batcher(functools.partial(self._lease, manual=manual), max_size=max_batch)
            for manual in (False, True)
        }
        self._attempts: Batcher[repo.Attempt, None] = Batcher(self._record, max_size=max_batch)

    async def lease(self, delivery_id: str, *, manual: bool) -> asyncpg.Record | None:
        """Hold the delivery for one attempt; ``None`` if it is settled or another attempt holds it."""
        return await self._leases[manual].submit(delivery_id)

    async def record(self, attempt: repo.Attempt) -> None:
        """Log the attempt and settle its delivery."""
        await self._attempts.submit(attempt)

    async def _lease(self, delivery_ids: Sequence[str], *, manual: bool) -> list[asyncpg.Record | None]:
        async with self.pool.acquire() as conn:
            rows = await repo.lease_deliveries(
                conn, list(dict.fromkeys(delivery_ids)), self.lease_s, manual=manual
            )
        # Two copies of one command in a batch: the first gets the lease, the other finds it held.
        return [rows.pop(delivery_id, None) for delivery_id in delivery_ids]

    async def _record(self, attempts: Sequence[repo.Attempt]) -> list[None]:
        async with self.pool.acquire() as conn:
            await repo.record_attempts(conn, attempts)
        return [None] * len(attempts)
