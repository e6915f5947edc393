"""``vidq``: the command line of the vidq API (typer + rich + httpx)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from vidq import __version__
from vidq.commands import dlq, keys, upload, uploads, videos, webhooks
from vidq.errors import VidqError
from vidq.session import Session

EPILOG = """\
Exit status: 0 ok; 1 the operation failed (a video ended failed or canceled, a webhook test was
not answered 2xx, the API refused the request); 2 usage error; 3 not found; 4 no or wrong API
key; 5 server or network unavailable (5xx, connection refused, timeout).

Configuration: --url and --api-key, else VIDQ_URL and VIDQ_API_KEY, else url and api_key in
${XDG_CONFIG_HOME:-~/.config}/vidq/config.toml (or --config / VIDQ_CONFIG); the URL defaults to
http://127.0.0.1:8000.
"""


class _Cli(TyperGroup):
    """The root group: a command's failure becomes one line on stderr and its exit status."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context, not public
        try:
            return super().invoke(ctx)
        except VidqError as exc:
            typer.echo(f"vidq: {exc}", err=True)
            raise typer.Exit(int(exc.exit_code)) from None


app = typer.Typer(
    cls=_Cli,
    name="vidq",
    help="Upload videos to vidq, follow their renditions live, download them; manage webhooks.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vidq {__version__}")
        raise typer.Exit


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", metavar="URL", help="The gateway's base URL.")] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", metavar="KEY", help="Your API key (VIDQ_API_KEY keeps it out of ps)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", metavar="FILE", help="The config file to read (TOML).")
    ] = None,
    version: Annotated[  # noqa: ARG001 - handled by its eager callback
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Upload videos to vidq, follow their renditions live, download them; manage webhooks."""
    session = ctx.ensure_object(Session)
    session.url = url or session.url
    session.api_key = api_key or session.api_key
    session.config_file = config or session.config_file


app.command("upload")(upload.upload)
app.command("watch")(upload.watch)
app.command("ls")(videos.list_videos)
app.command("show")(videos.show)
app.command("download")(videos.download)
app.command("retry")(videos.retry)
app.command("rm")(videos.remove)
app.add_typer(uploads.app, name="uploads")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(keys.app, name="keys")
app.add_typer(dlq.app, name="dlq")


def main() -> None:
    app(prog_name="vidq")


if __name__ == "__main__":
    main()
