"""Markers by folder, and a clean environment for every test.

``tests/unit`` is marked ``unit`` (the default selection: fast, no network, no subprocess),
``tests/integration`` ``integration``, ``tests/e2e`` ``e2e``. Every test starts without
``VIDQ_*`` variables; settings are built with keyword arguments (``tests/settings.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_FOLDER_MARKS = {"unit": "unit", "integration": "integration", "e2e": "e2e", "reliability": "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(ROOT / "tests").parts
        mark = _FOLDER_MARKS.get(parts[0]) if parts else None
        if mark:
            item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("VIDQ_"):
            monkeypatch.delenv(key)
