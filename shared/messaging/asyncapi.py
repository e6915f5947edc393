"""The AsyncAPI 3.0 document of vidq's messaging, generated from the topology and the models.

Channels are the exchanges and queues of ``shared/messaging/topology.py``; message payloads are the
JSON schemas of the very pydantic models the services encode and decode (``shared/events.py``,
``shared/reports.py``, ``shared/commands.py``); :data:`FLOWS` says who sends what where. The
gateway serves the document at ``/asyncapi.json``; a test checks it against the topology, so it
cannot drift from what runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.commands import DeliverWebhook, ReplayWebhook, SendTestEvent, TranscodeRendition
from shared.events import EVENT_CLASSES
from shared.messaging.topology import (
    DELIVERIES,
    DLX,
    EVENTS,
    REQUEUE,
    RESULTS,
    RETRY,
    TRANSCODE,
    UPLOADS,
    Topology,
)
from shared.reports import (
    RenditionCompletedReport,
    RenditionFailedReport,
    RenditionProgressReport,
    ThumbnailCompletedReport,
    ThumbnailFailedReport,
    WebhookDisabledReport,
)

REF = "#/components/schemas/{model}"


@dataclass(frozen=True, slots=True)
class Flow:
    """Messages of ``models`` go from ``sender`` to ``exchange`` with ``routing_key``."""

    exchange: str
    routing_key: str
    models: tuple[type[BaseModel], ...]
    sender: str
    summary: str


FLOWS: tuple[Flow, ...] = (
    Flow(UPLOADS, "video.uploaded", (EVENT_CLASSES["video.uploaded"],), "gateway", "an accepted upload"),
    Flow(TRANSCODE, "{quality}", (TranscodeRendition,), "gateway", "one rendition to encode"),
    *(
        Flow(EVENTS, event_type, (model,), "gateway", f"public lifecycle event {event_type}")
        for event_type, model in EVENT_CLASSES.items()
    ),
    *(
        Flow(
            RESULTS,
            str(model.model_fields["type"].default),
            (model,),
            sender,
            "a worker's report to the gateway",
        )
        for model, sender in (
            (RenditionProgressReport, "transcoder"),
            (RenditionCompletedReport, "transcoder"),
            (RenditionFailedReport, "transcoder"),
            (ThumbnailCompletedReport, "thumbnailer"),
            (ThumbnailFailedReport, "thumbnailer"),
            (WebhookDisabledReport, "notifier"),
        )
    ),
    Flow(
        DELIVERIES,
        "webhook",
        (DeliverWebhook,),
        "notifier",
        "attempt one webhook delivery (also the gateway: retry)",
    ),
    Flow(DELIVERIES, "replay", (ReplayWebhook,), "gateway", "re-send an endpoint's events"),
    Flow(DELIVERIES, "test", (SendTestEvent,), "gateway", "send an endpoint a webhook.test event"),
)

_HEADERS = {
    "type": "object",
    "properties": {
        "vidq-attempt": {"type": "integer", "description": "retries already made (on a retried copy)"},
        "vidq-dead-letter-reason": {
            "type": "string",
            "enum": ["malformed", "permanent", "retries-exhausted", "error"],
            "description": "on a dead letter: why it can never succeed",
        },
        "vidq-error": {"type": "string", "description": "on a dead letter: the error, for humans"},
        "vidq-queue": {"type": "string", "description": "on a dead letter: the queue it failed on"},
        "vidq-attempts": {"type": "integer", "description": "on a dead letter: attempts made"},
    },
}


def _message_name(model: type[BaseModel]) -> str:
    return model.__name__


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for flow in FLOWS:
        for model in flow.models:
            schema = model.model_json_schema(ref_template=REF)
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
    return schemas


def _messages() -> dict[str, Any]:
    messages: dict[str, Any] = {}
    for flow in FLOWS:
        for model in flow.models:
            messages[_message_name(model)] = {
                "name": _message_name(model),
                "title": model.__name__,
                "summary": flow.summary,
                "contentType": "application/json",
                "payload": {"$ref": REF.format(model=model.__name__)},
                "headers": _HEADERS,
                "correlationId": {"location": "$message.header#/correlation_id"},
                "bindings": {"amqp": {"deliveryMode": 2, "messageType": flow.routing_key}},
            }
    return messages


def _channel_key(name: str) -> str:
    return name.replace(".", "_").replace("<", "").replace(">", "")


def document(topology: Topology, *, host: str = "localhost:5672", vhost: str = "vidq") -> dict[str, Any]:
    """The AsyncAPI 3.0 document for ``topology``."""
    channels: dict[str, Any] = {}
    for spec in topology.exchanges:
        carried = {
            _message_name(model): {"$ref": f"#/components/messages/{_message_name(model)}"}
            for flow in FLOWS
            if flow.exchange == spec.name
            for model in flow.models
        }
        if spec.name in (RETRY, REQUEUE, DLX):
            carried = {}  # copies of any message of the queue they serve
        channels[_channel_key(spec.name)] = {
            "address": spec.name,
            "title": spec.name,
            "description": spec.purpose,
            "messages": carried,
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": spec.name,
                        "type": spec.kind,
                        "durable": True,
                        "autoDelete": False,
                        "vhost": vhost,
                    },
                }
            },
        }
    for queue in topology.all_queues():
        channels[_channel_key(queue.name)] = {
            "address": queue.name,
            "title": queue.name,
            "description": queue.purpose or f"{queue.kind} queue",
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {
                        "name": queue.name,
                        "durable": True,
                        "exclusive": False,
                        "autoDelete": False,
                        "vhost": vhost,
                    },
                }
            },
        }
    operations: dict[str, Any] = {}
    for flow in FLOWS:
        for model in flow.models:
            name = f"{flow.sender}_sends_{_message_name(model)}_to_{_channel_key(flow.exchange)}"
            operations[name] = {
                "action": "send",
                "summary": f"{flow.sender}: {flow.summary} (routing key {flow.routing_key})",
                "channel": {"$ref": f"#/channels/{_channel_key(flow.exchange)}"},
                "messages": [
                    {"$ref": f"#/channels/{_channel_key(flow.exchange)}/messages/{_message_name(model)}"}
                ],
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "vidq messaging",
            "version": "1.0.0",
            "description": (
                "Exchanges, queues and messages of vidq on RabbitMQ. Every message is persistent JSON with "
                "message_id, type, correlation_id (the video id) and content_type set; failures go through "
                "<queue>.retry.<delay> and end in <queue>.dlq."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": host,
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "pathname": f"/{vhost}",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": _messages(), "schemas": _schemas()},
    }
