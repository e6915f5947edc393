"""Settings for tests: never read from ``.env`` or the environment, only from arguments.

``machine()`` is the exception: the credentials of this machine's broker and database, from the
project's ``.env`` (written by ``deploy/local/setup.sh``) and any ``VIDQ_*`` variables set when
the test session started, for integration and end-to-end tests to reach the real servers.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
S = TypeVar("S", bound=ServiceSettings)
_AT_START = {k: v for k, v in os.environ.items() if k.startswith("VIDQ_")}


def make(cls: type[S], **values: Any) -> S:
    """``cls`` with exactly these values (and the class defaults)."""
    return cls(_env_file=None, **values)


@cache
def machine() -> dict[str, str]:
    """``VIDQ_*`` values of this machine: ``.env`` first, then the session's environment."""
    values: dict[str, str] = {}
    env_file = ROOT / ".env"
    if env_file.is_file():
        for raw in env_file.read_text().splitlines():
            line = raw.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    values.update(_AT_START)
    return values


def machine_value(name: str, default: str) -> str:
    return machine().get(name, default)
