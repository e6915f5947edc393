"""A small HTTP site on 127.0.0.1 for tests: the source of an import, another origin's page.

Each path answers a fixed status, headers and body; every request is recorded. It runs in a
thread of the test's process and is stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: (status, headers, body)
Answer = tuple[int, Mapping[str, str], bytes]
NOT_FOUND: Answer = (404, {}, b"no such file")


@dataclass
class Site:
    url: str
    #: (path, headers) of each request, in order; header names in lower case
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@contextlib.contextmanager
def site(
    routes: Mapping[str, Answer],
    *,
    fallback: Answer = NOT_FOUND,
    hold: Mapping[str, threading.Event] = MappingProxyType({}),
) -> Iterator[Site]:
    """Serve ``routes`` (a path → its answer; any other path → ``fallback``).

    A path in ``hold`` sends its status and headers, then waits for its event (at most 30 s)
    before the body: a download in progress for as long as a test needs one.
    """
    served = Site("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            status, headers, body = routes.get(self.path, fallback)
            self.send_response(status)
            for name, value in {"content-length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.path in hold:
                self.wfile.flush()
                hold[self.path].wait(timeout=30)
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
