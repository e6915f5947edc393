"""``vidq dlq ls|replay|purge``: dead letters, on the broker (see ``vidq.deadletters``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from vidq import views
from vidq.errors import ExitCode, UsageProblem, VidqError
from vidq.options import JsonOutput
from vidq.session import session

app = typer.Typer(
    help="Dead-letter queues (on the broker: needs VIDQ_AMQP_URL, from the environment or .env).",
    no_args_is_help=True,
)

Queue = Annotated[
    str, typer.Argument(metavar="QUEUE", help="A work queue (vidq.transcode.720p) or its .dlq.")
]


@app.command("ls")
def list_dead_letters(
    ctx: typer.Context,
    queue: Annotated[
        str | None, typer.Argument(metavar="QUEUE", help="Show this queue's dead letters.")
    ] = None,
    as_json: JsonOutput = False,
) -> None:
    """List every dead-letter queue with its depth, or the dead letters of one queue."""
    from vidq import deadletters  # noqa: PLC0415 - aio-pika loads only for the dlq commands

    s = session(ctx)
    if queue is None:
        rows = asyncio.run(deadletters.depths())
        table = Table("MESSAGES", "QUEUE", box=None, pad_edge=False)
        for row in rows:
            table.add_row(str(row["messages"]), row["queue"], style="red" if row["messages"] else "")
    else:
        rows = asyncio.run(deadletters.letters(queue))
        table = Table("ID", "TYPE", "REASON", "ATTEMPTS", "WHEN", "ERROR", box=None, pad_edge=False)
        for row in rows:
            table.add_row(
                row["message_id"],
                row["type"],
                row["reason"],
                str(row["attempts"]),
                row["dead_at"],
                row["error"],
            )
    if as_json:
        views.emit_json({"data": rows})
    elif rows:
        s.out.print(table)
    else:
        s.err.print(f"no dead letters in {queue}")


@app.command("replay")
def replay(
    ctx: typer.Context,
    queue: Queue,
    message_id: Annotated[str | None, typer.Option("--id", help="Only the message with this id.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every dead letter of the queue.")] = False,
) -> None:
    """Send dead letters back to their work queue, with a fresh attempt count."""
    if every == (message_id is not None):
        raise UsageProblem("say which: --id MESSAGE_ID or --all")
    from vidq import deadletters  # noqa: PLC0415 - as above

    done = asyncio.run(deadletters.replay(queue, None if every else message_id))
    if message_id is not None and not done:
        raise VidqError(f"not found: no dead letter {message_id!r} in {queue}", ExitCode.NOT_FOUND)
    session(ctx).out.print(f"replayed {done} message(s) to {queue.removesuffix('.dlq')}")


@app.command("purge")
def purge(
    ctx: typer.Context,
    queue: Queue,
    yes: Annotated[bool, typer.Option("--yes", help="Yes, drop them for good.")] = False,
) -> None:
    """Delete the dead letters of a queue for good."""
    if not yes:
        raise UsageProblem("purging deletes the dead letters for good; add --yes")
    from vidq import deadletters  # noqa: PLC0415 - as above

    purged = asyncio.run(deadletters.purge(queue))
    session(ctx).out.print(f"purged {purged} message(s) from {queue.removesuffix('.dlq')}.dlq")
