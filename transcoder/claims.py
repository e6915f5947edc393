"""Job claims with leases in PostgreSQL: how a transcoder can acknowledge before it encodes.

A ``TranscodeRendition`` is acknowledged only after its job is claimed here (``state =
'claimed'``, a lease owner and expiry). While ffmpeg runs the lease is renewed; a transcoder
that dies stops renewing, and once the lease has expired any live transcoder's reaper dispatches
the job again. A message for a job that is finished, or claimed by a live transcoder, is a
duplicate and is dropped. So a job is neither lost nor run twice at once, and RabbitMQ's
``consumer_timeout`` never sees a long-held message (see ``docs/architecture.md``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from shared.commands import TranscodeRendition
from shared.db import map_asyncpg_errors


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job: the command and which attempt this is (1 for the first)."""

    command: TranscodeRendition
    attempt: int

    @property
    def id(self) -> str:
        return self.command.job_id

    @property
    def video_id(self) -> str:
        return self.command.video_id


#: Called by the reaper for each job whose lease expired; returns the job's new state.
Reclaim = Callable[[Job], Awaitable[str]]


class Claims(Protocol):
    async def claim(self, command: TranscodeRendition) -> Job | None: ...
    async def reopen(self, job_id: str) -> bool: ...
    async def renew(self, job_ids: Iterable[str]) -> set[str]: ...
    async def finish(self, job_id: str, state: str, error: str | None = None) -> None: ...
    async def release(self, job_id: str, requeue: Callable[[], Awaitable[None]]) -> None: ...
    async def cancel_video(self, video_id: str) -> None: ...
    async def reap(self, reclaim: Reclaim, *, limit: int = 20) -> int: ...


class PgClaims:
    """Claims in the transcoder's own ``transcode_jobs`` table."""

    def __init__(self, pool: asyncpg.Pool, owner: str, lease_s: float) -> None:
        self.pool = pool
        self.owner = owner
        self.lease_s = lease_s

    async def claim(self, command: TranscodeRendition) -> Job | None:
        """Claim a job that is new, waiting for a retry, or whose holder's lease ran out."""
        with map_asyncpg_errors():
            attempt = await self.pool.fetchval(
                """INSERT INTO transcode_jobs
                       (job_id, video_id, quality, state, attempt, lease_owner, lease_expires_at, command)
                   VALUES ($1, $2, $3, 'claimed', 1, $4, now() + make_interval(secs => $5), $6)
                   ON CONFLICT (job_id) DO UPDATE SET
                       state = 'claimed', attempt = transcode_jobs.attempt + 1,
                       lease_owner = EXCLUDED.lease_owner, lease_expires_at = EXCLUDED.lease_expires_at,
                       updated_at = now()
                   WHERE transcode_jobs.state = 'retrying'
                      OR (transcode_jobs.state = 'claimed' AND transcode_jobs.lease_expires_at < now())
                   RETURNING attempt""",
                command.job_id,
                command.video_id,
                command.quality.value,
                self.owner,
                self.lease_s,
                command.model_dump(mode="json"),
            )
        return None if attempt is None else Job(command, int(attempt))

    async def reopen(self, job_id: str) -> bool:
        """Make a job that failed for good claimable again, with a fresh attempt count.

        Not when a later job of the same rendition exists (the client retried it through the
        API): that job owns the rendition's file, which the old one must not overwrite.
        """
        with map_asyncpg_errors():
            status = await self.pool.execute(
                """UPDATE transcode_jobs j SET state = 'retrying', attempt = 0, updated_at = now()
                   WHERE j.job_id = $1 AND j.state = 'failed'
                     AND NOT EXISTS (SELECT 1 FROM transcode_jobs later
                                      WHERE later.video_id = j.video_id AND later.quality = j.quality
                                        AND later.created_at > j.created_at)""",
                job_id,
            )
        return bool(status.endswith(" 1"))

    async def renew(self, job_ids: Iterable[str]) -> set[str]:
        """Extend our leases; returns the jobs still ours (a missing one was taken from us)."""
        ids = list(job_ids)
        if not ids:
            return set()
        with map_asyncpg_errors():
            rows = await self.pool.fetch(
                """UPDATE transcode_jobs
                   SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
                   WHERE job_id = ANY($1::text[]) AND lease_owner = $2 AND state = 'claimed'
                   RETURNING job_id""",
                ids,
                self.owner,
                self.lease_s,
            )
        return {r["job_id"] for r in rows}

    async def finish(self, job_id: str, state: str, error: str | None = None) -> None:
        with map_asyncpg_errors():
            await self.pool.execute(
                """UPDATE transcode_jobs SET state = $3, error = $4, lease_owner = NULL,
                          lease_expires_at = NULL, updated_at = now()
                   WHERE job_id = $1 AND lease_owner = $2""",
                job_id,
                self.owner,
                state,
                error,
            )

    async def release(self, job_id: str, requeue: Callable[[], Awaitable[None]]) -> None:
        """Give a job back unfinished (shutdown): it waits for a retry that is not counted.

        ``requeue`` publishes the job's command again. It runs while the job's row is locked and
        already marked ``retrying``, and the change commits only if it succeeds: a transcoder
        that gets the message at once waits for the commit and then claims the job (published
        before the change, it would find the job still ours and drop it as a duplicate); if the
        publish fails, the job stays ours until its lease runs out and the reaper sends it again.
        """
        with map_asyncpg_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                released = await conn.fetchval(
                    """UPDATE transcode_jobs SET state = 'retrying', attempt = attempt - 1,
                              lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                       WHERE job_id = $1 AND lease_owner = $2 AND state = 'claimed'
                       RETURNING job_id""",
                    job_id,
                    self.owner,
                )
                if released is not None:
                    await requeue()

    async def cancel_video(self, video_id: str) -> None:
        with map_asyncpg_errors():
            await self.pool.execute(
                """UPDATE transcode_jobs SET state = 'canceled', lease_owner = NULL, updated_at = now()
                   WHERE video_id = $1 AND state IN ('claimed', 'retrying')""",
                video_id,
            )

    async def reap(self, reclaim: Reclaim, *, limit: int = 20) -> int:
        """Hand jobs with an expired lease to ``reclaim`` (which republishes or fails them)."""
        with map_asyncpg_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    """SELECT job_id, attempt, command FROM transcode_jobs
                       WHERE state = 'claimed' AND lease_expires_at < now()
                       ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
                    limit,
                )
                for row in rows:
                    command = row["command"]
                    job = Job(
                        TranscodeRendition.model_validate(
                            json.loads(command) if isinstance(command, str) else command
                        ),
                        row["attempt"],
                    )
                    state = await reclaim(job)
                    await conn.execute(
                        """UPDATE transcode_jobs SET state = $2, lease_owner = NULL, lease_expires_at = NULL,
                                  updated_at = now() WHERE job_id = $1""",
                        job.id,
                        state,
                    )
        return len(rows)
