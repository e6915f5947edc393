"""A local SMTP server that keeps every message as an ``.eml`` file (aiosmtpd).

``python -m shared.devstack.mailsink --port 1025 --dir var/mail`` — what ``make run`` uses
instead of a real mail server, so the emails vidq sends can be read.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import logging
import signal
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("mailsink")


class SaveToDirectory:
    """aiosmtpd handler: one file per message, named by arrival time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802, ARG002
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        path = self.directory / f"{time.time_ns()}.eml"
        path.write_bytes(content)
        message = email.message_from_bytes(content, policy=email.policy.default)
        log.info("mail to %s: %s (%s)", ", ".join(envelope.rcpt_tos), message["subject"], path)
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.devstack.mailsink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s mailsink %(message)s")
    # aiosmtpd logs every SMTP command of every session at INFO; one line per mail is enough here
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(SaveToDirectory(args.dir), hostname=args.host, port=args.port)
    controller.start()
    log.info("SMTP on %s:%d, saving to %s", args.host, args.port, args.dir)

    async def wait() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    try:
        asyncio.run(wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
