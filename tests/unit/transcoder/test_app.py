"""A transcoder consumes exactly the qualities it is told to serve (plus its cancel listener)."""

from __future__ import annotations

from shared.messaging.topology import build
from tests.settings import make
from tests.unit import factories
from transcoder.app import routes
from transcoder.settings import TranscoderSettings


def test_a_transcoder_consumes_only_the_queues_of_its_qualities() -> None:
    settings = make(TranscoderSettings, transcoder_qualities="720p, 144p")
    names = [route.queue.name for route in routes(settings, build(settings))]
    assert names[:2] == ["vidq.transcode.720p", "vidq.transcode.144p"]
    assert len(names) == 3
    assert names[2].startswith("vidq.transcoder.cancels.")


def test_by_default_a_transcoder_serves_every_rung() -> None:
    settings = make(TranscoderSettings)
    work = [r.queue.name for r in routes(settings, build(settings)) if r.queue.kind == "work"]
    assert work == [
        f"vidq.transcode.{q}" for q in ("2160p", "1440p", "1080p", "720p", "480p", "360p", "240p", "144p")
    ]


def test_a_job_on_another_rungs_queue_is_refused_by_that_queue() -> None:
    settings = make(TranscoderSettings, transcoder_qualities="720p")
    [work, _] = routes(settings, build(settings))
    assert work.misplaced is not None
    assert work.misplaced(factories.transcode(quality="720p")) is None
    why = work.misplaced(factories.transcode(quality="1080p"))
    assert why == "a 1080p job on the 720p queue (the routing key must be the job's quality)"
