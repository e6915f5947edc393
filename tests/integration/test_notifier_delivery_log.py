"""The notifier's delivery log on real PostgreSQL: claims of an event's deliveries, and the audience cache."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from notifier import repository as repo
from notifier.audiences import AudienceCache
from notifier.delivery_log import CALLBACK, DeliveryLog, IncomingEvent
from notifier.lookups import SIGNING_SECRETS_SQL
from notifier.webhook import DeliveryResult
from shared.ids import new_id

LEASE_S = 45.0


@dataclass
class World:
    client_id: str
    video_id: str
    webhook_id: str


@pytest.fixture
async def world(db: asyncpg.Pool) -> World:
    client_id, video_id, webhook_id = new_id("cli"), new_id("vid"), new_id("whk")
    await db.execute(
        "INSERT INTO clients (id, name, callback_secret) VALUES ($1, 'c', 'whsec_Y2FsbGJhY2s=')", client_id
    )
    await db.execute(
        """INSERT INTO videos (id, client_id, status, source, callback_url)
           VALUES ($1, $2, 'processing', '{}', 'https://example.com/callback')""",
        video_id,
        client_id,
    )
    await db.execute(
        """INSERT INTO webhooks (id, client_id, url, events, secret)
           VALUES ($1, $2, 'https://example.com/hook', '{rendition.*}', 'whsec_aG9vaw==')""",
        webhook_id,
        client_id,
    )
    return World(client_id, video_id, webhook_id)


def event(world: World, type_: str = "rendition.completed", event_id: str | None = None) -> IncomingEvent:
    event_id = event_id or new_id("evt")
    return IncomingEvent(
        event_id, type_, world.video_id, datetime.now(UTC), b'{"id": "%s"}' % event_id.encode()
    )


def deliveries(world: World, event_id: str) -> list[repo.NewDelivery]:
    return [
        repo.NewDelivery(
            new_id("dlv"), event_id, world.client_id, world.webhook_id, world.webhook_id, "https://x/h"
        ),
        repo.NewDelivery(new_id("dlv"), event_id, world.client_id, CALLBACK, None, "https://x/c"),
    ]


async def claim(db: asyncpg.Pool, world: World, event_id: str) -> dict[str, repo.ClaimState]:
    record = repo.NewEvent(
        event_id, "rendition.completed", world.video_id, world.client_id, datetime.now(UTC), b"{}"
    )
    async with db.acquire() as conn:
        states = await repo.claim_deliveries(conn, [record], deliveries(world, event_id), LEASE_S)
    return {target: state for (_, target), state in states.items()}


async def test_a_claim_records_the_event_and_holds_each_delivery_for_its_attempt(
    db: asyncpg.Pool, world: World
) -> None:
    event_id = new_id("evt")
    states = await claim(db, world, event_id)

    assert {t: s.claimed for t, s in states.items()} == {world.webhook_id: True, CALLBACK: True}
    rows = await db.fetch("SELECT * FROM webhook_deliveries WHERE event_id = $1", event_id)
    assert {r["id"] for r in rows} == {s.delivery_id for s in states.values()}
    assert all(r["status"] == "pending" and r["attempts"] == 0 for r in rows)
    assert all(r["lease_until"] > datetime.now(UTC) + timedelta(seconds=LEASE_S - 5) for r in rows)
    assert await db.fetchval("SELECT count(*) FROM notifier_events WHERE id = $1", event_id) == 1


async def test_a_copy_of_the_event_finds_its_deliveries_held_settled_or_scheduled(
    db: asyncpg.Pool, world: World
) -> None:
    event_id = new_id("evt")
    first = await claim(db, world, event_id)

    again = await claim(db, world, event_id)
    assert {t: (s.claimed, s.why_not) for t, s in again.items()} == {
        world.webhook_id: (False, "held"),
        CALLBACK: (False, "held"),
    }
    assert {t: s.delivery_id for t, s in again.items()} == {t: s.delivery_id for t, s in first.items()}

    async with db.acquire() as conn:  # the endpoint's attempt succeeds; the callback's fails
        await repo.record_attempts(
            conn,
            [
                repo.Attempt(
                    first[world.webhook_id].delivery_id, DeliveryResult(200, 3), False, "succeeded", None
                ),
                repo.Attempt(
                    first[CALLBACK].delivery_id,
                    DeliveryResult(503, 3, "HTTP 503"),
                    False,
                    "pending",
                    "HTTP 503",
                    next_attempt_at=datetime.now(UTC) + timedelta(seconds=5),
                ),
            ],
        )
    later = await claim(db, world, event_id)
    assert {t: (s.claimed, s.why_not) for t, s in later.items()} == {
        world.webhook_id: (False, "settled"),
        CALLBACK: (False, "scheduled"),  # its retry command owns it
    }


async def test_an_answer_holding_nul_is_logged_and_fails_no_other_delivery_of_its_batch(
    db: asyncpg.Pool, world: World
) -> None:
    states = await claim(db, world, new_id("evt"))
    hook, callback = states[world.webhook_id].delivery_id, states[CALLBACK].delivery_id
    async with db.acquire() as conn:  # one statement for both, as a batch writes them
        await repo.record_attempts(
            conn,
            [
                repo.Attempt(hook, DeliveryResult(200, 3, None, "ok\x00ok"), False, "succeeded", None),
                repo.Attempt(
                    callback, DeliveryResult(500, 3, "HTTP 500", "bad\x00body"), False, "failed", "a\x00b"
                ),
            ],
        )
    logged = {
        r["delivery_id"]: r["response_body"]
        for r in await db.fetch("SELECT delivery_id, response_body FROM webhook_attempts")
    }
    assert logged == {hook: "ok\ufffdok", callback: "bad\ufffdbody"}
    last_error = await db.fetchval("SELECT last_error FROM webhook_deliveries WHERE id = $1", callback)
    assert last_error == "a\ufffdb"


async def test_an_untried_delivery_whose_lease_ran_out_is_claimed_again(
    db: asyncpg.Pool, world: World
) -> None:
    event_id = new_id("evt")
    first = await claim(db, world, event_id)
    # the notifier that claimed them died before any attempt
    await db.execute(
        "UPDATE webhook_deliveries SET lease_until = now() - interval '1 s' WHERE event_id = $1", event_id
    )

    again = await claim(db, world, event_id)

    assert all(s.claimed for s in again.values())
    assert {t: s.delivery_id for t, s in again.items()} == {t: s.delivery_id for t, s in first.items()}


async def move_unnoticed(db: asyncpg.Pool, webhook_id: str) -> None:
    """Change an endpoint's URL behind the ``webhooks_changed`` trigger's back (nobody is notified)."""
    await db.execute("ALTER TABLE webhooks DISABLE TRIGGER webhooks_changed")
    try:
        await db.execute("UPDATE webhooks SET url = 'https://example.com/moved' WHERE id = $1", webhook_id)
    finally:
        await db.execute("ALTER TABLE webhooks ENABLE TRIGGER webhooks_changed")


@contextlib.asynccontextmanager
async def listening(cache: AudienceCache) -> AsyncIterator[None]:
    task = asyncio.create_task(cache.listen())
    for _ in range(100):
        if cache.listening:
            break
        await asyncio.sleep(0.02)
    assert cache.listening
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_event_batch_claims_once_per_event_and_holds_a_second_copy(
    db: asyncpg.Pool, world: World
) -> None:
    log = DeliveryLog(db, lease_s=LEASE_S)
    wanted = event(world)
    copy = IncomingEvent(wanted.id, wanted.type, wanted.video_id, wanted.occurred_at, wanted.body)
    unknown = IncomingEvent(new_id("evt"), "rendition.completed", "vid_gone", datetime.now(UTC), b"{}")
    unheard = event(world, "thumbnail.completed")  # the endpoint wants rendition.* only

    results = await asyncio.gather(log.claim(wanted), log.claim(copy), log.claim(unknown), log.claim(unheard))

    first, second, gone, callback_only = results
    assert sorted(c.webhook_id or CALLBACK for c in first.claimed) == sorted([world.webhook_id, CALLBACK])
    assert [c.secrets for c in first.claimed if c.webhook_id] == [("whsec_aG9vaw==",)]
    assert (second.claimed, second.held) == ([], 1)
    assert not gone.known
    assert [c.webhook_id for c in callback_only.claimed] == [None]


async def test_the_audience_cache_keeps_a_read_until_the_gateway_changes_a_webhook(
    db: asyncpg.Pool, world: World
) -> None:
    cache = AudienceCache(db)
    async with listening(cache):
        [before] = (await cache.get([world.video_id]))[world.video_id].listeners
        await move_unnoticed(db, world.webhook_id)  # the cache does not know, and keeps its copy
        [kept] = (await cache.get([world.video_id]))[world.video_id].listeners
        assert kept.url == before.url == "https://example.com/hook"

        # the way the gateway changes it: the trigger notifies, the copy is dropped
        await db.execute("UPDATE webhooks SET enabled = false WHERE id = $1", world.webhook_id)
        for _ in range(100):
            if not (await cache.get([world.video_id]))[world.video_id].listeners:
                break
            await asyncio.sleep(0.02)
        assert (await cache.get([world.video_id]))[world.video_id].listeners == ()


async def test_the_audience_cache_keeps_nothing_while_it_cannot_hear_changes(
    db: asyncpg.Pool, world: World
) -> None:
    cache = AudienceCache(db)  # not listening
    await cache.get([world.video_id])
    await move_unnoticed(db, world.webhook_id)

    [listener] = (await cache.get([world.video_id]))[world.video_id].listeners

    assert listener.url == "https://example.com/moved"


async def test_rotated_secrets_sign_beside_the_new_one_each_until_its_grace_ends(
    db: asyncpg.Pool, world: World
) -> None:
    ago, hour, day = (datetime.now(UTC) + timedelta(hours=h) for h in (-1, 1, 24))
    await db.execute(
        """UPDATE webhooks SET retired_secrets = ARRAY['whsec_b2xk', secret, 'whsec_Z29uZQ=='],
                  secret = 'whsec_bmV3', retired_until = ARRAY[$2, $3, $4]::timestamptz[]
           WHERE id = $1""",
        world.webhook_id,
        day,
        hour,
        ago,
    )
    # as an event's first attempts sign
    [listener] = (await AudienceCache(db).get([world.video_id]))[world.video_id].listeners
    assert listener.secrets(datetime.now(UTC)) == ("whsec_bmV3", "whsec_b2xk", "whsec_aG9vaw==")
    assert listener.secrets(hour + timedelta(seconds=1)) == ("whsec_bmV3", "whsec_b2xk")
    assert listener.secrets(day + timedelta(seconds=1)) == ("whsec_bmV3",)
    # as a retry signs (the lease query's expression), the one whose grace ended left out
    leased = await db.fetchval(
        f"SELECT {SIGNING_SECRETS_SQL} FROM (SELECT $1::text AS webhook_id, NULL::text AS client_id) d",  # noqa: S608
        world.webhook_id,
    )
    assert leased == ["whsec_bmV3", "whsec_b2xk", "whsec_aG9vaw=="]
