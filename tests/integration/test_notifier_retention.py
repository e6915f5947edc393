"""The delivery log's retention on real PostgreSQL: what a pass deletes, and what it must keep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import ValidationError

from notifier import repository as repo
from notifier.delivery_log import CALLBACK
from notifier.retention import LOCK_KEY, prune_once
from notifier.settings import NotifierSettings
from notifier.webhook import DeliveryResult
from shared.ids import new_id

KEEP_S = 30 * 86400.0
LEASE_S = 45.0


async def logged_event(db: asyncpg.Pool, *, age_days: float, outcome: str | None = "succeeded") -> list[str]:
    """An event with two deliveries, each with one attempt that left it ``outcome`` (None: untried)."""
    event_id = new_id("evt")
    client_id = new_id("cli")
    event = repo.NewEvent(event_id, "video.ready", new_id("vid"), client_id, datetime.now(UTC), b"{}")
    wanted = [
        repo.NewDelivery(new_id("dlv"), event_id, client_id, target, None, "https://x/h")
        for target in (new_id("whk"), CALLBACK)
    ]
    async with db.acquire() as conn:
        await repo.claim_deliveries(conn, [event], wanted, LEASE_S)
        if outcome is not None:
            await repo.record_attempts(
                conn,
                [
                    repo.Attempt(
                        d.id, DeliveryResult(200 if outcome == "succeeded" else 503, 3), False, outcome, None
                    )
                    for d in wanted
                ],
            )
        else:
            await conn.execute(
                "UPDATE webhook_deliveries SET lease_until = NULL WHERE event_id = $1", event_id
            )
        await conn.execute(
            "UPDATE notifier_events SET received_at = now() - make_interval(days => $2) WHERE id = $1",
            event_id,
            age_days,
        )
    return [event_id, *(d.id for d in wanted)]


async def present(db: asyncpg.Pool, ids: list[str]) -> tuple[bool, int, int]:
    """Whether the event is there, how many of its deliveries, how many attempts of them."""
    event_id, *delivery_ids = ids
    return (
        await db.fetchval("SELECT count(*) FROM notifier_events WHERE id = $1", event_id) == 1,
        await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE id = ANY($1::text[])", delivery_ids),
        await db.fetchval(
            "SELECT count(*) FROM webhook_attempts WHERE delivery_id = ANY($1::text[])", delivery_ids
        ),
    )


async def test_a_pass_deletes_settled_events_past_retention_with_their_deliveries_and_attempts(
    db: asyncpg.Pool,
) -> None:
    succeeded = await logged_event(db, age_days=40)
    failed = await logged_event(db, age_days=31, outcome="failed")
    recent = await logged_event(db, age_days=29)

    pruned = await prune_once(db, KEEP_S)

    assert pruned == repo.Pruned(events=2, deliveries=4, attempts=4, emails=0)
    assert await present(db, succeeded) == (False, 0, 0)
    assert await present(db, failed) == (False, 0, 0)
    assert await present(db, recent) == (True, 2, 2)


async def test_an_event_is_kept_while_one_of_its_deliveries_is_still_being_retried_or_attempted(
    db: asyncpg.Pool,
) -> None:
    retrying = await logged_event(db, age_days=40, outcome="pending")
    untried = await logged_event(db, age_days=40, outcome=None)
    manual = await logged_event(db, age_days=40)
    # a manual retry of a settled delivery holds its lease while it POSTs
    async with db.acquire() as conn:
        assert await repo.lease_deliveries(conn, [manual[1]], LEASE_S, manual=True)

    assert await prune_once(db, KEEP_S) == repo.Pruned(0, 0, 0, 0)
    assert await present(db, retrying) == (True, 2, 2)
    assert await present(db, untried) == (True, 2, 0)
    assert await present(db, manual) == (True, 2, 2)

    # once they settle, the next pass takes them
    await db.execute("UPDATE webhook_deliveries SET status = 'failed', lease_until = NULL")
    assert (await prune_once(db, KEEP_S) or repo.Pruned(0, 0, 0)).events == 3


async def test_a_pass_works_through_a_backlog_in_batches(db: asyncpg.Pool) -> None:
    old = [await logged_event(db, age_days=60 - n) for n in range(5)]

    pruned = await prune_once(db, KEEP_S, batch=2)

    assert pruned == repo.Pruned(events=5, deliveries=10, attempts=10, emails=0)
    assert [await present(db, ids) for ids in old] == [(False, 0, 0)] * 5


async def test_an_event_a_replay_is_writing_a_delivery_for_is_left_alone(db: asyncpg.Pool) -> None:
    ids = await logged_event(db, age_days=40)
    event_id = ids[0]
    async with db.acquire() as conn, conn.transaction():
        # the replay's first step: the event exists, so nothing is written, but its row is held
        await repo.insert_event(
            conn,
            event_id=event_id,
            type_="video.ready",
            video_id=new_id("vid"),
            client_id=new_id("cli"),
            occurred_at=datetime.now(UTC),
            body=b"{}",
        )
        assert await prune_once(db, KEEP_S) == repo.Pruned(0, 0, 0, 0)
    assert await present(db, ids) == (True, 2, 2)
    assert (await prune_once(db, KEEP_S) or repo.Pruned(0, 0, 0)).events == 1


async def test_settled_emails_past_retention_are_deleted_and_one_being_sent_is_kept(db: asyncpg.Pool) -> None:
    rows = [
        ("evt_old_sent", "sent", timedelta(days=40), None),
        ("evt_old_failed", "failed", timedelta(days=40), None),
        ("evt_old_sending", "sending", timedelta(days=40), timedelta(minutes=1)),
        ("evt_recent", "sent", timedelta(days=2), None),
    ]
    for event_id, status, age, lease in rows:
        await db.execute(
            """INSERT INTO email_log (event_id, recipient, status, created_at, lease_until)
               VALUES ($1, 'a@example.com', $2, now() - $3::interval, now() + $4::interval)""",
            event_id,
            status,
            age,
            lease,
        )

    pruned = await prune_once(db, KEEP_S)

    assert pruned is not None
    assert pruned.emails == 2
    left = await db.fetch("SELECT event_id FROM email_log ORDER BY event_id")
    assert [r["event_id"] for r in left] == ["evt_old_sending", "evt_recent"]


async def test_one_notifier_prunes_at_a_time(db: asyncpg.Pool) -> None:
    ids = await logged_event(db, age_days=40)
    async with db.acquire() as other:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        try:
            assert await prune_once(db, KEEP_S) is None
        finally:
            await other.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    assert await present(db, ids) == (True, 2, 2)
    assert (await prune_once(db, KEEP_S) or repo.Pruned(0, 0, 0)).events == 1
    # the pass gave its lock back
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid::bigint = $1"
    assert await db.fetchval(held, LOCK_KEY) == 0


def test_retention_shorter_than_the_disable_rule_is_refused() -> None:
    with pytest.raises(ValidationError, match="DELIVERY_LOG_RETENTION_S must be longer"):
        NotifierSettings(delivery_log_retention_s=86400, webhook_disable_after_s=5 * 86400)
