"""``python -m shared.ops``: dead letters for humans. List, replay, purge.

::

    python -m shared.ops dlq ls                          # every DLQ with its depth
    python -m shared.ops dlq ls vidq.notifier.deliveries # its dead letters: id, type, reason, attempts
    python -m shared.ops dlq replay vidq.transcode.720p --id job_…   # one message back to its queue
    python -m shared.ops dlq replay vidq.transcode.720p --all        # all of them
    python -m shared.ops dlq purge vidq.transcode.720p --yes

A queue may be named as the work queue or as its ``….dlq``. Replay publishes each message to
``vidq.requeue`` with the work queue's name as routing key (publisher confirms), with our
dead-letter headers and the attempt count removed — a fresh start — and a ``vidq-replayed-at``
header (a consumer runs a replayed message again even if it settled the work before: a webhook
delivery given up on, a transcode job that failed), and only then acknowledges it in the DLQ.
Listing looks without taking: messages go back to the DLQ in their order.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from shared.messaging.codec import ATTEMPT_HEADER, OutgoingMessage
from shared.messaging.consumer import (
    ATTEMPTS_HEADER,
    DEAD_AT_HEADER,
    ERROR_HEADER,
    LAST_ERROR_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    REPLAYED_HEADER,
)
from shared.messaging.prepare import BrokerRefused, VhostClosed
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import REQUEUE, build
from shared.settings import ServiceSettings

_OURS = {
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    DEAD_AT_HEADER,
    ERROR_HEADER,
    LAST_ERROR_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    REPLAYED_HEADER,
}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str
    type: str
    reason: str
    error: str
    attempts: int | str
    dead_at: str
    queue: str


def work_queue(name: str) -> str:
    return name.removesuffix(".dlq")


def describe(message: AbstractIncomingMessage, queue: str) -> DeadLetter:
    headers: dict[str, Any] = dict(message.headers or {})
    reason = str(headers.get(REASON_HEADER) or "")
    if not reason:
        # Dead-lettered by the broker itself (delivery limit, or our DLQ publish failed).
        deaths = headers.get("x-death") or []
        reason = f"broker: {deaths[0].get('reason')}" if deaths else "unknown"
    return DeadLetter(
        message_id=message.message_id or "",
        type=message.type or "",
        reason=reason,
        error=str(headers.get(ERROR_HEADER) or ""),
        attempts=headers.get(ATTEMPTS_HEADER) or headers.get("x-delivery-count") or "?",
        dead_at=str(headers.get(DEAD_AT_HEADER) or ""),
        queue=str(headers.get(QUEUE_HEADER) or queue),
    )


#: At most this many dead letters are handled per command.
LIMIT = 10_000


async def _dlq(channel: AbstractChannel, queue: str) -> aio_pika.abc.AbstractQueue:
    return await channel.declare_queue(f"{work_queue(queue)}.dlq", passive=True)


async def depth(channel: AbstractChannel, queue: str) -> int:
    declared = (await _dlq(channel, queue)).declaration_result
    return int(declared.message_count or 0) if declared else 0


async def _take_all(queue: aio_pika.abc.AbstractQueue) -> list[AbstractIncomingMessage]:
    """Hold every message of ``queue`` unacknowledged (so none is seen twice)."""
    taken: list[AbstractIncomingMessage] = []
    while len(taken) < LIMIT:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        taken.append(message)
    return taken


async def _give_back(messages: list[AbstractIncomingMessage]) -> None:
    # A quorum queue redelivers returned messages in the order they come back: keep theirs.
    for message in messages:
        await message.nack(requeue=True)


async def list_dead_letters(channel: AbstractChannel, queue: str) -> list[DeadLetter]:
    """Every dead letter of ``queue``, oldest first, left in place."""
    taken = await _take_all(await _dlq(channel, queue))
    try:
        return [describe(m, work_queue(queue)) for m in taken]
    finally:
        await _give_back(taken)


async def replay(
    channel: AbstractChannel, publisher: AmqpPublisher, queue: str, message_id: str | None
) -> int:
    """Send dead letters (one by id, or all) back to their work queue; returns how many."""
    target = work_queue(queue)
    taken = await _take_all(await _dlq(channel, queue))
    done: set[int] = set()
    try:
        for index, message in enumerate(taken):
            if message_id is not None and message.message_id != message_id:
                continue
            fresh = {
                k: v for k, v in (message.headers or {}).items() if k not in _OURS and not k.startswith("x-")
            }
            fresh[REPLAYED_HEADER] = datetime.now(UTC).isoformat()
            await publisher.publish(
                REQUEUE,
                target,
                OutgoingMessage(
                    body=message.body,
                    message_id=message.message_id or "",
                    type=message.type or "",
                    correlation_id=message.correlation_id,
                    app_id=message.app_id,
                    headers=fresh,
                ),
            )
            await message.ack()
            done.add(index)
    finally:
        await _give_back([m for i, m in enumerate(taken) if i not in done])
    return len(done)


async def _run(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    connection = await aio_pika.connect(str(settings.amqp_url))
    async with connection:
        channel = await connection.channel()
        if args.action == "ls" and args.queue is None:
            for work in build(settings).work_queues:
                sys.stdout.write(f"{await depth(channel, work.name):>8}  {work.dlq}\n")
            return 0
        if args.action == "ls":
            letters = await list_dead_letters(channel, args.queue)
            for d in letters:
                sys.stdout.write(
                    f"{d.message_id}\t{d.type}\t{d.reason}\tattempts={d.attempts}\t{d.dead_at}\t{d.error}\n"
                )
            sys.stdout.write(f"{len(letters)} dead letter(s) in {work_queue(args.queue)}.dlq\n")
            return 0
        if args.action == "replay":
            if not args.all and not args.id:
                sys.stderr.write("say which: --id MESSAGE_ID or --all\n")
                return 2
            publisher = await AmqpPublisher.open(connection)
            done = await replay(channel, publisher, args.queue, None if args.all else args.id)
            if not done and not args.all:
                sys.stderr.write(
                    f"no dead letter {args.id!r} in {work_queue(args.queue)}.dlq; "
                    f"`python -m shared.ops dlq ls {work_queue(args.queue)}` lists them\n"
                )
                return 3
            sys.stdout.write(f"replayed {done} message(s) to {work_queue(args.queue)}\n")
            return 0
        if not args.yes:
            sys.stderr.write("purging deletes the dead letters for good; add --yes\n")
            return 2
        purged = await (await _dlq(channel, args.queue)).purge()
        sys.stdout.write(f"purged {purged.message_count} message(s)\n")
        return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.ops", description="vidq operations")
    dlq = parser.add_subparsers(dest="area", required=True).add_parser("dlq", help="dead-letter queues")
    actions = dlq.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("ls", help="list DLQs, or the dead letters of one")
    ls.add_argument("queue", nargs="?", help="work queue (or its .dlq)")
    again = actions.add_parser("replay", help="send dead letters back to their queue")
    again.add_argument("queue")
    again.add_argument("--id", help="only the message with this message_id")
    again.add_argument("--all", action="store_true", help="every dead letter of the queue")
    purge = actions.add_parser("purge", help="delete the dead letters of a queue")
    purge.add_argument("queue")
    purge.add_argument("--yes", action="store_true")
    args = parser.parse_args(argv)
    for library in ("aiormq", "aio_pika"):  # their failures are told below, once, in a line
        logging.getLogger(library).setLevel(logging.CRITICAL)
    try:
        code = asyncio.run(_run(args))
    except aio_pika.exceptions.ChannelNotFoundEntity:
        queue = getattr(args, "queue", None) or ""
        sys.stderr.write(
            f"no queue {work_queue(queue)}.dlq on this broker's vhost; "
            "`python -m shared.ops dlq ls` lists the dead-letter queues\n"
        )
        code = 3
    except (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.AuthenticationError):
        sys.stderr.write(f"{BrokerRefused(str(ServiceSettings().amqp_url))}\n")
        code = 77  # EX_NOPERM
    except aiormq.exceptions.InvalidFrameError as exc:
        if "Connection.Close" not in str(exc):
            raise
        where = ServiceSettings().amqp_url
        sys.stderr.write(f"{VhostClosed(str(where))} (the broker at {where.host}:{where.port})\n")
        code = 77  # EX_NOPERM
    except (aio_pika.exceptions.AMQPConnectionError, ConnectionError, socket.gaierror) as exc:
        # the URL without its password: the reason is the broker's or the network's
        where = ServiceSettings().amqp_url
        sys.stderr.write(
            f"cannot reach the broker at {where.host}:{where.port} (vhost {where.path}): {exc}\n"
        )
        code = 69  # EX_UNAVAILABLE
    sys.exit(code)


if __name__ == "__main__":
    main()
