"""Retrying a first connection with exponential backoff (hand-written: a dozen lines).

aio-pika's robust connection and asyncpg's pool recover by themselves once they exist; what they
do not do is wait for a broker or database that is still starting. Services call
:func:`until_reachable` for that first connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.errors import StartupError, Unreachable

log = logging.getLogger(__name__)

T = TypeVar("T")


async def until_reachable(
    attempt: Callable[[], Awaitable[T]],
    *,
    errors: tuple[type[BaseException], ...],
    what: str,
    give_up_after: float,
) -> T:
    """Call ``attempt`` until it succeeds, waiting 0.25 s, 0.5 s … 5 s between tries.

    Once ``give_up_after`` seconds have passed, raises :class:`Unreachable` from the last error
    (or that error itself if it is a :class:`StartupError`: waiting did not cure it).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    delay = 0.25
    while True:
        try:
            return await attempt()
        except errors as exc:
            if loop.time() + delay > deadline:
                if isinstance(exc, StartupError):
                    raise
                raise Unreachable(f"the {what} was not reachable within {give_up_after:g} s: {exc}") from exc
            log.warning("%s not reachable yet (%s); retrying in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
