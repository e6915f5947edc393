"""``vidq keys create | ls | revoke``: API keys, through the gateway's own command.

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
from vidq.errors import ExitCode, Unreachable, VidqError
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


def _gateway_keys(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m gateway keys ARGS``; a failure is one line (and the exit status it means)."""
    argv = [sys.executable, "-m", "gateway", "keys", *args]
    what = f"keys {args[0]}"
    try:
        run = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=_TIMEOUT_S)  # noqa: S603 - our own interpreter, argv list
    except subprocess.TimeoutExpired as exc:
        raise Unreachable(f"unavailable: {what} took over {_TIMEOUT_S} s (is the database up?)") from exc
    if run.returncode != 0:
        gist = _last_words(run.stderr)
        if "No module named gateway" in gist:
            raise VidqError(f"{what} needs the gateway installed next to the CLI (python -m gateway)")
        if any(sign.lower() in gist.lower() for sign in _UNREACHABLE):
            raise Unreachable(f"unavailable: {what} cannot reach the database: {gist}")
        gist = gist.removeprefix("cannot start: ")
        if gist.startswith(("no API key", "no client")):
            raise VidqError(f"not found: {gist}", ExitCode.NOT_FOUND)
        raise VidqError(f"{what} failed: {gist}")
    return run


def _say_where(ctx: typer.Context, run: subprocess.CompletedProcess[str]) -> None:
    """The gateway's first word: which database it acted on (a wrong .env shows here)."""
    where = next((line for line in run.stderr.splitlines() if line.startswith("database ")), None)
    if where:
        session(ctx).err.print(where, style="dim", markup=False)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", "-n", help="Who the key is for.")],
    client: Annotated[
        str | None, typer.Option("--client", help="An existing client's id: a second key (rotation).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print name, key and client id as JSON.")] = False,
) -> None:
    """Create a client and print its new API key (shown only this once); --client: another key."""
    run = _gateway_keys("create", "--name", name, *(["--client", client] if client else []))
    _say_where(ctx, run)
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


@app.command("ls")
def ls(
    ctx: typer.Context,
    revoked: Annotated[bool, typer.Option("--all", help="Revoked keys too.")] = False,
) -> None:
    """List API keys: ids, prefixes and clients (never the keys themselves)."""
    run = _gateway_keys("ls", *(["--all"] if revoked else []))
    _say_where(ctx, run)
    typer.echo(run.stdout, nl=False)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key's id (key_…) or its prefix, as 'vidq keys ls' shows.")],
) -> None:
    """Revoke an API key: refused from the next request on."""
    run = _gateway_keys("revoke", key)
    _say_where(ctx, run)
    said = run.stderr.strip().splitlines()
    session(ctx).err.print(said[-1] if said else f"key {key} revoked", markup=False)
