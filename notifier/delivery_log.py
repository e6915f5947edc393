"""The delivery log's hot path: claims, leases and attempts of concurrent deliveries, written together.

An event's deliveries are claimed (recorded and held for their first attempt) before they are
sent; a retry takes a lease before its attempt; every attempt is logged with its delivery's new
state after it. Work in flight at the same moment does each of these through a
:class:`~notifier.batch.Batcher`, so under load one statement (one round trip, one commit) serves
hundreds of deliveries; alone, a delivery runs at once. Each caller still gets its own answer,
and returns only once its write is committed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from notifier import repository as repo
from notifier.audiences import AudienceCache
from notifier.batch import Batcher
from notifier.lookups import Audience
from shared.ids import new_id

CALLBACK = "callback"


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """A public event as the notifier sends it: ``body`` is the exact bytes every endpoint gets."""

    id: str
    type: str
    video_id: str
    occurred_at: datetime
    body: bytes


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery held by this process for its first attempt."""

    id: str
    event: IncomingEvent
    client_id: str
    webhook_id: str | None  # None: the video's own callback_url
    url: str
    secrets: tuple[str, ...]


@dataclass(slots=True)
class Fanout:
    """What claiming an event's deliveries gave: those to attempt now, and those held elsewhere."""

    known: bool = True  # False: the video is unknown (deleted for good, or never existed)
    claimed: list[Claimed] = field(default_factory=list)
    #: Deliveries an attempt elsewhere holds right now (a copy of the event is being handled).
    held: int = 0


Target = tuple[str, str | None, str, tuple[str, ...]]  # target, webhook id, URL, secrets


def _targets(audience: Audience, event_type: str, now: datetime) -> list[Target]:
    """Where an event of the type goes: each endpoint that wants it, and the video's callback_url."""
    targets: list[Target] = [
        (e.webhook_id, e.webhook_id, e.url, e.secrets(now)) for e in audience.endpoints(event_type)
    ]
    if audience.callback_url:
        targets.append((CALLBACK, None, audience.callback_url, (audience.callback_secret,)))
    return targets


class DeliveryLog:
    """The notifier's writes on the delivery path.

    ``claim_pool`` takes the claims: its connections may commit without waiting for the WAL
    flush (``synchronous_commit=off``, see ``notifier/app.py``), because a claim lost in a
    database crash costs nothing: its event is not acknowledged until the attempt is logged, and
    that commit waits for the flush (which covers the claim's WAL too).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        lease_s: float,
        audiences: AudienceCache | None = None,
        claim_pool: asyncpg.Pool | None = None,
        max_batch: int = 500,
        record_linger_s: float = 0.005,
    ) -> None:
        self.pool = pool
        self.claim_pool = claim_pool or pool
        self.audiences = audiences or AudienceCache(pool)
        self.lease_s = lease_s
        self._claims: Batcher[IncomingEvent, Fanout] = Batcher(self._claim, name="claim", max_size=max_batch)
        self._leases: dict[bool, Batcher[str, asyncpg.Record | None]] = {
            manual: Batcher(functools.partial(self._lease, manual=manual), name="lease", max_size=max_batch)
            for manual in (False, True)
        }
        # Logging an attempt comes after its POST, so nobody waits on it but the event's
        # acknowledgement: a few milliseconds' wait gathers bigger batches under load.
        self._attempts: Batcher[repo.Attempt, None] = Batcher(
            self._record, name="record", max_size=max_batch, linger_s=record_linger_s
        )

    async def claim(self, event: IncomingEvent) -> Fanout:
        """Record the event and hold its deliveries (one per matching endpoint, and the callback)."""
        return await self._claims.submit(event)

    async def lease(self, delivery_id: str, *, manual: bool) -> asyncpg.Record | None:
        """Hold the delivery for one attempt; ``None`` if it is settled or another attempt holds it."""
        return await self._leases[manual].submit(delivery_id)

    async def record(self, attempt: repo.Attempt) -> None:
        """Log the attempt and settle its delivery."""
        await self._attempts.submit(attempt)

    async def _claim(self, events: Sequence[IncomingEvent]) -> list[Fanout]:
        audiences = await self.audiences.get(list({e.video_id for e in events}))
        now = datetime.now(UTC)
        first: dict[str, IncomingEvent] = {}
        records: list[repo.NewEvent] = []
        wanted: list[tuple[repo.NewDelivery, IncomingEvent, tuple[str, ...]]] = []
        for event in events:
            audience = audiences.get(event.video_id)
            if audience is None or event.id in first:
                continue  # a second copy in the same batch waits for the first (below)
            first[event.id] = event
            targets = _targets(audience, event.type, now)
            if not targets:
                continue
            records.append(
                repo.NewEvent(
                    event.id,
                    event.type,
                    event.video_id,
                    audience.client_id,
                    event.occurred_at,
                    event.body,
                )
            )
            for target, webhook_id, url, secrets in targets:
                delivery = repo.NewDelivery(
                    new_id("dlv"), event.id, audience.client_id, target, webhook_id, url
                )
                wanted.append((delivery, event, secrets))
        states: dict[tuple[str, str], repo.ClaimState] = {}
        if wanted:
            async with self.claim_pool.acquire() as conn:
                states = await repo.claim_deliveries(conn, records, [d for d, _, _ in wanted], self.lease_s)
        outcomes: dict[str, Fanout] = {}
        for d, event, secrets in wanted:
            state = states[(d.event_id, d.target)]
            outcome = outcomes.setdefault(d.event_id, Fanout())
            if state.claimed:
                outcome.claimed.append(
                    Claimed(state.delivery_id, event, d.client_id, d.webhook_id, d.url, secrets)
                )
            elif state.why_not == "held":
                outcome.held += 1
        results: list[Fanout] = []
        for event in events:
            if event.video_id not in audiences:
                results.append(Fanout(known=False))
            elif first.get(event.id) is not event:
                results.append(Fanout(held=1))  # the other copy in this batch holds its deliveries
            else:
                results.append(outcomes.get(event.id, Fanout()))
        return results

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
