"""One whole vidq stack as real processes, for end-to-end tests and benchmarks.

``running_stack`` gives a stack its own vhost (policies and topology from the bootstrap), its
own database, storage folder and gateway port, an SMTP server and a webhook receiver in the
calling process, and every service its own broker user. Everything it started is stopped by PID
and removed at the end.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.bootstrap import bootstrap
from shared.devstack.stack import SERVICES, Stack
from shared.messaging.management import Management
from shared.settings import AdminSettings
from tests.e2e.harness import Mailbox, WebhookReceiver, serve, smtp_server
from tests.realdeps import ADMIN_URL, amqp_url_for, create_database, drop_database, free_port, unique
from tests.settings import make

#: Short retry delays, so that a test sees a retry happen within seconds.
TEST_ENV = {
    "VIDQ_RETRY_WEBHOOK": "1s,2s,3s",
    "VIDQ_RETRY_TRANSCODE": "1s,2s",
    "VIDQ_RETRY_THUMBNAIL": "1s,2s",
    "VIDQ_RETRY_PROJECTION": "1s,2s",
    "VIDQ_RETRY_EMAIL": "1s,2s",
    "VIDQ_TRANSCODER_PRESET": "ultrafast",
    "VIDQ_TRANSCODER_CONCURRENCY": "2",
    "VIDQ_SHUTDOWN_GRACE_S": "5",
}


@dataclass
class Running:
    stack: Stack
    url: str
    api_key: str
    receiver: WebhookReceiver
    receiver_url: str
    mailbox: Mailbox
    env: dict[str, str]
    storage: Path

    def client(self, api_key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"authorization": f"Bearer {api_key or self.api_key}"}, timeout=60.0
        )

    async def new_key(self, name: str = "e2e") -> str:
        return await self.stack.create_key(name)


@asynccontextmanager
async def running_stack(
    workdir: Path,
    env_overrides: Mapping[str, str] | None = None,
    *,
    prefix: str = "vidq-e2e",
    service_overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> AsyncIterator[Running]:
    """Start a whole stack under ``workdir`` (storage and logs).

    ``env_overrides`` tune every service, ``service_overrides`` one (``{"notifier": {…}}``).
    """
    vhost, database = unique(f"{prefix}-"), unique(f"{prefix.replace('-', '_')}_")
    port, smtp_port, hook_port = free_port(), free_port(), free_port()
    storage, logs = workdir / "storage", workdir / "logs"
    storage.mkdir(parents=True, exist_ok=True)
    async with Management(ADMIN_URL) as api:
        await api.ensure_vhost(vhost)
        await api.grant(vhost, api.admin_user)
    database_url = await create_database(database)
    env = {
        "VIDQ_AMQP_URL": amqp_url_for(vhost),
        "VIDQ_BROKER_ADMIN_URL": ADMIN_URL,
        "VIDQ_DATABASE_URL": database_url,
        "VIDQ_STORAGE_DIR": str(storage),
        "VIDQ_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "VIDQ_GATEWAY_PORT": str(port),
        "VIDQ_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "VIDQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "VIDQ_IMPORT_ALLOW_HOSTS": "127.0.0.1",
        "VIDQ_LOG_FORMAT": "json",
        **TEST_ENV,
        **(env_overrides or {}),
    }
    # Every service runs as its own broker user, with only its rights (the bootstrap creates them).
    own_urls = {service: amqp_url_for(vhost, f"vidq-{service}-{vhost}", unique("pw")) for service in SERVICES}
    settings = make(
        AdminSettings,
        **{f"{service}_amqp_url": url for service, url in own_urls.items()},
        amqp_url=env["VIDQ_AMQP_URL"],
        database_url=database_url,
        broker_admin_url=ADMIN_URL,
        # the bootstrap declares the delay queues, so it must know the schedules the stack uses
        **{
            f"retry_{name}": env[f"VIDQ_RETRY_{name.upper()}"]
            for name in ("webhook", "transcode", "thumbnail", "projection", "email")
        },
    )
    await bootstrap(settings)
    receiver = WebhookReceiver()
    stack = Stack(
        env=env,
        cwd=workdir,  # not the checkout: a developer's .env there must not reach the services
        log_dir=logs,
        service_env={
            service: {"VIDQ_AMQP_URL": url, **(service_overrides or {}).get(service, {})}
            for service, url in own_urls.items()
        },
    )
    try:
        with smtp_server(smtp_port) as mailbox:
            async with serve(receiver, hook_port):
                try:
                    await stack.start_all()
                    url = env["VIDQ_PUBLIC_URL"]
                    await stack.wait_ready(url)
                    running = Running(
                        stack, url, "", receiver, f"http://127.0.0.1:{hook_port}", mailbox, env, storage
                    )
                    running.api_key = await running.new_key()
                    yield running
                finally:
                    await stack.stop_all(grace=10)
                    for process_log in sorted(logs.glob("*.log")):
                        sys.stderr.write(f"--- {process_log.name} (last lines)\n")
                        sys.stderr.write("".join(process_log.read_text().splitlines(keepends=True)[-15:]))
    finally:
        async with Management(ADMIN_URL) as api:
            await api.delete_vhost(vhost)
            for service in own_urls:
                await api.delete_user(f"vidq-{service}-{vhost}")
        await drop_database(database)
