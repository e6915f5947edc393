"""Claims on real PostgreSQL: a job handed back on shutdown is never lost between two transcoders."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shared.errors import TransientError
from tests.unit import factories
from transcoder.claims import Job, PgClaims

pytestmark = pytest.mark.integration


async def test_a_job_handed_back_is_claimed_by_a_transcoder_that_gets_it_during_the_requeue(
    db: asyncpg.Pool,
) -> None:
    leaving, staying = PgClaims(db, "leaving", 60), PgClaims(db, "staying", 60)
    command = factories.transcode()
    assert (await leaving.claim(command)) is not None
    claimed_by_other: list[asyncio.Task[Job | None]] = []

    async def requeue() -> None:
        # The other transcoder receives the message before the hand-back has returned.
        claimed_by_other.append(asyncio.create_task(staying.claim(command)))
        await asyncio.sleep(0.2)

    await leaving.release(command.job_id, requeue)

    job = await claimed_by_other[0]
    assert job is not None
    assert job.attempt == 1  # a hand-back does not count as an attempt
    row = await db.fetchrow("SELECT state, lease_owner FROM transcode_jobs WHERE job_id = $1", command.job_id)
    assert row is not None
    assert dict(row) == {"state": "claimed", "lease_owner": "staying"}


async def test_a_hand_back_whose_publish_fails_leaves_the_job_claimed_for_the_reaper(
    db: asyncpg.Pool,
) -> None:
    claims = PgClaims(db, "leaving", 60)
    command = factories.transcode()
    await claims.claim(command)

    async def broker_down() -> None:
        raise TransientError("broker down")

    with pytest.raises(TransientError):
        await claims.release(command.job_id, broker_down)

    assert await claims.renew([command.job_id]) == {command.job_id}  # still ours; its lease will run out


async def test_a_job_that_is_no_longer_ours_is_not_requeued(db: asyncpg.Pool) -> None:
    claims = PgClaims(db, "leaving", 60)
    command = factories.transcode()
    await claims.claim(command)
    await claims.finish(command.job_id, "done")
    requeued: list[bool] = []

    async def requeue() -> None:
        requeued.append(True)

    await claims.release(command.job_id, requeue)

    assert requeued == []


async def test_only_a_job_that_failed_for_good_reopens_and_then_starts_from_its_first_attempt(
    db: asyncpg.Pool,
) -> None:
    claims = PgClaims(db, "replaying", 60)
    command = factories.transcode()
    assert not await claims.reopen(command.job_id)  # unknown
    await claims.claim(command)
    assert not await claims.reopen(command.job_id)  # held
    await claims.finish(command.job_id, "done")
    assert not await claims.reopen(command.job_id)  # done: a replay of a done job does nothing
    await db.execute(
        "UPDATE transcode_jobs SET state = 'failed', attempt = 3 WHERE job_id = $1", command.job_id
    )
    assert await claims.claim(command) is None

    assert await claims.reopen(command.job_id)

    assert await claims.claim(command) == Job(command, 1)


async def test_a_failed_job_reopens_for_a_replay_unless_a_later_job_of_its_rendition_exists(
    db: asyncpg.Pool,
) -> None:
    claims = PgClaims(db, "one", 60)
    failed = factories.transcode()
    await claims.claim(failed)
    await claims.finish(failed.job_id, "failed", "gave up")
    assert await claims.reopen(failed.job_id)  # an operator's replay runs it again
    assert (await claims.claim(failed)) is not None
    await claims.finish(failed.job_id, "failed", "gave up again")

    # the client retried the rendition through the API: a later job now owns its file
    later = failed.model_copy(update={"job_id": factories.transcode().job_id})
    await claims.claim(later)
    await claims.finish(later.job_id, "done")
    assert not await claims.reopen(failed.job_id)
    assert (await claims.claim(failed)) is None  # its replayed message is dropped
    other_rung = factories.transcode(video_id=failed.video_id, quality="360p")
    await claims.claim(other_rung)
    await claims.finish(other_rung.job_id, "failed", "gave up")
    assert await claims.reopen(other_rung.job_id)  # another rendition's job is not superseded
