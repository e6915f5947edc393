"""The webhook payloads in the OpenAPI document (FastAPI's ``webhooks``), from the event models.

Each SPEC event type is listed with the exact model the notifier sends (``shared/events.py``),
so the document cannot drift from what receivers get. The Standard Webhooks headers are
described once, on every entry.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from shared.events import EVENT_CLASSES, Event

SIGNATURE_HEADERS: list[dict[str, Any]] = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "The event id; the same on every retry, so use it to drop duplicates.",
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "schema": {"type": "integer"},
        "description": "Unix seconds when this attempt was sent (the event's own time is in the body).",
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": (
            "Space-separated `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, one per active secret."
        ),
    },
]


def install(app: FastAPI) -> None:
    for event_type, model in EVENT_CLASSES.items():

        async def receive(body: Event) -> None:  # noqa: ARG001 - documents the body; its type is set below
            return None

        receive.__annotations__["body"] = model
        receive.__name__ = event_type.replace(".", "_")
        receive.__doc__ = f"vidq POSTs `{event_type}` to your endpoint; answer 2xx within 15 s."
        app.webhooks.post(
            event_type,
            summary=event_type,
            openapi_extra={"parameters": SIGNATURE_HEADERS},
            responses={200: {"description": "Received (any 2xx); anything else is retried."}},
        )(receive)
