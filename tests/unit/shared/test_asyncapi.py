"""The AsyncAPI document: AsyncAPI 3.0's shape, every reference resolves, and it is the topology."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shared.commands import TranscodeRendition
from shared.events import EVENT_TYPES
from shared.ids import event_id
from shared.ladder import Quality
from shared.messaging.asyncapi import FLOWS, document
from shared.messaging.topology import build
from shared.reports import RenditionCompletedReport
from shared.settings import ServiceSettings
from tests.settings import make
from tests.unit import factories


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document(build(make(ServiceSettings)))


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_it_has_the_shape_of_an_asyncapi_3_document(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert {"title", "version"} <= set(doc["info"])
    assert doc["servers"]["rabbitmq"]["protocol"] == "amqp"
    for channel in doc["channels"].values():
        assert isinstance(channel["address"], str)
        assert channel["bindings"]["amqp"]["is"] in ("routingKey", "queue")
    for operation in doc["operations"].values():
        assert operation["action"] in ("send", "receive")


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                _resolve(doc, node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


def test_every_exchange_and_queue_of_the_topology_is_a_channel(doc: dict[str, Any]) -> None:
    topology = build(make(ServiceSettings))
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert {e.name for e in topology.exchanges} <= addresses
    assert {q.name for q in topology.all_queues()} <= addresses


def test_every_event_type_is_a_message_on_vidq_events(doc: dict[str, Any]) -> None:
    carried = doc["channels"]["vidq_events"]["messages"]
    assert {m["$ref"].rsplit("/", 1)[-1] for m in carried.values()} == {
        "".join(part.title() for part in t.replace(".", "_").split("_")) for t in EVENT_TYPES
    }


def _validator(doc: dict[str, Any], model_name: str) -> Draft202012Validator:
    resource: Resource[Any] = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:doc", resource)
    schema = {"$ref": f"urn:doc#/components/schemas/{model_name}"}
    return Draft202012Validator(schema, registry=registry)


def test_the_payload_schemas_are_valid_and_accept_real_messages(doc: dict[str, Any]) -> None:
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    command = TranscodeRendition(
        job_id="job_1",
        video_id="vid_0123456789ab",
        quality=Quality.P720,
        width=1280,
        height=720,
        has_audio=True,
        duration_s=5.0,
    )
    report = RenditionCompletedReport(
        id=event_id("job_1", "rendition.completed"),
        timestamp=datetime.now(UTC),
        video_id="vid_0123456789ab",
        job_id="job_1",
        quality="720p",
        width=1280,
        height=720,
        size_bytes=10,
        duration_s=5.0,
        encode_seconds=1.0,
    )
    video = factories.video()
    ready = {
        "id": event_id(video.id, "ready"),
        "type": "video.ready",
        "timestamp": datetime.now(UTC).isoformat(),
        "sequence": 3,
        "data": video.model_dump(mode="json"),
    }
    for name, instance in (
        ("TranscodeRendition", command.model_dump(mode="json")),
        ("RenditionCompletedReport", report.model_dump(mode="json")),
        ("VideoReady", ready),
    ):
        errors = list(_validator(doc, name).iter_errors(instance))
        assert errors == [], (name, errors[:1])
    assert list(_validator(doc, "TranscodeRendition").iter_errors({"job_id": 1}))  # and refuse wrong ones


def test_every_flow_has_an_operation(doc: dict[str, Any]) -> None:
    assert len(doc["operations"]) == sum(len(f.models) for f in FLOWS)


async def test_the_gateway_serves_it_without_credentials() -> None:
    settings = make(GatewaySettings, amqp_url="amqp://user:secret@broker.internal:5672/vidq")
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/asyncapi.json")
    assert response.status_code == 200
    served = response.json()
    assert "secret" not in response.text
    assert served["servers"]["rabbitmq"]["host"] == "broker.internal:5672"
    assert served["servers"]["rabbitmq"]["pathname"] == "/vidq"
    assert served == json.loads(
        json.dumps(document(build(settings), host="broker.internal:5672", vhost="vidq"))
    )
