"""What the root command gathers for every command: options, the API client, the consoles.

The root callback stores a :class:`Session` in typer's context; commands take it with
:func:`session`. Unit tests pass their own (``CliRunner().invoke(app, args, obj=Session(
transport=httpx.MockTransport(handler)))``) to reach a fake API.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import typer
from rich.console import Console

from vidq.client import VidqClient
from vidq.config import Config, default_path, resolve
from vidq.errors import NoCredentials

#: Columns of output that is not a terminal (a pipe, a file): wide, so that tables are never
#: squeezed into 80 columns and lines never broken for a reader that is a program.
PIPED_WIDTH = 1000


def _width() -> int | None:
    """``None`` (the terminal's own width) on a terminal; :data:`PIPED_WIDTH` otherwise."""
    return None if sys.stdout.isatty() else PIPED_WIDTH


@dataclass
class Session:
    url: str | None = None
    api_key: str | None = None
    config_file: Path | None = None
    transport: httpx.BaseTransport | None = None
    pause: Callable[[float], None] = time.sleep
    out: Console = field(default_factory=lambda: Console(highlight=False, width=_width()))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))

    def config(self) -> Config:
        return resolve(url=self.url, api_key=self.api_key, config_file=self.config_file)

    def client(self) -> VidqClient:
        config = self.config()
        if not config.api_key:
            where = config.source or self.config_file or default_path(os.environ)
            raise NoCredentials(f"no API key: set VIDQ_API_KEY, pass --api-key, or put api_key in {where}")
        return VidqClient(config.url, config.api_key, transport=self.transport, pause=self.pause)


def session(ctx: typer.Context) -> Session:
    """The session of this invocation (made by the root callback)."""
    return ctx.ensure_object(Session)
