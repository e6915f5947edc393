"""Every CLI test runs with an API key in the environment and no config file of the user's."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def cli_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIDQ_API_KEY", "vidq_test")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("VIDQ_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
