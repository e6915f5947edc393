"""Retention of the delivery log: rows past ``VIDQ_DELIVERY_LOG_RETENTION_S`` are deleted.

The notifier writes an event row, a delivery per endpoint and an attempt per try for every event
it handles; without pruning, the tables (and the time to vacuum and index them) grow for ever.
Every ``delivery_log_prune_every_s`` each notifier tries a pass. A session advisory lock lets
one replica prune at a time (the others skip that pass). A pass deletes in batches of ``batch``
events, each in a short transaction of its own, oldest first, until a batch comes back short,
so the hot path's writes are never held up for long. What is kept and what goes is decided in
``repository.prune_delivery_log``: an event goes with all its deliveries and their attempts,
never while one of them is still being retried. Settled rows of the email log go the same way.
"""

from __future__ import annotations

import asyncio
import logging
import zlib

import asyncpg
from prometheus_client import Counter

from notifier import repository as repo
from notifier.settings import NotifierSettings
from shared.db import TRANSIENT_DB_ERRORS

log = logging.getLogger(__name__)

LOCK_KEY = zlib.crc32(b"vidq.notifier.delivery-log-retention")
BATCH = 1000

PRUNED = Counter(
    "vidq_delivery_log_pruned_total",
    "Rows deleted from the notifier's delivery log past their retention, by table.",
    ["table"],
)


async def prune_once(pool: asyncpg.Pool, keep_s: float, *, batch: int = BATCH) -> repo.Pruned | None:
    """One pass; ``None`` if another notifier is pruning right now."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            return None
        try:
            events = deliveries = attempts = emails = 0
            while True:
                async with conn.transaction():
                    step = await repo.prune_delivery_log(conn, keep_s, batch)
                events += step.events
                deliveries += step.deliveries
                attempts += step.attempts
                if step.events < batch:
                    break
            while True:
                step_emails = await repo.prune_email_log(conn, keep_s, batch)
                emails += step_emails
                if step_emails < batch:
                    break
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    pruned = repo.Pruned(events, deliveries, attempts, emails)
    for table, count in (
        ("notifier_events", pruned.events),
        ("webhook_deliveries", pruned.deliveries),
        ("webhook_attempts", pruned.attempts),
        ("email_log", pruned.emails),
    ):
        PRUNED.labels(table).inc(count)
    if events or deliveries or attempts or emails:
        log.info(
            "delivery log: pruned %d events, %d deliveries, %d attempts and %d emails past their retention",
            pruned.events,
            pruned.deliveries,
            pruned.attempts,
            pruned.emails,
        )
    return pruned


async def run_retention(pool: asyncpg.Pool, settings: NotifierSettings) -> None:
    """Forever: a pass now, then one every ``delivery_log_prune_every_s``."""
    while True:
        try:
            await prune_once(pool, settings.delivery_log_retention_s)
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("delivery log retention: pass skipped (%r)", exc)
        except Exception:  # a bug here must not stop the notifier's deliveries
            log.exception("delivery log retention: pass failed")
        await asyncio.sleep(settings.delivery_log_prune_every_s)
