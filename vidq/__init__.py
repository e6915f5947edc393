"""The ``vidq`` command line: upload, watch, download and manage webhooks over the REST API."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vidq")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
