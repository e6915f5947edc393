"""What the webhook and live-stream benchmarks share.

A real video of a client of the stack (uploaded through the REST API and processed to
``ready``), public events cloned from that video's own events (so they are exactly what the
gateway publishes, with fresh ids), publishing them on ``vidq.events`` the way the gateway's
outbox relay does (``shared.events.to_message``, publisher confirms), and CPU-seconds per
component of the machine: each vidq service, the broker, the database, the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import psutil

from bench.common import CpuMeter, machine_cpu_seconds
from shared.events import EVENT_CLASSES, to_message
from shared.ids import new_id
from shared.messaging.codec import OutgoingMessage
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import EVENTS
from tests.e2e.harness import read_sse
from tests.e2e.stack import Running
from tests.media import make_clip


def small_clip(folder: Path) -> Path:
    """A 1 s 256x144 clip with audio: one rung, processed in about a second."""
    return make_clip(folder / "bench-144p.mp4", width=256, height=144, duration=1)


async def upload(api: httpx.AsyncClient, clip: Path) -> str:
    """Upload ``clip`` (144p only); returns the video id."""
    with clip.open("rb") as f:
        response = await api.post("/v1/videos", files={"file": (clip.name, f)}, data={"qualities": "144p"})
    response.raise_for_status()
    return str(response.json()["id"])


async def ready_video(api: httpx.AsyncClient, clip: Path) -> tuple[str, list[dict[str, Any]]]:
    """Upload ``clip`` and follow its event stream to ``video.ready``; the video and its events."""
    video_id = await upload(api, clip)
    events = await read_sse(api, f"/v1/videos/{video_id}/events")
    if not events or events[-1].event != "video.ready":
        raise RuntimeError(f"video {video_id} did not become ready: {[e.event for e in events]}")
    return video_id, [e.data for e in events]


def clone_events(
    template: Mapping[str, Any], count: int, *, first_sequence: int = 1
) -> list[OutgoingMessage]:
    """``count`` messages of the template's type and data, each a new event (id, sequence, time)."""
    cls = EVENT_CLASSES[str(template["type"])]
    now = datetime.now(UTC)
    return [
        to_message(
            cls.model_validate(
                {**template, "id": new_id("evt"), "sequence": first_sequence + i, "timestamp": now}
            )
        )
        for i in range(count)
    ]


@contextlib.asynccontextmanager
async def event_publisher(running: Running) -> AsyncIterator[AmqpPublisher]:
    """A confirmed publisher on the stack's vhost (the relay's own kind of channel)."""
    connection = await aio_pika.connect_robust(running.env["VIDQ_AMQP_URL"])
    try:
        yield await AmqpPublisher.open(connection)
    finally:
        await connection.close()


async def publish_burst(
    publisher: AmqpPublisher, messages: Sequence[OutgoingMessage], *, window: int = 256
) -> dict[str, float]:
    """Publish as fast as confirms allow (``window`` in flight); ``time.time()`` of each publish."""
    sent: dict[str, float] = {}
    slots = asyncio.Semaphore(window)
    tasks: list[asyncio.Task[None]] = []

    async def one(message: OutgoingMessage) -> None:
        try:
            await publisher.publish(EVENTS, message.type, message)
        finally:
            slots.release()

    for message in messages:
        await slots.acquire()
        sent[message.message_id] = time.time()
        tasks.append(asyncio.create_task(one(message)))
    await asyncio.gather(*tasks)
    return sent


async def publish_paced(
    messages: Sequence[OutgoingMessage],
    rate: float,
    send: Callable[[OutgoingMessage], Coroutine[Any, Any, None]],
) -> dict[str, float]:
    """Send one message every ``1/rate`` s on a fixed schedule; ``time.time()`` of each send.

    A late send does not shift the schedule (no coordinated omission): the next one is due at
    its own time.
    """
    sent: dict[str, float] = {}
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, message in enumerate(messages):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[message.message_id] = time.time()
        tasks.append(asyncio.create_task(send(message)))
    await asyncio.gather(*tasks)
    return sent


@contextlib.asynccontextmanager
async def profiled(pid: int, output: Path | None, *, rate: int = 250) -> AsyncIterator[None]:
    """Sample ``pid`` with py-spy while the block runs (collapsed stacks to ``output``).

    ``--nonblocking`` reads the target without pausing it, so the profile barely slows it.
    """
    if output is None:
        yield
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--rate", str(rate)]
    argv += ["--format", "raw", "--output", str(output), "--nonblocking"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        await proc.wait()


def _process_named(name: str) -> int | None:
    """The PID of the oldest process called ``name`` (the broker's VM, the postmaster)."""
    found = [p for p in psutil.process_iter(["name", "create_time"]) if p.info["name"] == name]
    return min(found, key=lambda p: p.info["create_time"]).pid if found else None


@dataclass
class Components:
    """CPU-seconds of each part of the machine over a measured interval."""

    meters: dict[str, CpuMeter]

    @classmethod
    def of(cls, running: Running, extra: Mapping[str, int] | None = None) -> Components:
        meters = {name: CpuMeter([p.pid]) for name, p in running.stack.processes.items()}
        for name, pid in (("rabbitmq", _process_named("beam.smp")), ("postgres", _process_named("postgres"))):
            if pid is not None:
                meters[name] = CpuMeter([pid])
        for name, pid in (extra or {}).items():
            meters[name] = CpuMeter([pid])
        return cls(meters)

    def read(self) -> dict[str, float]:
        readings = {name: meter.read() for name, meter in self.meters.items()}
        # this process alone: the stack and the receiver are its children, counted above
        own = psutil.Process().cpu_times()
        readings["bench"] = own.user + own.system
        readings["machine"] = machine_cpu_seconds()
        return readings


def cpu_used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU-seconds per component between two readings, plus ``other`` (the rest of the machine)."""
    used = {name: after[name] - before[name] for name in after}
    used["other"] = used["machine"] - sum(v for k, v in used.items() if k != "machine")
    return used


def cpu_rows(used: Mapping[str, float], per: int, names: Iterable[str]) -> list[list[object]]:
    """Table rows: component, CPU-seconds, CPU-ms per unit of work."""
    return [[name, used.get(name, 0.0), 1000 * used.get(name, 0.0) / max(per, 1)] for name in names]
