"""The broker layout as data: SPEC names, DLQs, delay queues, policies, and retry schedules."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from shared.events import EVENT_TYPES
from shared.ladder import RUNGS
from shared.messaging.topology import (
    DLX,
    EVENTS,
    EXCHANGES,
    NOTIFIER_WEBHOOKS,
    REQUEUE,
    RETRY,
    Binding,
    QueueSpec,
    Topology,
    broadcast_queue,
    build,
    format_delay,
)
from shared.settings import ServiceSettings, parse_duration
from tests.settings import make


@pytest.fixture
def topology() -> Topology:
    return build(make(ServiceSettings))


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("#", "video.ready", True),
        ("video.*", "video.ready", True),
        ("video.*", "rendition.completed", False),
        ("video.#", "video.ready", True),
        ("video.ready", "video.ready", True),
        ("*", "video.ready", False),
        ("#.failed", "rendition.failed", True),
        ("video.#.ready", "video.ready", True),
    ],
)
def test_the_topic_matcher_of_these_tests_follows_amqp(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


def test_every_name_starts_with_vidq(topology: Topology) -> None:
    names = [
        *(e.name for e in topology.exchanges),
        *(q.name for q in topology.all_queues()),
        *(b.exchange for q in topology.all_queues() for b in q.bindings),
        *(p.name for p in topology.policies()),
    ]

    assert names
    assert [n for n in names if not n.startswith("vidq.")] == []


def test_the_spec_exchanges_exist_with_their_kinds(topology: Topology) -> None:
    kinds = {e.name: e.kind for e in topology.exchanges}

    assert kinds["vidq.uploads"] == "fanout"
    assert kinds["vidq.transcode"] == "direct"
    assert kinds["vidq.events"] == "topic"
    assert kinds[DLX] == "direct"


def test_there_is_one_transcode_queue_per_rung_bound_by_its_quality(topology: Topology) -> None:
    for name in ["2160p", "1440p", "1080p", "720p", "480p", "360p", "240p", "144p"]:
        queue = topology.queue(f"vidq.transcode.{name}")
        assert Binding("vidq.transcode", name) in queue.bindings
    assert len([q for q in topology.work_queues if q.name.startswith("vidq.transcode.")]) == len(RUNGS)
    assert topology.transcode_queue("720p").name == "vidq.transcode.720p"


def test_the_thumbnailer_queue_is_bound_to_the_uploads_fanout(topology: Topology) -> None:
    assert Binding("vidq.uploads") in topology.queue("vidq.thumbnailer.uploads").bindings


def test_every_binding_names_a_declared_exchange(topology: Topology) -> None:
    declared = {e.name for e in EXCHANGES}

    assert {b.exchange for q in topology.all_queues() for b in q.bindings} <= declared


def test_every_work_queue_has_a_dlq_bound_to_the_dead_letter_exchange(topology: Topology) -> None:
    for work in topology.work_queues:
        companions = {q.name: q for q in topology.companions(work)}
        dlq = companions[f"{work.name}.dlq"]
        assert dlq.kind == "dlq"
        assert dlq.bindings == (Binding(DLX, work.name),)


def test_delay_queues_expire_back_into_their_work_queue_after_the_delay_in_their_name(
    topology: Topology,
) -> None:
    for work in topology.work_queues:
        delays = [q for q in topology.companions(work) if q.kind == "delay"]
        assert sorted(parse_duration(q.name.rsplit(".", 1)[1]) for q in delays) == sorted(
            set(work.retry_delays)
        )
        for queue in delays:
            assert queue.name.startswith(f"{work.name}.retry.")
            seconds = parse_duration(queue.name.removeprefix(f"{work.name}.retry."))
            assert queue.arguments["x-message-ttl"] == seconds * 1000
            assert queue.arguments["x-dead-letter-exchange"] == REQUEUE
            assert queue.arguments["x-dead-letter-routing-key"] == work.name
            assert queue.arguments["x-queue-type"] == "quorum"
            assert queue.bindings == (Binding(RETRY, queue.name),)


def test_a_retry_reaches_its_delay_queue_and_comes_back_to_the_work_queue(topology: Topology) -> None:
    for work in topology.work_queues:
        by_binding = {b: q.name for q in topology.companions(work) for b in q.bindings}
        for delay in work.retry_delays:
            assert by_binding[Binding(RETRY, work.delay_queue(delay))] == work.delay_queue(delay)
        assert by_binding[Binding(REQUEUE, work.name)] == work.name


def test_work_queues_carry_only_the_quorum_type_as_arguments(topology: Topology) -> None:
    for work in topology.work_queues:
        own = topology.companions(work)[0]
        assert own.name == work.name
        assert dict(own.arguments) == {"x-queue-type": "quorum"}


def test_each_work_queue_has_exactly_one_policy_with_delivery_limit_and_dead_lettering() -> None:
    topology = build(make(ServiceSettings, delivery_limit=7))
    policies = topology.policies()

    for queue in topology.all_queues():
        matching = [p for p in policies if re.search(p.pattern, queue.name)]
        if queue.kind == "work":
            assert [p.name for p in matching] == [queue.name]
            definition = matching[0].definition
            assert definition["delivery-limit"] == 7
            assert definition["dead-letter-exchange"] == DLX
            assert definition["dead-letter-routing-key"] == queue.name
            assert definition["dead-letter-strategy"] == "at-least-once"
        elif queue.kind == "dlq":
            assert [p.name for p in matching] == ["vidq.dlq"]
        else:
            assert matching == []


def test_every_event_type_is_consumed_from_the_events_exchange(topology: Topology) -> None:
    bindings = [
        (q.name, b.routing_key) for q in topology.work_queues for b in q.bindings if b.exchange == EVENTS
    ]

    for event_type in EVENT_TYPES:
        consumers = [name for name, key in bindings if topic_matches(key, event_type)]
        assert NOTIFIER_WEBHOOKS in consumers, event_type


def test_the_email_queue_hears_only_ready_and_failed(topology: Topology) -> None:
    keys = [b.routing_key for b in topology.queue("vidq.notifier.email").bindings if b.exchange == EVENTS]

    assert [t for t in EVENT_TYPES if any(topic_matches(k, t) for k in keys)] == [
        "video.ready",
        "video.failed",
    ]


def test_a_broadcast_queue_is_a_classic_per_process_queue_on_the_events_exchange() -> None:
    queue = broadcast_queue("vidq.gateway.live", "video.*", "rendition.*")

    assert queue.kind == "broadcast"
    assert queue.name.startswith("vidq.gateway.live.")
    assert dict(queue.arguments) == {}
    assert queue.bindings == (Binding(EVENTS, "video.*"), Binding(EVENTS, "rendition.*"))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (5, "5s"),
        (59, "59s"),
        (60, "1m"),
        (90, "90s"),
        (300, "5m"),
        (3600, "1h"),
        (5400, "90m"),
        (7200, "2h"),
        (86400, "1d"),
        (90000, "25h"),
    ],
)
def test_format_delay_uses_the_largest_whole_unit(seconds: int, text: str) -> None:
    assert format_delay(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), (" 5 m ", 300)]
)
def test_parse_duration_reads_a_number_and_a_unit(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "-5s", "1.5h", "5 minutes"])
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_retry_schedule_settings_parse_a_comma_list_of_durations() -> None:
    settings = make(ServiceSettings, retry_webhook="5s,5m,2h", retry_email=" 30s , 1d ")

    assert settings.retry_webhook == (5, 300, 7200)
    assert settings.retry_email == (30, 86400)


def test_retry_schedule_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDQ_RETRY_TRANSCODE", "10s,1m")

    settings = ServiceSettings(_env_file=None)

    assert settings.retry_transcode == (10, 60)


def test_a_bad_retry_schedule_is_refused() -> None:
    with pytest.raises(ValidationError, match="not a duration"):
        make(ServiceSettings, retry_transcode="5s,soon")


def test_the_retry_schedule_names_the_delay_queues() -> None:
    topology = build(make(ServiceSettings, retry_transcode="10s,1m,10s"))

    names = [q.name for q in topology.companions(topology.transcode_queue("720p")) if q.kind == "delay"]

    assert names == ["vidq.transcode.720p.retry.10s", "vidq.transcode.720p.retry.1m"]


def test_a_queue_spec_counts_the_first_delivery_in_max_attempts() -> None:
    assert QueueSpec("vidq.x", retry_delays=(1, 2)).max_attempts == 3
    assert QueueSpec("vidq.x").max_attempts == 1
