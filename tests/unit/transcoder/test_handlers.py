"""Transcoder handlers with fakes: what a job publishes, writes and records for each outcome."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared import ffmpeg
from shared.commands import Sibling, TranscodeRendition
from shared.errors import EncodeFailed, TransientError
from shared.events import VideoDeleted
from shared.ffmpeg import ProbeResult, Progress
from shared.ids import event_id
from shared.ladder import Quality
from shared.messaging import consumer
from shared.messaging.codec import ATTEMPT_HEADER
from shared.messaging.consumer import REASON_HEADER
from shared.messaging.memory import InMemoryPublisher, Published
from shared.messaging.topology import DLX, REQUEUE, RESULTS, RETRY, build
from shared.reports import RenditionCompletedReport, RenditionFailedReport, RenditionProgressReport
from shared.storage import LocalStorage, rendition_key, source_key, video_prefix
from tests.settings import make
from tests.unit import factories
from tests.unit.transcoder.fakes import FakeClaims, FakeEncoder
from transcoder.claims import Job
from transcoder.handlers import (
    TranscoderDeps,
    check_complete,
    hand_back,
    handle_transcode_rendition,
    handle_video_canceled,
    reclaim,
    run_batch,
    run_job,
)
from transcoder.runner import JobRunner
from transcoder.settings import TranscoderSettings

MADE = ProbeResult(
    format_name="mov,mp4,m4a,3gp,3g2,mj2",
    duration_s=10.0,
    width=1280,
    height=720,
    rotation=0,
    video_codec="h264",
    pix_fmt="yuv420p",
    frame_rate=25.0,
    audio_codec="aac",
)


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


@pytest.fixture
def claims() -> FakeClaims:
    return FakeClaims()


@pytest.fixture
def encoder() -> FakeEncoder:
    return FakeEncoder(MADE, content=b"x" * 1234)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path)


@pytest.fixture
def deps(
    publisher: InMemoryPublisher, claims: FakeClaims, encoder: FakeEncoder, storage: LocalStorage
) -> TranscoderDeps:
    settings = make(TranscoderSettings)  # retry_transcode = 30s, 5m → three attempts
    return TranscoderDeps(
        settings=settings,
        topology=build(settings),
        publisher=publisher,
        storage=storage,
        claims=claims,
        runner=JobRunner(slots=1, claims=claims, heartbeat_s=60),
        encoder=encoder,
    )


@pytest.fixture
def cmd(storage: LocalStorage) -> TranscodeRendition:
    command = factories.transcode()
    source = storage.local_path(source_key(command.video_id))
    source.parent.mkdir(parents=True)
    source.write_bytes(b"source video")
    return command


def only(published: list[Published]) -> Published:
    assert len(published) == 1, published
    return published[0]


def rendition_file(storage: LocalStorage, cmd: TranscodeRendition) -> Path:
    return storage.local_path(rendition_key(cmd.video_id, cmd.quality.value))


def leftovers(storage: LocalStorage) -> list[Path]:
    return list(storage.tmp.iterdir()) if storage.tmp.exists() else []


async def test_a_successful_job_writes_the_rendition_reports_completed_and_is_done(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    claims: FakeClaims,
    storage: LocalStorage,
) -> None:
    await run_job(Job(cmd, 1), deps)

    published = only(publisher.to(RESULTS, "rendition.completed"))
    report = published.decode(RenditionCompletedReport)
    assert report.id == event_id(cmd.job_id, "rendition.completed")
    assert published.message.message_id == report.id
    assert published.message.correlation_id == cmd.video_id
    assert (report.video_id, report.job_id, report.quality) == (cmd.video_id, cmd.job_id, "720p")
    assert (report.width, report.height, report.duration_s) == (1280, 720, 10.0)
    assert report.size_bytes == 1234
    assert rendition_file(storage, cmd).read_bytes() == b"x" * 1234
    assert claims.states[cmd.job_id] == "done"
    assert publisher.to(RETRY) == []
    assert publisher.to(DLX) == []
    assert leftovers(storage) == []


async def test_a_redelivered_job_reports_the_same_completed_id(
    deps: TranscoderDeps, cmd: TranscodeRendition, publisher: InMemoryPublisher
) -> None:
    await run_job(Job(cmd, 1), deps)
    await run_job(Job(cmd, 2), deps)

    first, second = publisher.to(RESULTS, "rendition.completed")
    assert first.message.message_id == second.message.message_id


async def test_the_report_gives_the_planned_size_and_the_duration_ffmpeg_encoded(
    deps: TranscoderDeps, cmd: TranscodeRendition, publisher: InMemoryPublisher, encoder: FakeEncoder
) -> None:
    # ffmpeg's closing progress block says how far it got; the scale filter makes the planned
    # size, upright (tests/integration/test_ffmpeg.py reads both back from real outputs)
    encoder.progress = [Progress(out_time_s=9.96, speed=2.0, frame=249, done=True)]

    await run_job(Job(cmd, 1), deps)

    report = only(publisher.to(RESULTS, "rendition.completed")).decode(RenditionCompletedReport)
    assert (report.width, report.height) == (cmd.width, cmd.height)
    assert report.duration_s == 9.96


async def test_progress_is_reported_as_a_percentage_and_throttled(
    deps: TranscoderDeps, cmd: TranscodeRendition, publisher: InMemoryPublisher, encoder: FakeEncoder
) -> None:
    encoder.progress = [
        Progress(out_time_s=5.0, speed=1.5, frame=125, done=False),
        Progress(out_time_s=6.0, speed=1.5, frame=150, done=False),  # within the 1 s interval
        Progress(out_time_s=10.0, speed=1.5, frame=250, done=True),
    ]

    await run_job(Job(cmd, 1), deps)

    progress = only(publisher.to(RESULTS, "rendition.progress")).decode(RenditionProgressReport)
    assert (progress.progress, progress.speed, progress.job_id) == (50.0, 1.5, cmd.job_id)
    assert publisher.types() == ["rendition.progress", "rendition.completed"]


async def test_a_progress_report_that_cannot_be_published_does_not_stop_the_encode(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
) -> None:
    encoder.progress = [Progress(out_time_s=5.0, speed=None, frame=None, done=False)]
    publisher.fail_next = 1

    await run_job(Job(cmd, 1), deps)

    assert publisher.types() == ["rendition.completed"]
    assert claims.states[cmd.job_id] == "done"


@pytest.mark.parametrize(("attempt", "delay_queue"), [(1, "retry.30s"), (2, "retry.5m")])
async def test_a_transient_failure_before_the_last_attempt_schedules_a_retry(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
    storage: LocalStorage,
    attempt: int,
    delay_queue: str,
) -> None:
    encoder.error = TransientError("ffmpeg made no progress for 120 s")

    await run_job(Job(cmd, attempt), deps)

    retry = only(publisher.published)
    assert (retry.exchange, retry.routing_key) == (RETRY, f"vidq.transcode.720p.{delay_queue}")
    assert retry.message.headers[ATTEMPT_HEADER] == attempt
    assert retry.decode(TranscodeRendition) == cmd
    assert claims.states[cmd.job_id] == "retrying"
    assert claims.errors[cmd.job_id] == "ffmpeg made no progress for 120 s"
    assert not rendition_file(storage, cmd).exists()
    assert leftovers(storage) == []


async def test_a_transient_failure_on_the_last_attempt_fails_the_rendition_and_parks_the_command(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
) -> None:
    encoder.error = TransientError("ffmpeg was killed by signal 9")

    await run_job(Job(cmd, 3), deps)

    failed = only(publisher.to(RESULTS, "rendition.failed")).decode(RenditionFailedReport)
    assert failed.id == event_id(cmd.job_id, "rendition.failed")
    assert "gave up after 3 attempts" in failed.error
    assert "killed by signal 9" in failed.error
    assert failed.attempts == 3
    parked = only(publisher.to(DLX))
    assert parked.routing_key == "vidq.transcode.720p"
    assert parked.message.headers[REASON_HEADER] == "retries-exhausted"  # not the media's fault
    assert parked.decode(TranscodeRendition) == cmd
    assert publisher.to(RETRY) == []
    assert claims.states[cmd.job_id] == "failed"


async def test_an_encode_failure_fails_the_rendition_at_once(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
    storage: LocalStorage,
) -> None:
    encoder.error = EncodeFailed("ffmpeg exited with status 1: moov atom not found")

    await run_job(Job(cmd, 1), deps)

    failed = only(publisher.to(RESULTS, "rendition.failed")).decode(RenditionFailedReport)
    assert failed.error == "ffmpeg exited with status 1: moov atom not found"
    assert only(publisher.to(DLX)).routing_key == "vidq.transcode.720p"
    assert publisher.to(RETRY) == []
    assert claims.states[cmd.job_id] == "failed"
    assert claims.errors[cmd.job_id] == failed.error
    assert not rendition_file(storage, cmd).exists()


async def test_an_unexpected_error_fails_the_rendition_as_an_internal_error(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
) -> None:
    encoder.error = ZeroDivisionError("oops")

    await run_job(Job(cmd, 1), deps)

    failed = only(publisher.to(RESULTS, "rendition.failed")).decode(RenditionFailedReport)
    assert failed.error.startswith("internal error")
    assert "oops" in failed.error
    assert claims.states[cmd.job_id] == "failed"


async def test_a_job_whose_source_is_gone_is_canceled_and_publishes_nothing(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
    storage: LocalStorage,
) -> None:
    await storage.mark()  # the gateway's storage: a missing source is a deleted video
    storage.local_path(source_key(cmd.video_id)).unlink()

    await run_job(Job(cmd, 1), deps)

    assert claims.states[cmd.job_id] == "canceled"
    assert publisher.published == []
    assert encoder.argvs == []


class DeletingEncoder(FakeEncoder):
    """The video is deleted (its folder removed) while ffmpeg runs; ffmpeg then fails, or not."""

    def __init__(self, storage: LocalStorage, video_id: str, *, fails: bool) -> None:
        super().__init__(MADE)
        self.storage, self.video_id, self.fails = storage, video_id, fails

    async def run(
        self, argv: list[str], *, timeout: float, stall_timeout: float, on_progress: ffmpeg.OnProgress
    ) -> list[str]:
        await self.storage.delete_prefix(video_prefix(self.video_id))
        if self.fails:
            raise EncodeFailed("ffmpeg exited with status 1: source: No such file or directory")
        return await super().run(argv, timeout=timeout, stall_timeout=stall_timeout, on_progress=on_progress)


@pytest.mark.parametrize("fails", [True, False], ids=["ffmpeg fails", "ffmpeg finishes"])
async def test_a_job_whose_video_is_deleted_while_it_encodes_is_canceled_and_leaves_no_file(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    claims: FakeClaims,
    storage: LocalStorage,
    fails: bool,
) -> None:
    await storage.mark()
    encoder = DeletingEncoder(storage, cmd.video_id, fails=fails)

    await run_job(Job(cmd, 1), dataclasses.replace(deps, encoder=encoder))

    assert claims.states[cmd.job_id] == "canceled"  # not failed, nothing in the DLQ
    assert publisher.to(RESULTS, "rendition.failed") == []
    assert publisher.to(RESULTS, "rendition.completed") == []
    assert publisher.to(DLX) == []
    assert not storage.local_path(video_prefix(cmd.video_id)).exists()
    assert list(storage.tmp.iterdir()) == []


async def test_a_missing_source_in_storage_that_is_not_vidqs_is_retried_then_fails_with_the_reason(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
    storage: LocalStorage,
) -> None:
    # a volume not mounted: no marker, no source; not a deletion to drop without a word
    storage.local_path(source_key(cmd.video_id)).unlink()

    await run_job(Job(cmd, 1), deps)

    retry = only(publisher.published)
    assert retry.exchange == RETRY
    assert claims.states[cmd.job_id] == "retrying"
    assert "storage is not vidq's" in (claims.errors[cmd.job_id] or "")

    publisher.published.clear()
    await run_job(Job(cmd, 3), deps)
    failed = only(publisher.to(RESULTS, "rendition.failed")).decode(RenditionFailedReport)
    assert "is the volume mounted" in failed.error
    assert only(publisher.to(DLX)).message.headers[REASON_HEADER] == "retries-exhausted"
    assert encoder.argvs == []


async def test_a_cancelled_job_is_left_to_whoever_cancelled_it(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
) -> None:
    claims.states[cmd.job_id] = "claimed"
    encoder.error = asyncio.CancelledError()

    with pytest.raises(asyncio.CancelledError):
        await run_job(Job(cmd, 1), deps)

    assert claims.states[cmd.job_id] == "claimed"
    assert publisher.published == []


async def test_the_encoder_reads_the_stored_source_and_writes_the_planned_size(
    deps: TranscoderDeps, cmd: TranscodeRendition, encoder: FakeEncoder, storage: LocalStorage
) -> None:
    await run_job(Job(cmd, 1), deps)

    [argv] = encoder.argvs
    assert argv[argv.index("-i") + 1] == str(storage.local_path(source_key(cmd.video_id)))
    assert f"scale={cmd.width}:{cmd.height}" in argv[argv.index("-filter_complex") + 1]


async def test_handle_transcode_rendition_submits_a_claimed_job_to_the_runner(
    deps: TranscoderDeps, cmd: TranscodeRendition, claims: FakeClaims
) -> None:
    ran: list[tuple[Job, ...]] = []

    async def work(batch: tuple[Job, ...]) -> None:
        ran.append(batch)

    deps.runner.work = work
    await handle_transcode_rendition(cmd, deps)
    async with asyncio.timeout(2):
        while not ran:
            await asyncio.sleep(0)

    assert ran == [(Job(cmd, 1),)]
    assert claims.states[cmd.job_id] == "claimed"


async def test_handle_transcode_rendition_skips_a_job_it_cannot_claim(
    deps: TranscoderDeps, cmd: TranscodeRendition, claims: FakeClaims, publisher: InMemoryPublisher
) -> None:
    claims.taken.add(cmd.job_id)

    await handle_transcode_rendition(cmd, deps)

    assert deps.runner.busy == 0
    assert deps.runner.running == {}
    assert publisher.published == []


@pytest.mark.parametrize("replayed", [False, True], ids=["a duplicate", "replayed by an operator"])
async def test_a_job_that_failed_for_good_runs_again_only_when_its_dead_letter_is_replayed(
    deps: TranscoderDeps, cmd: TranscodeRendition, claims: FakeClaims, replayed: bool
) -> None:
    claims.states[cmd.job_id] = "failed"
    ran = await _submitted(deps)

    with consumer.handling({consumer.REPLAYED_HEADER: "2026-01-01T00:00:00Z"} if replayed else {}):
        await handle_transcode_rendition(cmd, deps)

    if replayed:
        await _wait(ran, 1)
        assert claims.states[cmd.job_id] == "claimed"
    else:
        await asyncio.sleep(0.05)
        assert ran == []
        assert claims.states[cmd.job_id] == "failed"


async def test_a_deleted_video_stops_its_jobs_here_and_cancels_its_claims(
    deps: TranscoderDeps, cmd: TranscodeRendition, claims: FakeClaims
) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def work(batch: tuple[Job, ...]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    deps.runner.work = work
    await deps.runner.submit(Job(cmd, 1))
    async with asyncio.timeout(2):
        await started.wait()
    event = VideoDeleted(
        id=event_id(cmd.video_id, "deleted"),
        timestamp=datetime.now(UTC),
        sequence=4,
        data=factories.video(id=cmd.video_id, status="canceled"),
    )

    await handle_video_canceled(event, deps)

    async with asyncio.timeout(2):
        await stopped.wait()
    assert claims.canceled_videos == [cmd.video_id]


async def test_hand_back_requeues_the_command_without_counting_an_attempt(
    deps: TranscoderDeps, cmd: TranscodeRendition, publisher: InMemoryPublisher, claims: FakeClaims
) -> None:
    await hand_back(Job(cmd, 2), deps)

    returned = only(publisher.published)
    assert (returned.exchange, returned.routing_key) == (REQUEUE, "vidq.transcode.720p")
    assert ATTEMPT_HEADER not in returned.message.headers
    assert returned.decode(TranscodeRendition) == cmd
    assert claims.released == [cmd.job_id]


async def test_reclaim_dispatches_a_job_again_while_attempts_remain(
    deps: TranscoderDeps, cmd: TranscodeRendition, publisher: InMemoryPublisher
) -> None:
    state = await reclaim(Job(cmd, 2), deps)

    assert state == "retrying"
    again = only(publisher.published)
    assert (again.exchange, again.routing_key) == (REQUEUE, "vidq.transcode.720p")
    assert again.message.headers[ATTEMPT_HEADER] == 2


async def test_reclaim_fails_a_job_whose_attempts_are_used_up(
    deps: TranscoderDeps, cmd: TranscodeRendition, publisher: InMemoryPublisher
) -> None:
    state = await reclaim(Job(cmd, 3), deps)

    assert state == "failed"
    failed = only(publisher.to(RESULTS, "rendition.failed")).decode(RenditionFailedReport)
    assert "stopped answering 3 times" in failed.error
    assert only(publisher.to(DLX)).routing_key == "vidq.transcode.720p"
    assert publisher.to(REQUEUE) == []


@pytest.mark.parametrize("made_s", [9.4, 1.0, 0.0])
async def test_an_output_much_shorter_than_the_source_fails_the_rendition(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
    storage: LocalStorage,
    made_s: float,
) -> None:
    encoder.made = dataclasses.replace(MADE, duration_s=made_s)
    encoder.warnings = ["[mov,mp4] moov atom not found", "Error while decoding stream #0:0"]

    await run_job(Job(cmd, 1), deps)

    failed = only(publisher.to(RESULTS, "rendition.failed")).decode(RenditionFailedReport)
    assert f"stopped at {made_s:.2f} s of 10.00 s" in failed.error
    assert "Error while decoding stream #0:0" in failed.error
    assert publisher.to(RESULTS, "rendition.completed") == []
    assert claims.states[cmd.job_id] == "failed"
    assert not rendition_file(storage, cmd).exists()


@pytest.mark.parametrize("made_s", [10.0, 9.5, 10.4])
async def test_an_output_within_half_a_second_of_the_source_is_complete(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    made_s: float,
) -> None:
    encoder.made = dataclasses.replace(MADE, duration_s=made_s)

    await run_job(Job(cmd, 1), deps)

    assert publisher.types() == ["rendition.completed"]


async def test_a_long_source_may_end_up_to_two_percent_short() -> None:
    long = factories.transcode(duration_s=600.0)

    check_complete(long, 588.5, [])
    with pytest.raises(EncodeFailed, match="no error reported"):
        check_complete(long, 587.9, [])


@pytest.mark.parametrize(("made_s", "outcome"), [(9.85, "rendition.failed"), (9.95, "rendition.completed")])
async def test_after_a_read_error_an_output_must_reach_the_source_within_a_tenth_of_a_second(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    made_s: float,
    outcome: str,
) -> None:
    encoder.made = dataclasses.replace(MADE, duration_s=made_s)
    encoder.warnings = [
        "[mov,mp4,m4a,3gp,3g2,mj2] stream 0, offset 0x5de22: partial file",
        "Error while decoding stream #0:0: Invalid data found when processing input",
    ]

    await run_job(Job(cmd, 1), deps)

    assert [p.message.type for p in publisher.to(RESULTS)] == [outcome]
    if outcome == "rendition.failed":
        failed = only(publisher.to(RESULTS, "rendition.failed")).decode(RenditionFailedReport)
        assert "stream 0, offset 0x5de22: partial file" in failed.error  # the telling line


async def test_an_output_whose_closing_block_looks_short_is_measured(
    deps: TranscoderDeps, cmd: TranscodeRendition, publisher: InMemoryPublisher, encoder: FakeEncoder
) -> None:
    # a slideshow without audio: the closing block has the last frame's time, a second early
    encoder.progress = [Progress(9.0, None, None, done=True)]

    await run_job(Job(cmd, 1), deps)

    completed = only(publisher.to(RESULTS, "rendition.completed")).decode(RenditionCompletedReport)
    assert completed.duration_s == MADE.duration_s


async def _no_wait(_: float) -> None:
    return None


async def test_a_finished_encode_survives_a_broker_blip_while_it_is_reported(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    claims: FakeClaims,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("transcoder.handlers.asyncio.sleep", _no_wait)
    publisher.fail_next = 3  # the broker is away for three tries

    await run_job(Job(cmd, 1), deps)

    assert len(publisher.to(RESULTS, "rendition.completed")) == 1  # not re-encoded, not retried
    assert publisher.to(RETRY) == []
    assert claims.states[cmd.job_id] == "done"


async def test_an_outcome_that_can_never_be_recorded_leaves_the_job_to_the_reaper(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    claims: FakeClaims,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("transcoder.handlers.asyncio.sleep", _no_wait)
    monkeypatch.setattr("transcoder.handlers.SETTLE_FOR_S", 0.0)
    publisher.fail_next = 1000

    with pytest.raises(TransientError):
        await run_job(Job(cmd, 1), deps)

    # Neither done nor failed: its lease lapses and the reaper dispatches it again.
    assert claims.states.get(cmd.job_id) not in ("done", "failed", "retrying")


def _ladder(cmd: TranscodeRendition) -> TranscodeRendition:
    """``cmd`` (720p) dispatched with its video's 480p and 144p renditions."""
    return cmd.model_copy(
        update={
            "siblings": (
                Sibling(job_id="job_sib480", quality=Quality.P480, width=852, height=480),
                Sibling(job_id="job_sib144", quality=Quality.P144, width=256, height=144),
            )
        }
    )


async def _submitted(deps: TranscoderDeps) -> list[tuple[Job, ...]]:
    ran: list[tuple[Job, ...]] = []

    async def work(batch: tuple[Job, ...]) -> None:
        ran.append(batch)

    deps.runner.work = work
    return ran


async def _wait(ran: list[tuple[Job, ...]], count: int = 1) -> None:
    async with asyncio.timeout(2):
        while len(ran) < count:
            await asyncio.sleep(0)


def _qualities(ran: list[tuple[Job, ...]]) -> list[list[Quality]]:
    return [[j.command.quality for j in batch] for batch in ran]


async def test_a_rung_claims_its_served_siblings_and_encodes_the_lowest_first_then_the_rest_from_one_decode(
    deps: TranscoderDeps, cmd: TranscodeRendition, claims: FakeClaims
) -> None:
    ran = await _submitted(deps)
    await handle_transcode_rendition(_ladder(cmd), deps)
    await _wait(ran, 2)

    lowest, rest = ran
    assert [(j.id, j.command.quality, j.command.width) for j in lowest] == [("job_sib144", Quality.P144, 256)]
    assert [(j.id, j.command.quality, j.command.width) for j in rest] == [
        (cmd.job_id, Quality.P720, 1280),
        ("job_sib480", Quality.P480, 852),
    ]
    assert rest[1].command.siblings == ()  # the sibling travels alone from now on
    assert claims.states == {cmd.job_id: "claimed", "job_sib480": "claimed", "job_sib144": "claimed"}


async def test_the_sibling_own_message_is_then_a_duplicate(
    deps: TranscoderDeps, cmd: TranscodeRendition, claims: FakeClaims
) -> None:
    ran = await _submitted(deps)
    ladder = _ladder(cmd)
    await handle_transcode_rendition(ladder, deps)
    await _wait(ran, 2)
    sibling_message = ladder.sibling(ladder.siblings[0]).model_copy(
        update={"siblings": (Sibling(job_id=cmd.job_id, quality=Quality.P720, width=1280, height=720),)}
    )
    await handle_transcode_rendition(sibling_message, deps)
    await asyncio.sleep(0.05)
    assert len(ran) == 2  # nothing more to encode: its job was claimed with the 720p


async def test_the_lowest_rung_message_claims_the_rest_too_and_its_rung_still_runs_alone(
    deps: TranscoderDeps, cmd: TranscodeRendition
) -> None:
    ran = await _submitted(deps)
    ladder = _ladder(cmd)
    lowest = ladder.sibling(ladder.siblings[1]).model_copy(
        update={
            "siblings": (
                Sibling(job_id=cmd.job_id, quality=Quality.P720, width=1280, height=720),
                ladder.siblings[0],
            )
        }
    )
    await handle_transcode_rendition(lowest, deps)
    await _wait(ran, 2)
    assert _qualities(ran) == [[Quality.P144], [Quality.P720, Quality.P480]]


async def test_messages_of_one_video_arriving_together_make_two_batches_not_one_per_rung(
    deps: TranscoderDeps, cmd: TranscodeRendition, claims: FakeClaims
) -> None:
    ran = await _submitted(deps)
    ladder = _ladder(cmd)
    everyone = (Sibling(job_id=cmd.job_id, quality=Quality.P720, width=1280, height=720), *ladder.siblings)
    messages = [
        ladder.sibling(me).model_copy(update={"siblings": tuple(s for s in everyone if s != me)})
        for me in everyone
    ]
    real_claim = claims.claim

    async def slow_claim(command: TranscodeRendition) -> Job | None:
        await asyncio.sleep(0.01)  # a database round trip: the handlers interleave here
        return await real_claim(command)

    claims.claim = slow_claim  # type: ignore[method-assign]
    await asyncio.gather(*(handle_transcode_rendition(m, deps) for m in messages))
    await _wait(ran, 2)
    await asyncio.sleep(0.05)
    assert _qualities(ran) == [[Quality.P144], [Quality.P720, Quality.P480]]
    assert len(deps.claiming) == 0  # no lock left behind


@pytest.mark.parametrize(
    ("settings_change", "expected"),
    [
        ({"transcoder_qualities": (Quality.P720, Quality.P144)}, [[Quality.P144], [Quality.P720]]),
        ({"transcoder_qualities": (Quality.P720, Quality.P480)}, [[Quality.P720, Quality.P480]]),
        ({"transcoder_decode_once": False}, [[Quality.P720]]),
        ({"transcoder_lowest_alone": False}, [[Quality.P720, Quality.P480, Quality.P144]]),
        ({"transcoder_lowest_alone": True}, [[Quality.P144], [Quality.P720, Quality.P480]]),
        ({"transcoder_lowest_alone": "idle"}, [[Quality.P144], [Quality.P720, Quality.P480]]),
    ],
)
async def test_siblings_are_batched_only_when_served_and_enabled(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    settings_change: dict[str, object],
    expected: list[list[Quality]],
) -> None:
    deps = dataclasses.replace(deps, settings=deps.settings.model_copy(update=settings_change))
    ran = await _submitted(deps)
    await handle_transcode_rendition(_ladder(cmd), deps)
    await _wait(ran, len(expected))
    await asyncio.sleep(0.05)
    assert _qualities(ran) == expected


@pytest.mark.parametrize(
    ("lowest_alone", "expected"),
    [
        ("idle", [[Quality.P720, Quality.P480, Quality.P144]]),
        (True, [[Quality.P144], [Quality.P720, Quality.P480]]),
    ],
)
async def test_a_busy_transcoder_spends_no_second_decode_on_early_playback_unless_told_to(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    claims: FakeClaims,
    lowest_alone: bool | str,
    expected: list[list[Quality]],
) -> None:
    deps = dataclasses.replace(
        deps, settings=deps.settings.model_copy(update={"transcoder_lowest_alone": lowest_alone})
    )
    ran: list[tuple[Job, ...]] = []
    release = asyncio.Event()
    other = cmd.model_copy(update={"video_id": "vid_other", "job_id": "job_other"})

    async def work(batch: tuple[Job, ...]) -> None:
        ran.append(batch)
        if batch[0].video_id == other.video_id:
            await release.wait()  # another video's encode holds the only slot

    deps.runner.work = work
    held = await claims.claim(other)
    assert held is not None
    await deps.runner.submit(held)
    await _wait(ran, 1)
    await handle_transcode_rendition(_ladder(cmd), deps)
    assert [[j.command.quality for j in batch] for batch in deps.runner.waiting] == expected
    release.set()
    await _wait(ran, 1 + len(expected))
    assert _qualities(ran[1:]) == expected


async def test_a_batch_makes_every_rendition_from_one_ffmpeg_and_reports_each(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
    storage: LocalStorage,
) -> None:
    ladder = _ladder(cmd)
    batch = (Job(ladder, 1), Job(ladder.sibling(ladder.siblings[0]), 1))

    await run_batch(batch, deps)

    assert len(encoder.argvs) == 1  # one decode
    assert "split=2" in " ".join(encoder.argvs[0])
    reports = [p.decode(RenditionCompletedReport) for p in publisher.to(RESULTS, "rendition.completed")]
    assert sorted(r.quality for r in reports) == ["480p", "720p"]
    for job in batch:
        assert rendition_file(storage, job.command).read_bytes() == encoder.content
        assert claims.states[job.id] == "done"
    assert leftovers(storage) == []


async def test_a_batch_job_whose_outcome_cannot_be_recorded_does_not_keep_the_others_from_theirs(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    claims: FakeClaims,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("transcoder.handlers.asyncio.sleep", _no_wait)
    monkeypatch.setattr("transcoder.handlers.SETTLE_FOR_S", 0.0)
    ladder = _ladder(cmd)
    batch = (Job(ladder, 1), Job(ladder.sibling(ladder.siblings[0]), 1))
    publisher.fail_next = 1  # the first report is refused, and the settle gives up at once

    with pytest.raises(TransientError):
        await run_batch(batch, deps)

    assert len(publisher.to(RESULTS, "rendition.completed")) == 1
    assert sorted(claims.states.get(job.id, "claimed") for job in batch) == ["claimed", "done"]


async def test_a_failed_batch_retries_each_rendition_on_its_own(
    deps: TranscoderDeps,
    cmd: TranscodeRendition,
    publisher: InMemoryPublisher,
    encoder: FakeEncoder,
    claims: FakeClaims,
) -> None:
    encoder.error = TransientError("ffmpeg was killed by signal 9")
    ladder = _ladder(cmd)
    batch = (Job(ladder, 1), Job(ladder.sibling(ladder.siblings[0]), 1))

    await run_batch(batch, deps)

    assert sorted(p.routing_key for p in publisher.to(RETRY)) == [
        "vidq.transcode.480p.retry.30s",
        "vidq.transcode.720p.retry.30s",
    ]
    assert {claims.states[job.id] for job in batch} == {"retrying"}
