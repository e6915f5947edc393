"""``python -m shared.devstack``: bootstrap, start the whole stack, print where it is, wait.

Ctrl-C (or SIGTERM) stops every process it started, gracefully, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from shared.bootstrap import bootstrap
from shared.devstack.stack import Stack
from shared.errors import StartupError
from shared.runtime import EX_CONFIG
from shared.settings import AdminSettings, gateway_listen_port

log = logging.getLogger("devstack")


#: The workers that serve Prometheus metrics on a port of their own (the gateway: ``/metrics``).
METRICS_WORKERS = ("transcoder", "thumbnailer", "notifier")


class DevstackSettings(AdminSettings):
    smtp_url: str = "smtp://127.0.0.1:1025"
    gateway_host: str = "127.0.0.1"
    gateway_port: int | None = None


def _taken(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` already (another stack, another program)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _ports_taken(settings: DevstackSettings) -> list[str]:
    smtp = urlparse(settings.smtp_url)
    wanted = [
        (
            "the gateway's",
            settings.gateway_host,
            gateway_listen_port(str(settings.public_url), settings.gateway_port),
        ),
        ("the mail sink's", smtp.hostname or "127.0.0.1", smtp.port or 1025),
    ]
    if settings.metrics_port:
        wanted += [
            (f"the {worker}'s metrics", settings.metrics_host, settings.metrics_port + n)
            for n, worker in enumerate(METRICS_WORKERS)
        ]
    return [f"{what} port {host}:{port}" for what, host, port in wanted if _taken(host, port)]


async def run() -> int:
    settings = DevstackSettings()
    taken = _ports_taken(settings)
    if taken:
        log.error(
            "cannot start: taken already (another vidq stack, or another program): %s. Stop it, "
            "or run this stack on other ports, e.g. VIDQ_PUBLIC_URL=http://127.0.0.1:8001 "
            "VIDQ_SMTP_URL=smtp://127.0.0.1:1026 make run (README, 'Two stacks on one machine')",
            ", ".join(taken),
        )
        return 1
    await bootstrap(settings)
    smtp = urlparse(settings.smtp_url)
    env = dict(os.environ)
    env.setdefault("VIDQ_LOG_FORMAT", "text")
    service_env: dict[str, dict[str, str]] = {
        service: {"VIDQ_AMQP_URL": url} for service, url in settings.service_amqp_urls().items()
    }
    metrics: dict[str, int] = {}
    if settings.metrics_port:  # one port each: the same port for all would stop all but one
        for n, worker in enumerate(METRICS_WORKERS):
            metrics[worker] = settings.metrics_port + n
            service_env.setdefault(worker, {})["VIDQ_METRICS_PORT"] = str(metrics[worker])
    stack = Stack(env=env, cwd=Path.cwd(), service_env=service_env)
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
        key, new = await stack.dev_key(url, Path("var/dev-api-key"))
        admin = urlparse(str(settings.broker_admin_url))
        metrics_lines = "".join(
            f"\n    metrics      http://{settings.metrics_host}:{port}/metrics   ({worker})"
            for worker, port in metrics.items()
        )
        banner = f"""
  vidq is running.
    gateway      {url}        (OpenAPI: {url}/docs)
    API key      {key}   ({"new, kept in" if new else "from"} var/dev-api-key)
    management   http://{admin.hostname}:{admin.port or 15672}/   (user {admin.username}, password in .env)
    mail         {mail_dir}/*.eml{metrics_lines}
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
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per management API call
    try:
        sys.exit(asyncio.run(run()))
    except StartupError as exc:
        log.critical("cannot start: %s", exc)
        sys.exit(EX_CONFIG)


if __name__ == "__main__":
    main()
