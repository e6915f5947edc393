"""An in-memory vidq API for the CLI's unit tests (behind ``httpx.MockTransport``).

``api.on("GET", "/v1/videos/vid_1", response, …)`` queues answers for a route (the last one
repeats); every request is kept in ``api.requests``. ``invoke(api, …)`` runs the real typer app
with a session whose client talks to this fake.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from typer.testing import CliRunner, Result

from shared.events import Event
from shared.resources import Rendition, Video
from tests.unit import factories
from vidq.__main__ import app
from vidq.session import Session

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


class FakeApi:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Answer]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers: Answer) -> FakeApi:
        self.routes[(method, path)] = list(answers)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return problem(404, f"no route {request.method} {request.url.path}")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(request) if callable(answer) else answer

    def session(self) -> Session:
        return Session(transport=httpx.MockTransport(self), pause=lambda _: None)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


def invoke(api: FakeApi, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), obj=api.session())


def problem(status: int, detail: str, title: str = "Problem") -> httpx.Response:
    body = {"type": "urn:vidq:problem:x", "title": title, "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def ok(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def video(video_id: str = "vid_1", status: str = "queued", **values: Any) -> dict[str, Any]:
    renditions = values.pop("renditions", None)
    if renditions is None:
        renditions = [
            factories.rendition(video_id, "720p", status="queued" if status != "ready" else "ready"),
            factories.rendition(
                video_id, "360p", status="queued" if status != "ready" else "ready", width=640, height=360
            ),
        ]
    model = factories.video(id=video_id, status=status, renditions=renditions, **values)
    return model.model_dump(mode="json")


def rendition(video_id: str, quality: str, **values: Any) -> Rendition:
    return factories.rendition(video_id, quality, **values)


def event(cls: type[Event], sequence: int, data: Video | Rendition | dict[str, Any]) -> dict[str, Any]:
    model = cls.model_validate(
        {"id": f"evt_{sequence}", "timestamp": factories.WHEN, "sequence": sequence, "data": data}
    )
    return model.model_dump(mode="json")


def sse(*events: dict[str, Any], ping: bool = True) -> httpx.Response:
    """A text/event-stream answer carrying these event bodies (id = sequence, event = type)."""
    lines = [": ping\n\n"] if ping else []
    for body in events:
        lines.append(f"id: {body['sequence']}\nevent: {body['type']}\ndata: {json.dumps(body)}\n\n")
    return httpx.Response(200, content="".join(lines).encode(), headers={"content-type": "text/event-stream"})
