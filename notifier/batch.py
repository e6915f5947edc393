"""Group commit: concurrent requests for the same statement run as one.

A :class:`Batcher` runs a batch at once when it is idle (or, with ``linger_s``, that long after
the first request, for work whose caller is not waiting on a client), and while that batch is
in flight gathers the requests that arrive, to run them together next. Alone, a request waits for nothing;
under load, a hundred deliveries share one statement, one round trip and one commit, instead
of a hundred of each. Every caller gets its own result (or the batch's exception) only once its
batch has run, so a delivery is never acknowledged before its write is committed. A batch that
fails for a reason that is not the database's or the moment's (one request's data) is run again
one request at a time, so that only the request at fault gets the error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from notifier.metrics import DELIVERY_LOG_WRITE_ROWS, DELIVERY_LOG_WRITE_SECONDS
from shared.db import TRANSIENT_DB_ERRORS
from shared.errors import TransientError

#: Failures that are the database's or the moment's, not one request's: the whole batch has them.
_EVERYONES: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, TransientError)

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs ``run(items)`` for the requests gathered; ``run`` returns one result per item, in order.

    Each batch's size and run time go to the delivery log's write metrics under ``name``.
    """

    def __init__(
        self,
        run: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        name: str,
        max_size: int = 100,
        linger_s: float = 0.0,
    ) -> None:
        self.run = run
        self.max_size = max_size
        self.linger_s = linger_s
        self._rows = DELIVERY_LOG_WRITE_ROWS.labels(name)
        self._seconds = DELIVERY_LOG_WRITE_SECONDS.labels(name)
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Run ``item`` with the next batch; its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            # a task of its own: a caller cancelled while waiting does not stop the others' batch
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            if self.linger_s:
                await asyncio.sleep(self.linger_s)
            while self._pending:
                batch, self._pending = self._pending[: self.max_size], self._pending[self.max_size :]
                await self._run_one(batch)
        finally:
            self._flusher = None
            for _, future in batch:  # only when the flusher itself was cancelled (shutdown)
                future.cancel()

    async def _run_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._rows.observe(len(batch))
        started = time.perf_counter()
        try:
            results = await self.run([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            self._seconds.observe(time.perf_counter() - started)
            if len(batch) > 1 and not isinstance(exc, _EVERYONES):
                # one request the statement cannot take (its data): each alone, so that only
                # that one fails, not every delivery that happened to share its batch
                for one in batch:
                    await self._run_one([one])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self._seconds.observe(time.perf_counter() - started)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
