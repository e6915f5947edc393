"""The OpenAPI document: every SPEC route, and every event as a webhook payload."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shared.events import EVENT_CLASSES, EVENT_TYPES
from tests.settings import make

SPEC_ROUTES = [
    ("post", "/v1/videos"),
    ("get", "/v1/videos"),
    ("get", "/v1/videos/{video_id}"),
    ("delete", "/v1/videos/{video_id}"),
    ("get", "/v1/videos/{video_id}/events"),
    ("get", "/v1/videos/{video_id}/renditions/{quality}"),
    ("get", "/v1/videos/{video_id}/thumbnail"),
    ("post", "/v1/videos/{video_id}/renditions/{quality}/retry"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("get", "/v1/webhooks/{webhook_id}"),
    ("patch", "/v1/webhooks/{webhook_id}"),
    ("delete", "/v1/webhooks/{webhook_id}"),
    ("post", "/v1/webhooks/{webhook_id}/rotate-secret"),
    ("get", "/v1/webhooks/{webhook_id}/deliveries"),
    ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"),
    ("post", "/v1/webhooks/{webhook_id}/replay"),
    ("post", "/v1/webhooks/{webhook_id}/test"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(make(GatewaySettings)).openapi()


@pytest.mark.parametrize(("method", "path"), SPEC_ROUTES)
def test_every_spec_route_is_documented(spec: dict[str, Any], method: str, path: str) -> None:
    assert method in spec["paths"][path]
    assert spec["paths"][path][method].get("description") or spec["paths"][path][method].get("summary")


def test_the_upload_is_documented_as_multipart_with_a_file(spec: dict[str, Any]) -> None:
    body = spec["paths"]["/v1/videos"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"]
    assert body["properties"]["file"]["format"] == "binary"
    assert {"qualities", "callback_url", "notify_email", "metadata"} <= set(body["properties"])


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_is_a_documented_webhook_payload(spec: dict[str, Any], event_type: str) -> None:
    post = spec["webhooks"][event_type]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[-1]
    assert name == EVENT_CLASSES[event_type].__name__
    schema = spec["components"]["schemas"][name]
    assert {"id", "type", "timestamp", "sequence", "data"} <= set(schema["properties"])
    assert [p["name"] for p in post["parameters"]] == ["webhook-id", "webhook-timestamp", "webhook-signature"]


def test_every_v1_route_documents_the_bearer_scheme(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer vidq_…",
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if (method, path) == ("post", "/v1/uploads/{upload_id}"):  # a signed URL: no key
                assert operation.get("security") == []
            elif path.startswith("/v1/"):
                assert operation.get("security") == [{"apiKey": []}], (method, path)


@pytest.mark.parametrize(
    "path", ["/v1/videos/{video_id}/renditions/{quality}", "/v1/videos/{video_id}/thumbnail"]
)
def test_file_downloads_document_ranges_and_conditional_answers(spec: dict[str, Any], path: str) -> None:
    responses = spec["paths"][path]["get"]["responses"]
    assert {"200", "206", "304", "416", "404"} <= set(responses)
    assert "application/problem+json" in responses["416"]["content"]
