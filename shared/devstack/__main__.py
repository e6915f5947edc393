"""``python -m shared.devstack``: bootstrap, start the whole stack, print where it is, wait.

Ctrl-C (or SIGTERM) stops every process it started, gracefully, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlparse

from shared.bootstrap import bootstrap
from shared.devstack.stack import Stack
from shared.settings import AdminSettings

log = logging.getLogger("devstack")


class DevstackSettings(AdminSettings):
    smtp_url: str = "smtp://127.0.0.1:1025"


async def run() -> int:
    settings = DevstackSettings()
    await bootstrap(settings)
    smtp = urlparse(settings.smtp_url)
    env = dict(os.environ)
    env.setdefault("VIDQ_LOG_FORMAT", "text")
    stack = Stack(
        env=env,
        cwd=Path.cwd(),
        service_env={
            service: {"VIDQ_AMQP_URL": url} for service, url in settings.service_amqp_urls().items()
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        mail_dir = Path("var/mail")
        await stack.spawn(
            "mailsink",
            [
                sys.executable,
                "-m",
                "shared.devstack.mailsink",
                "--port",
                str(smtp.port or 1025),
                "--dir",
                str(mail_dir),
            ],
        )
        await stack.start_all()
        url = str(settings.public_url).rstrip("/")
        await stack.wait_ready(url)
        key = await stack.create_key("dev")
        admin = urlparse(str(settings.broker_admin_url))
        banner = f"""
  vidq is running.
    gateway      {url}        (OpenAPI: {url}/docs)
    API key      {key}
    management   http://{admin.hostname}:{admin.port or 15672}/   (user {admin.username}, password in .env)
    mail         {mail_dir}/*.eml
  Try:
    curl -H "Authorization: Bearer {key}" -F file=@tests/data/bigbuckbunny.mp4 {url}/v1/videos
  Ctrl-C stops everything.
"""
        sys.stdout.write(banner)
        sys.stdout.flush()
        waiter = asyncio.create_task(stop.wait())
        watchers = {asyncio.create_task(p.proc.wait()): name for name, p in stack.processes.items()}
        done, _ = await asyncio.wait({waiter, *watchers}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in watchers:
                log.error("%s exited unexpectedly; stopping the stack", watchers[task])
                return 1
        return 0
    finally:
        await stack.stop_all()


def main() -> None:
    argparse.ArgumentParser(
        prog="python -m shared.devstack",
        description="make run: bootstrap the broker and database, start every vidq service and a mail "
        "sink, print the URL and an API key, and stay in the foreground; Ctrl-C stops everything.",
        epilog="Configured by VIDQ_* environment variables and ./.env (deploy/local/setup.sh writes it).",
    ).parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack %(message)s")
    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
