"""Live stream latency (issue 6): from an event being published to an SSE client receiving it.

Clients follow ``GET /v1/videos/{id}/events`` of a video that is still processing (the stack's
transcoder is stopped, so the video stays open). Each client stamps each event with
``time.time()`` as its ``data:`` line arrives; latency is that minus the publish instant. Two
"published" instants, each honest for a different question, in two runs:

* ``event``: the public event is published on ``vidq.events`` (what the gateway's outbox relay
  does, with confirms), stamped just before the publish call. This is the live-feed hop alone:
  broker → the gateway's exclusive live queue → the stream's inbox → the SSE response.
* ``report``: a worker's report is published on ``vidq.results``, exactly as a transcoder
  reports progress (``shared.reports.publish_report``), stamped just before that call. This is
  the whole way a client's progress bar sees: projection (one transaction that numbers and
  records the event and queues it in the outbox) → ``NOTIFY`` → outbox relay → ``vidq.events`` →
  live feed → SSE. The target (p99 < 50 ms) is judged on this one.

Events are paced (default 1,000 at 100/s, to 10 clients). Run:
``.venv/bin/python -m bench.sse [--events N] [--rate R] [--clients C] [--only event,report]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop

from bench.common import RESULTS, bench_stack, exclusive, percentile, report, table
from bench.pipeline import (
    Components,
    clone_events,
    cpu_rows,
    cpu_used,
    event_publisher,
    profiled,
    publish_paced,
    small_clip,
    upload,
)
from shared.ids import new_id
from shared.messaging.codec import OutgoingMessage, outgoing
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import EVENTS
from shared.messaging.topology import RESULTS as RESULTS_EXCHANGE
from shared.reports import RenditionProgressReport
from tests.e2e.stack import Running

#: How long after the last publish the clients may still be waiting for events.
DRAIN_S = 15.0


@dataclass
class OpenVideo:
    """A video still processing: its id, newest sequence, one rendition and its current job."""

    id: str
    last_sequence: int
    rendition: dict[str, Any]
    job_id: str


@dataclass
class Client:
    """One SSE reader: ``time.time()`` of each event it received, by event id."""

    received: dict[str, float] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


async def open_video(running: Running, api: httpx.AsyncClient, clip: Path) -> OpenVideo:
    """Upload ``clip`` and wait until its thumbnail is done; its rendition stays queued."""
    video_id = await upload(api, clip)
    deadline = time.monotonic() + 60
    while True:
        video = (await api.get(f"/v1/videos/{video_id}")).json()
        if video["thumbnail"]["status"] == "ready":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the thumbnail of {video_id} was not ready within 60 s")
        await asyncio.sleep(0.2)
    conn = await asyncpg.connect(running.env["VIDQ_DATABASE_URL"])
    try:
        last = await conn.fetchval("SELECT last_sequence FROM videos WHERE id = $1", video_id)
        job = await conn.fetchval("SELECT job_id FROM renditions WHERE video_id = $1", video_id)
    finally:
        await conn.close()
    return OpenVideo(video_id, int(last), video["renditions"][0], str(job))


async def follow(api: httpx.AsyncClient, video: OpenVideo, client: Client) -> None:
    """Read the video's live stream (after its newest event), stamping every event's arrival."""
    url = f"/v1/videos/{video.id}/events?after={video.last_sequence}"
    async with api.stream("GET", url, timeout=None) as response:
        response.raise_for_status()
        client.ready.set()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                received = time.time()
                client.received[json.loads(line[5:])["id"]] = received


async def drained(clients: list[Client], count: int) -> None:
    """Wait until every client has ``count`` events, or ``DRAIN_S`` passed."""
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        if all(len(c.received) >= count for c in clients):
            return
        await asyncio.sleep(0.05)


def public_events(video: OpenVideo, count: int) -> list[OutgoingMessage]:
    """``rendition.progress`` events of the video, numbered after its newest one."""
    template = {
        "id": new_id("evt"),
        "type": "rendition.progress",
        "timestamp": datetime.now(UTC),
        "sequence": 1,
        "data": {**video.rendition, "status": "processing"},
    }
    return clone_events(template, count, first_sequence=video.last_sequence + 1)


def progress_reports(video: OpenVideo, count: int) -> list[OutgoingMessage]:
    """What a transcoder publishes while encoding the video's rendition, ``count`` times."""
    messages = []
    for i in range(count):
        item = RenditionProgressReport(
            id=new_id("evt"),
            timestamp=datetime.now(UTC),
            video_id=video.id,
            job_id=video.job_id,
            quality=video.rendition["quality"],
            progress=i % 99,
            speed=1.0,
        )
        messages.append(
            outgoing(item, message_id=item.id, type=item.type, correlation_id=video.id, app_id="transcoder")
        )
    return messages


def sender(publisher: AmqpPublisher, exchange: str) -> Callable[[OutgoingMessage], Coroutine[Any, Any, None]]:
    async def send(message: OutgoingMessage) -> None:
        await publisher.publish(exchange, message.type, message)

    return send


async def measure(
    running: Running, api: httpx.AsyncClient, mode: str, args: argparse.Namespace, clip: Path
) -> dict[str, Any]:
    video = await open_video(running, api, clip)
    if mode == "event":
        messages, exchange = public_events(video, args.events), EVENTS
    else:
        messages, exchange = progress_reports(video, args.events), RESULTS_EXCHANGE
    clients = [Client() for _ in range(args.clients)]
    readers = [asyncio.create_task(follow(api, video, c)) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 30)
    components = Components.of(running)
    before = components.read()
    profile = RESULTS / f"{args.name}-{mode}.gateway.txt" if args.profile else None
    async with (
        event_publisher(running) as publisher,
        profiled(running.stack.processes["gateway"].pid, profile),
    ):
        sent = await publish_paced(messages, args.rate, sender(publisher, exchange))
        await drained(clients, len(sent))
    cpu = cpu_used(before, components.read())
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return figures(sent, clients, cpu, args)


def figures(
    sent: Mapping[str, float], clients: list[Client], cpu: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    latencies = [1000 * (t - sent[i]) for c in clients for i, t in c.received.items() if i in sent]
    return {
        "events": len(sent),
        "rate": args.rate,
        "clients": len(clients),
        "expected": len(sent) * len(clients),
        "received": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "cpu_s": cpu,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vidq-bench-sse-") as tmp:
        clip = small_clip(Path(tmp))
        async with bench_stack() as running:
            # No encodes: every video stays processing, so its stream stays open.
            await running.stack.stop("transcoder")
            async with running.client() as api:
                for mode in args.only:
                    results[mode] = await measure(running, api, mode, args, clip)
                    print_run(mode, results[mode])
    return {"runs": results}


def print_run(mode: str, f: Mapping[str, Any]) -> None:
    print(
        f"\n{mode}: {f['events']:,} events at {f['rate']:g}/s to {f['clients']} clients;"
        f" received {f['received']:,} of {f['expected']:,}"
    )
    names = ["gateway", "notifier", "thumbnailer", "rabbitmq", "postgres", "bench", "other", "machine"]
    print(table(cpu_rows(f["cpu_s"], f["events"], names), ["component", "CPU s", "CPU ms/event"]))


def summary(results: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [
        [mode, f["received"], f["p50_ms"], f["p90_ms"], f["p99_ms"], f["max_ms"]]
        for mode, f in results.items()
    ]
    return table(rows, ["published on", "received", "p50 ms", "p90 ms", "p99 ms", "max ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=100.0, help="events per second")
    parser.add_argument("--clients", type=int, default=10, help="SSE clients following the video")
    parser.add_argument("--only", type=lambda s: s.split(","), default=["event", "report"])
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway (var/bench/NAME-RUN…)")
    parser.add_argument("--name", default="sse", help="name of the result file (var/bench/NAME.json)")
    args = parser.parse_args()
    with exclusive(args.name):
        results = uvloop.run(run(args))
    print("\n" + summary(results["runs"]))
    report(args.name, {"args": vars(args), **results})


if __name__ == "__main__":
    main()
