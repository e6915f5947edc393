"""``vidq keys create``: a new client and its API key, made by the gateway's own command.

Keys live in the gateway's database, which the CLI never touches itself (it is a client of the
API and imports no service): it runs ``python -m gateway keys create`` with the same
environment, so it works where the gateway's settings are (``VIDQ_DATABASE_URL`` or ``.env``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Annotated

import typer

from vidq import views
from vidq.errors import Unreachable, VidqError
from vidq.session import session

app = typer.Typer(help="API keys (run where the gateway's database settings are).", no_args_is_help=True)

_CLIENT_LINE = re.compile(r"^client (\S+) \(.*\); callback_url events are signed with (\S+)$")
_UNREACHABLE = ("Connection refused", "Connect call failed", "could not connect", "timeout", "not reachable")
_TIMEOUT_S = 120


def _last_words(stderr: str) -> str:
    """The gist of a failed run: the last line, or the message of a JSON log line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    try:
        return str(json.loads(last).get("message", last))
    except (ValueError, AttributeError):
        return last


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", "-n", help="Who the key is for.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print name, key and client id as JSON.")] = False,
) -> None:
    """Create a client and print its new API key (shown only this once)."""
    argv = [sys.executable, "-m", "gateway", "keys", "create", "--name", name]
    try:
        run = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=_TIMEOUT_S)  # noqa: S603 - our own interpreter, argv list
    except subprocess.TimeoutExpired as exc:
        raise Unreachable(f"unavailable: keys create took over {_TIMEOUT_S} s (is the database up?)") from exc
    if run.returncode != 0:
        gist = _last_words(run.stderr)
        if "No module named gateway" in gist:
            raise VidqError("keys create needs the gateway installed next to the CLI (python -m gateway)")
        if any(sign.lower() in gist.lower() for sign in _UNREACHABLE):
            raise Unreachable(f"unavailable: keys create cannot reach the database: {gist}")
        raise VidqError(f"keys create failed: {gist}")
    key = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    found = next(filter(None, (_CLIENT_LINE.match(line) for line in run.stderr.splitlines())), None)
    if as_json:
        views.emit_json(
            {
                "name": name,
                "api_key": key,
                "client_id": found.group(1) if found else None,
                "callback_secret": found.group(2) if found else None,
            }
        )
        return
    typer.echo(key)
    if found:
        session(ctx).err.print(
            f"client {found.group(1)} ({name}); callback_url events are signed with {found.group(2)}"
        )
