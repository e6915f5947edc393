"""Options that several commands share, so they read and behave the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print the API's JSON on stdout (and nothing else there).")
]
