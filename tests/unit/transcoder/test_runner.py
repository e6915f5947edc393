"""The local job runner: slot order, flow control, cancellation, lease loss and hand-back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from shared.errors import TransientError
from shared.ladder import Quality
from tests.unit import factories
from tests.unit.transcoder.fakes import FakeClaims
from transcoder.claims import Job
from transcoder.runner import JobRunner

VIDEO_A = "vid_00000000000a"
VIDEO_B = "vid_00000000000b"


def job(job_id: str, quality: str = "720p", video_id: str = VIDEO_A) -> Job:
    return Job(factories.transcode(job_id=job_id, video_id=video_id, quality=Quality(quality)), 1)


class Worker:
    """Stands for an encode: runs until released (or cancelled), and records what happened."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self._gates: dict[str, asyncio.Event] = {}

    def _gate(self, job_id: str) -> asyncio.Event:
        return self._gates.setdefault(job_id, asyncio.Event())

    def release(self, job_id: str) -> None:
        self._gate(job_id).set()

    async def wait_started(self, job_id: str) -> None:
        async with asyncio.timeout(2):
            while job_id not in self.started:
                await asyncio.sleep(0)

    async def __call__(self, batch: tuple[Job, ...]) -> None:
        job = batch[0]  # these tests submit single jobs: a batch of one
        self.started.append(job.id)
        try:
            await self._gate(job.id).wait()
        except asyncio.CancelledError:
            self.cancelled.append(job.id)
            raise
        self.finished.append(job.id)


class Flow:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def pause(self) -> None:
        self.calls.append("pause")

    async def resume(self) -> None:
        self.calls.append("resume")


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2):
        while not condition():
            await asyncio.sleep(0)


@pytest.fixture
def claims() -> FakeClaims:
    return FakeClaims()


@pytest.fixture
def worker() -> Worker:
    return Worker()


@pytest.fixture
def flow() -> Flow:
    return Flow()


@pytest.fixture
async def make_runner(
    claims: FakeClaims, worker: Worker, flow: Flow
) -> AsyncIterator[Callable[[int], JobRunner]]:
    made: list[JobRunner] = []

    def build(slots: int) -> JobRunner:
        runner = JobRunner(slots=slots, claims=claims, heartbeat_s=0.001)
        runner.work, runner.pause, runner.resume = worker, flow.pause, flow.resume
        made.append(runner)
        return runner

    yield build
    tasks = [task for runner in made for _, task in runner.running.values()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_lowest_rung_waiting_starts_first(
    make_runner: Callable[[int], JobRunner], worker: Worker
) -> None:
    runner = make_runner(1)
    await runner.submit(job("first-720p", "720p"))
    for quality in ("1080p", "144p", "480p"):
        await runner.submit(job(f"then-{quality}", quality))

    assert [b[0].id for b in runner.waiting] == ["then-144p", "then-480p", "then-1080p"]
    for finishing in ["first-720p", "then-144p", "then-480p"]:
        await worker.wait_started(finishing)
        worker.release(finishing)
    await worker.wait_started("then-1080p")

    assert worker.started == ["first-720p", "then-144p", "then-480p", "then-1080p"]


async def test_intake_pauses_when_the_slots_are_full_and_resumes_when_one_frees(
    make_runner: Callable[[int], JobRunner], worker: Worker, flow: Flow
) -> None:
    runner = make_runner(2)

    await runner.submit(job("one"))
    assert flow.calls == []
    await runner.submit(job("two"))
    assert flow.calls == ["pause"]
    await runner.submit(job("three"))  # prefetched before the pause took effect
    assert flow.calls == ["pause"]
    assert [b[0].id for b in runner.waiting] == ["three"]

    await until(lambda: worker.started == ["one", "two"])
    worker.release("one")
    await until(lambda: "three" in worker.started)
    assert flow.calls == ["pause"]  # two running: still full

    worker.release("two")
    await until(lambda: flow.calls == ["pause", "resume"])
    assert set(runner.running) == {"three"}


async def test_cancel_video_stops_running_and_waiting_jobs_of_that_video_only(
    make_runner: Callable[[int], JobRunner], worker: Worker
) -> None:
    runner = make_runner(2)
    await runner.submit(job("b-360p", "360p", VIDEO_B))
    await runner.submit(job("a-720p", "720p", VIDEO_A))
    await runner.submit(job("a-480p", "480p", VIDEO_A))
    await runner.submit(job("b-240p", "240p", VIDEO_B))
    await until(lambda: len(worker.started) == 2)

    stopped = runner.cancel_video(VIDEO_A)

    assert stopped == 2
    await until(lambda: "b-240p" in worker.started)
    assert worker.cancelled == ["a-720p"]
    assert "a-480p" not in worker.started
    assert runner.waiting == []
    assert set(runner.running) == {"b-360p", "b-240p"}


async def test_cancel_video_of_an_unknown_video_stops_nothing(
    make_runner: Callable[[int], JobRunner], worker: Worker
) -> None:
    runner = make_runner(1)
    await runner.submit(job("a", video_id=VIDEO_A))

    assert runner.cancel_video(VIDEO_B) == 0
    await until(lambda: worker.started == ["a"])
    assert worker.cancelled == []


async def test_the_heartbeat_stops_jobs_whose_lease_was_lost_and_keeps_the_others(
    make_runner: Callable[[int], JobRunner], worker: Worker, claims: FakeClaims
) -> None:
    runner = make_runner(2)
    await runner.submit(job("lost-running", "720p"))
    await runner.submit(job("kept-running", "480p"))
    await runner.submit(job("lost-waiting", "1080p"))
    claims.lost = {"lost-running", "lost-waiting"}
    claims.renew_crashes = 1  # the first renewal fails unexpectedly, the second as expected;
    claims.renew_failures = 1  # the heartbeat goes on

    heartbeat = asyncio.create_task(runner.heartbeat())
    try:
        await until(lambda: worker.cancelled == ["lost-running"] and not runner.waiting)
    finally:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)

    assert claims.renewed[0] == {"kept-running"}
    assert set(runner.running) == {"kept-running"}
    assert "lost-waiting" not in worker.started


async def test_drain_lets_encodes_finish_within_the_grace_and_hands_back_the_rest(
    make_runner: Callable[[int], JobRunner], worker: Worker, flow: Flow
) -> None:
    runner = make_runner(2)
    await runner.submit(job("quick", "720p"))
    await runner.submit(job("slow", "480p"))
    await runner.submit(job("waiting", "1080p"))
    await until(lambda: len(worker.started) == 2)
    handed_back: list[str] = []

    async def hand_back(job: Job) -> None:
        handed_back.append(job.id)

    worker.release("quick")  # it finishes while drain waits
    await runner.drain(0.05, hand_back)

    assert worker.finished == ["quick"]
    assert worker.cancelled == ["slow"]
    assert handed_back == ["waiting", "slow"]
    assert worker.started == ["quick", "slow"]  # nothing new starts while draining
    assert flow.calls == ["pause"]  # and intake stays paused
    assert runner.running == {}
    assert runner.waiting == []


async def test_drain_hands_back_every_job_even_when_one_hand_back_fails(
    make_runner: Callable[[int], JobRunner], worker: Worker
) -> None:
    runner = make_runner(1)
    for name in ("a", "b", "c"):
        await runner.submit(job(name))
    await until(lambda: worker.started == ["a"])
    attempted: list[str] = []

    async def hand_back(job: Job) -> None:
        attempted.append(job.id)
        if job.id == "b":
            raise TransientError("broker down")

    await runner.drain(0.0, hand_back)

    assert attempted == ["b", "c", "a"]


async def test_a_slot_freed_while_intake_is_being_paused_resumes_it_after_the_pause(
    make_runner: Callable[[int], JobRunner], worker: Worker
) -> None:
    # Pausing cancels a consumer per queue, one after the other; a resume that overtook it would
    # find consumers not yet cancelled, do nothing, and leave the queues without a consumer.
    runner = make_runner(1)
    calls: list[str] = []
    gate = asyncio.Event()

    async def slow_pause() -> None:
        calls.append("pause started")
        await gate.wait()
        calls.append("pause done")

    async def resume() -> None:
        calls.append("resume")

    runner.pause, runner.resume = slow_pause, resume
    submitting = asyncio.create_task(runner.submit(job("one")))  # the only slot is taken: pause
    await until(lambda: calls == ["pause started"])
    await worker.wait_started("one")
    worker.release("one")  # the slot frees while the pause is under way
    await until(lambda: worker.finished == ["one"])
    for _ in range(10):
        await asyncio.sleep(0)
    assert calls == ["pause started"]

    gate.set()
    await submitting
    await until(lambda: calls[-1:] == ["resume"])
    assert calls == ["pause started", "pause done", "resume"]


async def test_intake_ends_in_the_state_the_load_asks_for_after_a_burst_of_changes(
    make_runner: Callable[[int], JobRunner], worker: Worker, flow: Flow
) -> None:
    runner = make_runner(2)
    for name in ("a", "b", "c"):
        await runner.submit(job(name))
    await until(lambda: len(worker.started) == 2)
    for name in ("a", "b", "c"):
        await worker.wait_started(name)
        worker.release(name)
    await until(lambda: not runner.running)

    assert flow.calls[-1] == "resume"
    assert flow.calls.count("pause") == flow.calls.count("resume")


async def test_shutdown_pauses_intake_after_a_resume_under_way_never_before_it(
    make_runner: Callable[[int], JobRunner], worker: Worker
) -> None:
    # A resume that finished after the shutdown's pause would leave consumers taking messages that
    # the stopping process then hands back to itself.
    runner = make_runner(1)
    calls: list[str] = []
    gate = asyncio.Event()

    async def pause() -> None:
        calls.append("pause")

    async def slow_resume() -> None:
        calls.append("resume started")
        await gate.wait()
        calls.append("resume done")

    runner.pause, runner.resume = pause, slow_resume
    await runner.submit(job("one"))  # the only slot is taken: intake paused
    await worker.wait_started("one")
    worker.release("one")  # the slot frees: intake resumes, slowly
    await until(lambda: calls[-1:] == ["resume started"])

    draining = asyncio.create_task(runner.drain(0.0, lambda _job: asyncio.sleep(0)))
    for _ in range(10):
        await asyncio.sleep(0)
    assert calls == ["pause", "resume started"]  # the shutdown waits for the resume …
    gate.set()
    await draining

    assert calls == ["pause", "resume started", "resume done", "pause"]  # … then pauses for good
