"""A world the reliability scenarios may break: its own broker node and its own PostgreSQL.

Both are private (separate ports and data folders, stopped by PID), so restarting them never
disturbs anything else on the machine. The stack runs with a short lease (a dead transcoder's
jobs are taken over within seconds), short retry delays and encodes slowed to real time, so a
fault can be injected *during* the work. Each scenario prints one line of figures, collected in
``test-artifacts/reliability.txt`` (see ``docs/reliability.md``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from shared.bootstrap import bootstrap
from shared.devstack.stack import Stack
from shared.settings import AdminSettings
from tests import brokernode, pgnode
from tests.brokernode import BrokerNode
from tests.e2e.harness import Mailbox, WebhookReceiver, serve, smtp_server
from tests.media import make_clip
from tests.pgnode import PgNode
from tests.realdeps import free_port, unique
from tests.settings import ROOT, make

SERVICES = ("gateway", "transcoder", "thumbnailer", "notifier")
ARTIFACTS = ROOT / "test-artifacts"

_why_not = brokernode.available() or pgnode.available()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=str(_why_not))


@pytest.fixture(scope="session")
def figures() -> Iterator[list[str]]:
    """Each scenario's line of figures, written out at the end of the session."""
    lines: list[str] = []
    yield lines
    if lines:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "reliability.txt").write_text("\n".join(lines) + "\n")


@dataclass
class World:
    broker: BrokerNode
    database: PgNode
    stack: Stack
    env: dict[str, str]
    url: str
    receiver: WebhookReceiver
    receiver_url: str
    mailbox: Mailbox
    storage: Path
    api_key: str = ""
    clips: dict[str, Path] = field(default_factory=dict)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"authorization": f"Bearer {self.api_key}"}, timeout=30
        )

    async def start(self, service: str, name: str | None = None, **env: str) -> None:
        await self.stack.start_service(service, name=name, extra_env=env)

    async def upload(self, api: httpx.AsyncClient, clip: Path, **fields: str) -> str:
        with clip.open("rb") as f:
            response = await api.post("/v1/videos", files={"file": (clip.name, f)}, data=fields)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[World]:
    broker = BrokerNode.in_temp_dir(
        free_port(), f"vidq-rel-{unique('')}@localhost", management_port=free_port()
    )
    database = PgNode.create(free_port())
    broker.start()
    database.start()
    port, smtp_port, hook_port = free_port(), free_port(), free_port()
    storage = tmp_path_factory.mktemp("storage")
    amqp = f"amqp://vidq:{unique('pw')}@127.0.0.1:{broker.amqp_port}/vidq"
    env = {
        "VIDQ_AMQP_URL": amqp,
        "VIDQ_DATABASE_URL": database.url,
        "VIDQ_STORAGE_DIR": str(storage),
        "VIDQ_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "VIDQ_GATEWAY_PORT": str(port),
        "VIDQ_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "VIDQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "VIDQ_RETRY_WEBHOOK": "1s,2s,3s,5s,10s",
        "VIDQ_RETRY_TRANSCODE": "1s,2s",
        "VIDQ_RETRY_THUMBNAIL": "1s,2s",
        "VIDQ_RETRY_PROJECTION": "1s,2s,5s",
        "VIDQ_RETRY_EMAIL": "1s,2s",
        "VIDQ_TRANSCODER_PRESET": "ultrafast",
        "VIDQ_TRANSCODER_LEASE_S": "4",
        "VIDQ_TRANSCODER_REAPER_INTERVAL_S": "1",
        "VIDQ_SHUTDOWN_GRACE_S": "3",
        "VIDQ_LOG_FORMAT": "json",
        **getattr(request.module, "STACK_ENV", {}),
    }
    # Every service runs as its own broker user, with only its rights.
    own_urls = {
        service: f"amqp://vidq-{service}:{unique('pw')}@127.0.0.1:{broker.amqp_port}/vidq"
        for service in ("gateway", "transcoder", "thumbnailer", "notifier")
    }
    settings = make(
        AdminSettings,
        **{f"{service}_amqp_url": url for service, url in own_urls.items()},
        amqp_url=amqp,
        database_url=database.url,
        broker_admin_url=broker.admin_url,
        retry_webhook=(1, 2, 3, 5, 10),
        retry_transcode=(1, 2),
        retry_thumbnail=(1, 2),
        retry_projection=(1, 2, 5),
        retry_email=(1, 2),
    )
    await bootstrap(settings)
    receiver = WebhookReceiver()
    stack = Stack(
        env=env,
        cwd=tmp_path_factory.mktemp("cwd"),  # not the checkout: its .env must not reach the services
        log_dir=tmp_path_factory.mktemp("logs"),
        service_env={service: {"VIDQ_AMQP_URL": url} for service, url in own_urls.items()},
    )
    try:
        with smtp_server(smtp_port) as mailbox:
            async with serve(receiver, hook_port):
                await stack.start_all()
                await stack.wait_ready(env["VIDQ_PUBLIC_URL"])
                world = World(
                    broker,
                    database,
                    stack,
                    env,
                    env["VIDQ_PUBLIC_URL"],
                    receiver,
                    f"http://127.0.0.1:{hook_port}",
                    mailbox,
                    storage,
                )
                world.api_key = await stack.create_key("reliability")
                yield world
    finally:
        await stack.stop_all(grace=10)
        for process_log in sorted((stack.log_dir or Path()).glob("*.log")):
            sys.stderr.write(f"--- {process_log.name} (last lines)\n")
            sys.stderr.write("".join(process_log.read_text().splitlines(keepends=True)[-40:]))
        broker.stop()
        database.stop()
        broker.remove()
        database.remove()


def clip(world: World, tmp: Path, seconds: float = 3.0) -> Path:
    """A small clip (320x180, silent pattern + tone) of ``seconds``, made once per length."""
    key = f"{seconds:g}"
    if key not in world.clips:
        world.clips[key] = make_clip(tmp / f"clip-{key}s.mp4", width=320, height=180, duration=seconds)
    return world.clips[key]


@dataclass
class Tally:
    videos: int
    lost: int
    stuck: int
    duplicate_ready: int
    gaps: int
    duplicate_jobs: int
    seconds: float
    #: For each video that did not end ready: its status, events and jobs (what a failure shows).
    detail: list[str] = field(default_factory=list)

    def line(self, scenario: str) -> str:
        return (
            f"{scenario}: {self.videos} videos, {self.lost} lost, {self.stuck} stuck, "
            f"{self.duplicate_ready} duplicate ready events, recovered in {self.seconds:.0f} s"
        )

    @property
    def perfect(self) -> bool:
        return not (self.lost or self.stuck or self.duplicate_ready or self.gaps or self.duplicate_jobs)


async def wait_and_count(world: World, video_ids: list[str], *, since: float, timeout: float = 120) -> Tally:
    """Wait for every video to end (ready or failed), then count what went wrong."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    async with world.client() as api:
        while time.monotonic() < deadline:
            for video_id in video_ids:
                if statuses.get(video_id) not in ("ready", "failed"):
                    response = await api.get(f"/v1/videos/{video_id}")
                    statuses[video_id] = (
                        response.json()["status"] if response.status_code == 200 else "missing"
                    )
            if all(s in ("ready", "failed") for s in statuses.values()):
                break
            await asyncio.sleep(0.25)
    seconds = time.monotonic() - since
    conn = await asyncpg.connect(world.database.url)
    try:
        events = await conn.fetch(
            """SELECT video_id, sequence, type FROM video_events
               WHERE video_id = ANY($1::text[]) ORDER BY video_id, sequence""",
            video_ids,
        )
        jobs = await conn.fetch(
            """SELECT video_id, quality, count(*) FILTER (WHERE state = 'done') AS done FROM transcode_jobs
               WHERE video_id = ANY($1::text[]) GROUP BY video_id, quality""",
            video_ids,
        )
        unfinished = [v for v in video_ids if statuses.get(v) != "ready"]
        job_rows = await conn.fetch(
            """SELECT video_id, quality, state, attempt, lease_owner FROM transcode_jobs
               WHERE video_id = ANY($1::text[]) ORDER BY video_id, created_at""",
            unfinished,
        )
        unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    by_video: dict[str, list[Any]] = {}
    for row in events:
        by_video.setdefault(row["video_id"], []).append(row)
    gaps = sum(
        1 for rows in by_video.values() if [r["sequence"] for r in rows] != list(range(1, len(rows) + 1))
    )
    duplicate_ready = sum(
        max(0, [r["type"] for r in rows].count("video.ready") - 1) for rows in by_video.values()
    )
    return Tally(
        videos=len(video_ids),
        lost=sum(1 for s in statuses.values() if s != "ready"),
        stuck=sum(1 for s in statuses.values() if s not in ("ready", "failed")),
        duplicate_ready=duplicate_ready,
        gaps=gaps,
        duplicate_jobs=sum(1 for j in jobs if j["done"] > 1),
        seconds=seconds,
        detail=[
            f"{v}: {statuses.get(v)}; events {[r['type'] for r in by_video.get(v, [])]}; jobs "
            f"{[tuple(j.values())[1:] for j in job_rows if j['video_id'] == v]}"
            for v in unfinished
        ]
        + ([f"outbox rows not yet published: {unsent}"] if unfinished else []),
    )


def webhook_ready_ids(world: World, path: str) -> dict[str, set[str]]:
    """Per video, the distinct ``webhook-id``s of the video.ready deliveries that arrived."""
    seen: dict[str, set[str]] = {}
    for request in world.receiver.at(path, "video.ready"):
        seen.setdefault(json.loads(request.body)["data"]["id"], set()).add(request.headers["webhook-id"])
    return seen
