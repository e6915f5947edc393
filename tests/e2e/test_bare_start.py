"""The services started bare, as SPEC describes them and as an operator without our scripts would.

One administrator broker user (``guest`` on a fresh RabbitMQ) and a vhost that does not exist
yet, a database that does not exist yet (its role may create it), and only the variables SPEC
names: no ``python -m shared.bootstrap``, no per-service users, no ``.env`` (the services run in
a folder of their own), no gateway port (it is the public URL's). Every service declares what
it needs at start (SPEC, "Services"), so the whole job is done and the dead-letter paths exist.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from shared.devstack.stack import Stack
from shared.ladder import RUNGS
from shared.messaging.management import Management
from shared.messaging.topology import EXCHANGES, transcode_queue_name
from tests.e2e.harness import WebhookReceiver, serve, smtp_server, until
from tests.media import make_clip
from tests.realdeps import (
    ADMIN_URL,
    BASE_DB_URL,
    amqp_url_for,
    drop_database,
    free_port,
    unique,
    with_database,
)


@pytest.fixture
async def missing_database() -> AsyncIterator[str]:
    """The URL of a database that does not exist: the first service to start creates it."""
    name = unique("vidq_bare_")
    try:
        yield with_database(BASE_DB_URL, name)
    finally:
        await drop_database(name)


async def _open_mailed_links_without_a_key(mailbox: Any, *, expected: int) -> None:
    """The mail's links are signed: they open in a browser, which has no API key."""
    await until(lambda: mailbox.messages, timeout=30)
    mail: EmailMessage = mailbox.messages[0]
    text = mail.get_body(("plain",))
    assert text is not None
    links = re.findall(r"https?://\S+signature=\S+", text.get_content())
    assert len(links) == expected
    async with httpx.AsyncClient() as browser:
        for link in links:
            opened = await browser.get(link)
            assert opened.status_code == 200, (link, opened.text)
            assert opened.headers["content-type"] in ("video/mp4", "image/jpeg")


async def _a_kept_development_key_is_reused_and_a_refused_one_replaced(
    stack: Stack, url: str, kept: Path
) -> str:
    """make run's development key (``var/dev-api-key``): the same across restarts. Returns it."""
    kept.parent.mkdir()
    kept.write_text("vidq_of-another-database\n")
    dev, new = await stack.dev_key(url, kept)
    assert new
    assert dev.startswith("vidq_")
    assert kept.read_text() == dev + "\n"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert await stack.dev_key(url, kept) == (dev, False)  # reused
    return dev


async def test_services_started_bare_declare_what_they_need_and_do_the_whole_job(
    tmp_path: Path, missing_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("VIDQ_")]:
        monkeypatch.delenv(name)  # only what this test gives the services
    port, smtp_port, hook_port = free_port(), free_port(), free_port()
    clip = make_clip(tmp_path / "clip.mp4", width=320, height=240, duration=1.0)
    receiver = WebhookReceiver()
    vhost = unique("vidq-bare-")  # not there yet: the first service creates it
    amqp_url = amqp_url_for(vhost)
    try:
        env = {
            "VIDQ_AMQP_URL": amqp_url,
            "VIDQ_DATABASE_URL": missing_database,
            "VIDQ_STORAGE_DIR": str(tmp_path / "storage"),
            "VIDQ_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "VIDQ_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "VIDQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "VIDQ_TRANSCODER_PRESET": "ultrafast",
        }
        work = tmp_path / "cwd"
        work.mkdir()
        stack = Stack(env=env, cwd=work, log_dir=tmp_path / "logs")
        with smtp_server(smtp_port) as mailbox:
            async with serve(receiver, hook_port):
                try:
                    # in the reverse of the usual order: the workers first, on a vhost with nothing
                    for service in ("notifier", "thumbnailer", "transcoder", "gateway"):
                        await stack.start_service(service)
                    await stack.wait_ready(env["VIDQ_PUBLIC_URL"])
                    key = await _a_kept_development_key_is_reused_and_a_refused_one_replaced(
                        stack, env["VIDQ_PUBLIC_URL"], tmp_path / "var" / "dev-api-key"
                    )
                    headers = {"authorization": f"Bearer {key}"}
                    async with httpx.AsyncClient(base_url=env["VIDQ_PUBLIC_URL"], headers=headers) as client:
                        hook = await client.post(
                            "/v1/webhooks",
                            json={"url": f"http://localhost:{hook_port}/hooks", "events": ["video.*"]},
                        )
                        assert hook.status_code == 201, hook.text
                        with clip.open("rb") as body:
                            upload = await client.post(
                                "/v1/videos",
                                files={"file": ("clip.mp4", body, "video/mp4")},
                                data={"notify_email": "bare@example.com"},
                            )
                        assert upload.status_code == 202, upload.text
                        video_id = upload.json()["id"]
                        await until(lambda: receiver.at("/hooks", "video.ready"), timeout=90)
                        video = (await client.get(f"/v1/videos/{video_id}")).json()
                        await _open_mailed_links_without_a_key(mailbox, expected=3)  # 2 MP4s, 1 JPEG
                finally:
                    await stack.stop_all(grace=10)
                    for log in sorted((tmp_path / "logs").glob("*.log")):
                        print(f"--- {log.name}\n" + "".join(log.read_text().splitlines(True)[-10:]))  # noqa: T201

        assert video["status"] == "ready"
        assert [r["quality"] for r in video["renditions"]] == ["240p", "144p"]
        [ready] = receiver.at("/hooks", "video.ready")
        secret = hook.json()["secret"]
        Webhook(secret).verify(ready.body, ready.headers)
        assert "bare@example.com" in mailbox.messages[0]["To"]

        async with Management(ADMIN_URL) as api:
            names = {x["name"] for x in (await api.client.get(f"/api/exchanges/{quote(vhost)}")).json()}
            queues = {x["name"] for x in (await api.client.get(f"/api/queues/{quote(vhost)}")).json()}
            policies = {x["name"] for x in (await api.client.get(f"/api/policies/{quote(vhost)}")).json()}
        assert {spec.name for spec in EXCHANGES} <= names
        for rung in RUNGS:  # every quality's queue and its dead-letter queue, and its policy
            assert {transcode_queue_name(rung), f"{transcode_queue_name(rung)}.dlq"} <= queues
            assert transcode_queue_name(rung) in policies
        assert "vidq.dlq" in policies
    finally:
        async with Management(ADMIN_URL) as api:
            await api.delete_vhost(vhost)
