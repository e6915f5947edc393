"""Between models and AMQP messages: every property set on the way out, strict on the way in."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import aio_pika
import pytest

from shared.commands import TranscodeRendition
from shared.errors import MalformedMessage
from shared.events import ANY_EVENT
from shared.messaging.codec import MAX_BODY_BYTES, OutgoingMessage, amqp_properties, decode, outgoing
from tests.unit import factories


def test_amqp_properties_make_a_persistent_json_message_with_every_property() -> None:
    sent_at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    message = OutgoingMessage(
        b'{"a": 1}',
        "evt_1",
        "video.ready",
        correlation_id="vid_1",
        app_id="gateway",
        headers={"vidq-attempt": 2},
        timestamp=sent_at,
    )

    properties = amqp_properties(message)

    assert properties.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert properties.message_id == "evt_1"
    assert properties.message_type == "video.ready"
    assert properties.correlation_id == "vid_1"
    assert properties.content_type == "application/json"
    assert properties.app_id == "gateway"
    assert properties.headers == {"vidq-attempt": 2}
    assert properties.timestamp == sent_at


def test_amqp_properties_stamp_a_time_when_the_message_has_none() -> None:
    assert amqp_properties(OutgoingMessage(b"{}", "m", "t")).timestamp is not None


def test_outgoing_serialises_the_model_and_round_trips_through_decode() -> None:
    command = factories.transcode()

    message = outgoing(command, message_id=command.job_id, type="transcode.rendition", correlation_id="vid_1")

    assert json.loads(message.body)["job_id"] == command.job_id
    assert message.timestamp is not None
    assert decode(message.body, TranscodeRendition) == command


def test_with_headers_merges_and_turns_underscores_into_dashes() -> None:
    message = OutgoingMessage(b"{}", "m", "t", headers={"trace": "abc"})

    copy = message.with_headers(vidq_attempt=1, **{"vidq-queue": "q"})

    assert copy.headers == {"trace": "abc", "vidq-attempt": 1, "vidq-queue": "q"}
    assert message.headers == {"trace": "abc"}
    assert (copy.body, copy.message_id, copy.type) == (message.body, message.message_id, message.type)


def test_decode_reads_a_union_through_a_type_adapter() -> None:
    video = factories.video()
    body = json.dumps(
        {
            "id": "evt_1",
            "type": "video.uploaded",
            "timestamp": "2025-01-02T03:04:05Z",
            "sequence": 1,
            "data": video.model_dump(mode="json"),
        }
    ).encode()

    assert decode(body, ANY_EVENT).type == "video.uploaded"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "Invalid JSON"),
        (b"", "Invalid JSON"),
        (b"\xff\xfe", "Invalid JSON"),
        (b"[1, 2]", "body"),
        (b'"a string"', "body"),
        (b"null", "body"),
        (b'{"job_id": "job_1"}', "video_id: Field required"),
        (
            b'{"job_id": "j", "video_id": "vid_0123456789ab", "quality": "999p", "width": 2, "height": 2,'
            b' "has_audio": false, "duration_s": 1}',
            "quality",
        ),
        (
            b'{"job_id": "j", "video_id": "vid_0123456789ab", "quality": "720p", "width": 1, "height": 2,'
            b' "has_audio": false, "duration_s": 1}',
            "width",
        ),
        (
            b'{"job_id": "j", "video_id": "../../../../tmp", "quality": "720p", "width": 2, "height": 2,'
            b' "has_audio": false, "duration_s": 1}',
            "video_id",  # it would name a folder of storage
        ),
    ],
    ids=[
        "invalid-json",
        "empty",
        "not-utf8",
        "array",
        "string",
        "null",
        "missing-field",
        "bad-enum",
        "too-small",
        "not-a-video-id",
    ],
)
def test_decode_refuses_a_bad_body_saying_why(body: bytes, why: str) -> None:
    with pytest.raises(MalformedMessage, match="schema error") as caught:
        decode(body, TranscodeRendition)

    assert why in str(caught.value)


def test_decode_refuses_a_body_over_the_size_limit_unread() -> None:
    body = b" " * (MAX_BODY_BYTES + 1)

    with pytest.raises(
        MalformedMessage, match=f"{MAX_BODY_BYTES + 1} bytes is over the {MAX_BODY_BYTES} limit"
    ):
        decode(body, TranscodeRendition)


def test_decode_accepts_a_body_of_exactly_the_size_limit() -> None:
    command = factories.transcode()
    compact = command.model_dump_json().encode()
    padded = compact[:-1] + b', "pad": "' + b"x" * 10 + b'"}'
    padding = MAX_BODY_BYTES - len(padded)
    body = compact[:-1] + b', "pad": "' + b"x" * (10 + padding) + b'"}'

    assert len(body) == MAX_BODY_BYTES
    assert decode(body, TranscodeRendition) == command
