"""Thumbnailer handlers with a fake frame grabber: files written, reports published."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.errors import EncodeFailed, PermanentError, TransientError, WorkCanceled
from shared.events import VideoUploaded
from shared.ids import event_id
from shared.messaging import consumer
from shared.messaging.codec import OutgoingMessage
from shared.messaging.memory import InMemoryPublisher
from shared.messaging.topology import RESULTS, build
from shared.reports import (
    THUMBNAIL_RUN_HEADER,
    ThumbnailCompletedReport,
    ThumbnailFailedReport,
    ThumbnailStartedReport,
)
from shared.storage import LocalStorage, source_key, thumbnail_key, video_prefix
from tests.settings import make
from tests.unit import factories
from thumbnailer.app import routes
from thumbnailer.handlers import FrameGrabber, ThumbnailerDeps, handle_video_uploaded, report_thumbnail_failed
from thumbnailer.settings import ThumbnailerSettings


class FakeGrabber(FrameGrabber):
    """Writes a JPEG-ish file to every output of the command, as ffmpeg would."""

    def __init__(self, *, writes: bool = True) -> None:
        self.writes = writes
        self.argvs: list[list[str]] = []

    async def run(self, argv: list[str], *, timeout: float, stall_timeout: float) -> None:
        self.argvs.append(argv)
        if self.writes:
            for arg in argv:
                if arg.endswith(".jpg"):
                    Path(arg).write_bytes(b"\xff\xd8 jpeg " + arg.encode())


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path)


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


@pytest.fixture
def grabber() -> FakeGrabber:
    return FakeGrabber()


@pytest.fixture
def deps(storage: LocalStorage, publisher: InMemoryPublisher, grabber: FakeGrabber) -> ThumbnailerDeps:
    return ThumbnailerDeps(make(ThumbnailerSettings), publisher, storage, grabber)


def uploaded(
    storage: LocalStorage, width: int = 1920, height: int = 1080, *, with_source: bool = True
) -> VideoUploaded:
    video = factories.video(source=factories.source(width=width, height=height, duration_s=8.0))
    if with_source:
        path = storage.local_path(source_key(video.id))
        path.parent.mkdir(parents=True)
        path.write_bytes(b"source")
    return VideoUploaded(
        id=event_id(video.id, "uploaded"), timestamp=datetime.now(UTC), sequence=1, data=video
    )


async def test_an_upload_gets_posters_at_each_width_and_a_completed_report(
    deps: ThumbnailerDeps, storage: LocalStorage, publisher: InMemoryPublisher, grabber: FakeGrabber
) -> None:
    event = uploaded(storage)

    await handle_video_uploaded(event, deps)

    started, published = publisher.published  # its start first: the gateway shows it processing
    assert (started.exchange, started.routing_key) == (RESULTS, "thumbnail.started")
    assert started.decode(ThumbnailStartedReport).id == event_id(event.data.id, "thumbnail.started")
    assert (published.exchange, published.routing_key) == (RESULTS, "thumbnail.completed")
    report = published.decode(ThumbnailCompletedReport)
    assert report.id == event_id(event.data.id, "thumbnail.completed")
    assert published.message.message_id == report.id
    assert report.video_id == event.data.id
    assert report.widths == [1280, 640, 320]
    for width in (1280, 640, 320):
        assert storage.local_path(thumbnail_key(event.data.id, width)).read_bytes().startswith(b"\xff\xd8")
    assert list(storage.tmp.iterdir()) == []
    [argv] = grabber.argvs
    assert argv[argv.index("-ss") + 1] == "2.0"
    assert argv[argv.index("-i") + 1] == str(storage.local_path(source_key(event.data.id)))


async def test_a_small_source_gets_only_the_widths_that_fit(
    deps: ThumbnailerDeps, storage: LocalStorage, publisher: InMemoryPublisher
) -> None:
    event = uploaded(storage, 200, 150)

    await handle_video_uploaded(event, deps)

    assert publisher.published[-1].decode(ThumbnailCompletedReport).widths == [200]
    assert storage.local_path(thumbnail_key(event.data.id, 200)).is_file()
    assert not storage.local_path(thumbnail_key(event.data.id, 320)).exists()


async def test_a_redelivered_upload_reports_the_same_id(
    deps: ThumbnailerDeps, storage: LocalStorage, publisher: InMemoryPublisher
) -> None:
    event = uploaded(storage)

    await handle_video_uploaded(event, deps)
    await handle_video_uploaded(event, deps)

    started, first, started_again, second = publisher.published
    assert started.message.message_id == started_again.message.message_id
    assert first.message.message_id == second.message.message_id


async def test_a_retry_run_reports_under_ids_of_its_own_and_names_its_run(
    deps: ThumbnailerDeps, storage: LocalStorage, publisher: InMemoryPublisher
) -> None:
    event = uploaded(storage)
    await handle_video_uploaded(event, deps)
    with consumer.handling({THUMBNAIL_RUN_HEADER: "job_0123456789abcdef"}):
        await handle_video_uploaded(event, deps)
        await report_thumbnail_failed(event, PermanentError("no frame"), deps)

    first_started, first, started, completed, failed = (p.message for p in publisher.published)
    assert [m.type for m in (started, completed, failed)] == [
        "thumbnail.started",
        "thumbnail.completed",
        "thumbnail.failed",
    ]
    assert started.message_id != first_started.message_id
    assert completed.message_id != first.message_id
    assert failed.message_id == event_id(event.data.id, "thumbnail.failed", "job_0123456789abcdef")
    assert published_run(first) is None
    assert {published_run(m) for m in (started, completed, failed)} == {"job_0123456789abcdef"}


def published_run(message: OutgoingMessage) -> object:
    return json.loads(message.body).get("run")


async def test_an_upload_whose_source_is_gone_is_canceled_and_publishes_nothing(
    deps: ThumbnailerDeps, storage: LocalStorage, publisher: InMemoryPublisher, grabber: FakeGrabber
) -> None:
    await storage.mark()  # the gateway's storage: a missing source is a deleted video
    event = uploaded(storage, with_source=False)

    with pytest.raises(WorkCanceled, match=event.data.id):
        await handle_video_uploaded(event, deps)

    assert publisher.published == []
    assert grabber.argvs == []


class DeletingGrabber(FakeGrabber):
    """The video is deleted (its folder removed) while ffmpeg runs; ffmpeg then fails, or not."""

    def __init__(self, storage: LocalStorage, video_id: str, *, fails: bool) -> None:
        super().__init__()
        self.storage, self.video_id, self.fails = storage, video_id, fails

    async def run(self, argv: list[str], *, timeout: float, stall_timeout: float) -> None:
        await self.storage.delete_prefix(video_prefix(self.video_id))
        if self.fails:
            raise EncodeFailed("ffmpeg exited with status 1: source: No such file or directory")
        await super().run(argv, timeout=timeout, stall_timeout=stall_timeout)


@pytest.mark.parametrize("fails", [True, False], ids=["ffmpeg fails", "ffmpeg finishes"])
async def test_a_video_deleted_while_its_poster_is_made_is_canceled_and_leaves_no_file(
    deps: ThumbnailerDeps, storage: LocalStorage, publisher: InMemoryPublisher, fails: bool
) -> None:
    await storage.mark()
    event = uploaded(storage)
    grabber = DeletingGrabber(storage, event.data.id, fails=fails)

    with pytest.raises(WorkCanceled, match="video deleted"):  # not a media error for the DLQ
        await handle_video_uploaded(event, dataclasses.replace(deps, grabber=grabber))

    assert [p.routing_key for p in publisher.published] == ["thumbnail.started"]
    assert not storage.local_path(video_prefix(event.data.id)).exists()
    assert list(storage.tmp.iterdir()) == []


async def test_a_missing_source_in_storage_that_is_not_vidqs_is_worth_a_retry(
    deps: ThumbnailerDeps, storage: LocalStorage, publisher: InMemoryPublisher, grabber: FakeGrabber
) -> None:
    event = uploaded(storage, with_source=False)  # and no marker: a volume not mounted

    with pytest.raises(TransientError, match="is the volume mounted"):
        await handle_video_uploaded(event, deps)

    assert publisher.published == []
    assert grabber.argvs == []


async def test_no_frame_written_is_a_permanent_failure_that_leaves_no_files(
    deps: ThumbnailerDeps, storage: LocalStorage, publisher: InMemoryPublisher, grabber: FakeGrabber
) -> None:
    grabber.writes = False
    event = uploaded(storage)

    with pytest.raises(EncodeFailed, match="no frame"):
        await handle_video_uploaded(event, deps)

    # only its start: the consumer's failure path reports thumbnail.failed
    assert [p.routing_key for p in publisher.published] == ["thumbnail.started"]
    assert not storage.local_path(thumbnail_key(event.data.id, 1280)).exists()
    assert list(storage.tmp.iterdir()) == []
    # every way tried: key frames, every frame, decoded from the start, from the first frame
    assert ["-skip_frame" in argv for argv in grabber.argvs] == [True, False, False, False]
    assert ["-ss" in argv for argv in grabber.argvs] == [True, True, False, True]


class NoKeyFrameLater(FakeGrabber):
    """A video whose only key frame comes before the quarter mark: key frames only find nothing."""

    async def run(self, argv: list[str], *, timeout: float, stall_timeout: float) -> None:
        self.writes = "-skip_frame" not in argv
        await super().run(argv, timeout=timeout, stall_timeout=stall_timeout)


async def test_a_video_with_no_key_frame_after_the_quarter_mark_is_looked_at_frame_by_frame(
    storage: LocalStorage, publisher: InMemoryPublisher
) -> None:
    grabber = NoKeyFrameLater()
    deps = ThumbnailerDeps(make(ThumbnailerSettings), publisher, storage, grabber)
    event = uploaded(storage)

    await handle_video_uploaded(event, deps)

    assert len(grabber.argvs) == 2
    assert "-skip_frame" not in grabber.argvs[1]
    assert grabber.argvs[1][grabber.argvs[1].index("-ss") + 1] == "2.0"
    assert storage.local_path(thumbnail_key(event.data.id, 1280)).read_bytes().startswith(b"\xff\xd8")
    assert [p.routing_key for p in publisher.published] == ["thumbnail.started", "thumbnail.completed"]


async def test_on_failure_reports_thumbnail_failed_with_the_error(
    deps: ThumbnailerDeps, storage: LocalStorage, publisher: InMemoryPublisher
) -> None:
    event = uploaded(storage)

    await report_thumbnail_failed(event, PermanentError("the video has no decodable picture"), deps)

    [published] = publisher.published
    assert (published.exchange, published.routing_key) == (RESULTS, "thumbnail.failed")
    report = published.decode(ThumbnailFailedReport)
    assert report.id == event_id(event.data.id, "thumbnail.failed")
    assert report.error == "the video has no decodable picture"


def test_an_upload_whose_id_is_no_video_id_is_malformed_before_its_handler(storage: LocalStorage) -> None:
    [route] = routes(make(ThumbnailerSettings), build(make(ThumbnailerSettings)))
    assert route.misplaced is not None
    good = uploaded(storage, with_source=False)
    assert route.misplaced(good) is None
    bad = good.model_copy(update={"data": good.data.model_copy(update={"id": "../../../../tmp"})})
    assert route.misplaced(bad) == "not a video id: '../../../../tmp'"
