"""Fakes of the transcoder's seams: job claims in a dict, and an encoder that writes a file."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from shared import ffmpeg
from shared.commands import TranscodeRendition
from shared.errors import TransientError
from transcoder.claims import Job, Reclaim
from transcoder.handlers import Encoder


@dataclass
class FakeClaims:
    """Claims as state: ``states[job_id]`` is what the real table's ``state`` column would say."""

    attempt: int = 1
    #: Jobs another transcoder holds (or that are done): ``claim`` answers ``None``.
    taken: set[str] = field(default_factory=set)
    #: Leases taken from us: ``renew`` leaves them out.
    lost: set[str] = field(default_factory=set)
    renew_failures: int = 0
    #: Renewals that fail with something unexpected (not a ``TransientError``) before those.
    renew_crashes: int = 0
    states: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str | None] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    canceled_videos: list[str] = field(default_factory=list)
    renewed: list[set[str]] = field(default_factory=list)

    async def claim(self, command: TranscodeRendition) -> Job | None:
        # Like the real table: a job held (a live lease; fakes never expire) or settled is not claimable.
        if command.job_id in self.taken or self.states.get(command.job_id) in (
            "claimed",
            "done",
            "failed",
            "canceled",
        ):
            return None
        self.states[command.job_id] = "claimed"
        return Job(command, self.attempt)

    async def reopen(self, job_id: str) -> bool:
        if self.states.get(job_id) != "failed":
            return False
        self.states[job_id] = "retrying"
        return True

    async def renew(self, job_ids: Iterable[str]) -> set[str]:
        if self.renew_crashes:
            self.renew_crashes -= 1
            raise RuntimeError("cannot switch to state 15; another operation (2) is in progress")
        if self.renew_failures:
            self.renew_failures -= 1
            raise TransientError("database unavailable")
        kept = set(job_ids) - self.lost
        self.renewed.append(kept)
        return kept

    async def finish(self, job_id: str, state: str, error: str | None = None) -> None:
        self.states[job_id] = state
        self.errors[job_id] = error

    async def release(self, job_id: str, requeue: Callable[[], Awaitable[None]]) -> None:
        self.released.append(job_id)
        self.states[job_id] = "retrying"
        await requeue()

    async def cancel_video(self, video_id: str) -> None:
        self.canceled_videos.append(video_id)

    async def reap(self, reclaim: Reclaim, *, limit: int = 20) -> int:
        return 0


def outputs(argv: list[str], source: str) -> list[Path]:
    """The files an ffmpeg command writes: plain outputs, and each file of a ``tee`` output."""
    found: list[Path] = []
    for arg in argv:
        if arg.startswith("[select="):
            for spec in re.split(r"(?<!\\)\|", arg):
                found.append(Path(re.sub(r"\\(.)", r"\1", spec.split("]", 1)[1])))
        elif arg.endswith(".mp4") and arg != source:
            found.append(Path(arg))
    return found


class FakeEncoder(Encoder):
    """Writes ``content`` to the output of the command (or raises ``error``); ``made`` is what it
    encoded: the duration its closing progress block reports, and what a probe of an output finds."""

    def __init__(self, made: ffmpeg.ProbeResult, *, content: bytes = b"mp4 bytes") -> None:
        self.made = made
        self.content = content
        self.error: BaseException | None = None
        self.progress: list[ffmpeg.Progress] = []
        self.argvs: list[list[str]] = []
        #: What ffmpeg "wrote on stderr" (``run`` returns it).
        self.warnings: list[str] = []

    async def run(
        self, argv: list[str], *, timeout: float, stall_timeout: float, on_progress: ffmpeg.OnProgress
    ) -> list[str]:
        self.argvs.append(argv)
        for progress in self.progress:
            await on_progress(progress)
        if self.error is not None:
            raise self.error
        if not any(progress.done for progress in self.progress):
            await on_progress(ffmpeg.Progress(self.made.duration_s, None, None, done=True))
        source = argv[argv.index("-i") + 1]
        for output in outputs(argv, source):
            output.write_bytes(self.content)  # every output of the command (one per rendition)
        return self.warnings

    async def probe(self, path: str) -> ffmpeg.ProbeResult:
        return self.made
