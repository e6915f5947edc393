"""``vidq uploads create``: a URL that takes one upload from a browser, without the API key."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vidq import views
from vidq.errors import UsageProblem
from vidq.options import JsonOutput
from vidq.session import session

app = typer.Typer(help="Direct uploads: URLs a web page uploads to without your key.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    qualities: Annotated[
        str | None,
        typer.Option("--qualities", "-q", help="Rungs to make, e.g. 720p,360p (default: all that fit)."),
    ] = None,
    notify_email: Annotated[
        str | None, typer.Option("--notify-email", help="Who gets an email when it is done.")
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option("--callback-url", help="Receives the video's events, signed.")
    ] = None,
    metadata: Annotated[str | None, typer.Option("--metadata", help="A JSON object, echoed back.")] = None,
    timeout: Annotated[
        int, typer.Option("--timeout", help="Seconds the URL takes an upload (60 to 604800).")
    ] = 3600,
    cors_origin: Annotated[
        str | None, typer.Option("--cors-origin", help='The page\'s origin (https://app.example.com) or "*".')
    ] = None,
    as_json: JsonOutput = False,
) -> None:
    """Make a direct-upload URL: a page POSTs one file there (multipart, field "file")."""
    options: dict[str, object] = {"timeout_s": timeout}
    if qualities:
        options["qualities"] = [q.strip() for q in qualities.split(",") if q.strip()]
    if metadata:
        try:
            options["metadata"] = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise UsageProblem(f"--metadata is not JSON: {exc.msg}") from None
    for name, value in (
        ("notify_email", notify_email),
        ("callback_url", callback_url),
        ("cors_origin", cors_origin),
    ):
        if value:
            options[name] = value
    s = session(ctx)
    with s.client() as api:
        upload = api.create_upload(options)
    if as_json:
        views.emit_json(upload)
        return
    typer.echo(upload["url"])
    s.err.print(f"{upload['id']}: takes one file until {upload['expires_at']} (curl -F file=@video.mp4 URL)")
