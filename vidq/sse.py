"""A server-sent events reader (the WHATWG ``text/event-stream`` format), for the video streams.

Lines ``field: value`` accumulate into an event, a blank line dispatches it; ``data`` lines join
with newlines, lines starting with ``:`` are comments (the gateway's keep-alive pings), and an
event without data is not dispatched. vidq's ``id`` is the event's ``sequence``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServerEvent:
    id: str
    event: str
    data: str

    @property
    def sequence(self) -> int:
        return int(self.id) if self.id.isdigit() else 0

    def json(self) -> dict[str, Any]:
        """The event body (``{"id": "evt_…", "type": …, "sequence": …, "data": {…}}``)."""
        body = json.loads(self.data)
        if not isinstance(body, dict):
            raise ValueError("an event's data is not a JSON object")  # noqa: TRY004 - callers handle bad data as ValueError
        return body


def parse(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """The events in a stream of lines (without their line endings)."""
    last_id, event, data = "", "", list[str]()
    for line in lines:
        if not line:
            if data:
                yield ServerEvent(last_id, event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id" and "\0" not in value:
            last_id = value  # the last id persists across events, as in a browser
