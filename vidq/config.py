"""Where the CLI finds the gateway and its API key.

Each value comes from the first of: the command-line option (``--url``, ``--api-key``), the
environment (``VIDQ_URL``, ``VIDQ_API_KEY``), the config file, the default. The config file is
``--config PATH``, else ``$VIDQ_CONFIG``, else ``${XDG_CONFIG_HOME:-~/.config}/vidq/config.toml``::

    url = "http://127.0.0.1:8000"
    api_key = "vidq_…"

A missing default file is fine; a file named explicitly must exist.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidq.errors import UsageProblem

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class Config:
    url: str
    api_key: str | None
    source: Path | None  # the config file that was read, if any


def default_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base) / "vidq" / "config.toml"


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise UsageProblem(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise UsageProblem(f"cannot read config file {path}: {exc.strerror}") from exc


def _text(table: dict[str, Any], key: str, path: Path) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageProblem(f"config file {path}: {key} must be a string")
    return value


def resolve(
    *,
    url: str | None = None,
    api_key: str | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """The configuration for one run: options, then environment, then config file, then default."""
    env = os.environ if environ is None else environ
    named = config_file or (Path(env["VIDQ_CONFIG"]) if env.get("VIDQ_CONFIG") else None)
    path = named or default_path(env)
    found = named is not None or path.is_file()
    table = _read(path) if found else {}
    return Config(
        url=(url or env.get("VIDQ_URL") or _text(table, "url", path) or DEFAULT_URL).rstrip("/"),
        api_key=api_key or env.get("VIDQ_API_KEY") or _text(table, "api_key", path),
        source=path if found else None,
    )
