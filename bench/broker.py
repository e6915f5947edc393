"""The broker hop alone: the floor under every figure of ``bench.webhooks``.

An event reaches the notifier through the broker: the publisher's confirmed publish, the queue,
the consumer's delivery and acknowledgement. This script measures that hop with nothing else
around it (no vidq service, no database, no HTTP), with messages of an event's size and
properties, for a quorum queue (what ``vidq.notifier.webhooks`` is) and, for comparison, a
durable classic queue, in a vhost of its own:

* ``paced``: 2,000 messages at 200/s, latency from the publish call to the consumer's handler
  (p50 / p99), and the broker's CPU per message;
* ``burst``: 10,000 messages as fast as confirms allow (256 in flight, as ``bench.webhooks``
  publishes), consumed with prefetch 200 and an acknowledgement each, in another process:
  messages per second from the first publish to the last acknowledgement, and CPU per message
  of the publisher, the consumer and the broker.

Run: ``.venv/bin/python -m bench.broker [--only paced,burst] [--types quorum,classic]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aio_pika
import psutil
import uvloop

from bench.common import exclusive, percentile, report, table
from tests.realdeps import scratch_vhost
from tests.settings import ROOT

#: An event's size on the wire (a rendition.completed with its video resource is about 1.5 kB).
BODY_BYTES = 1500


def body(stamp: float) -> bytes:
    return f"{stamp:.6f}".ljust(20).encode() + b"x" * (BODY_BYTES - 20)


def message(stamp: float, n: int) -> aio_pika.Message:
    return aio_pika.Message(
        body(stamp),
        message_id=f"evt_{n}",
        type="rendition.completed",
        correlation_id="vid_bench",
        app_id="gateway",
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def broker_cpu() -> float:
    beam = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "beam.smp"]
    t = min(beam, key=lambda p: p.create_time()).cpu_times()
    return float(t.user + t.system)


def own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


async def declare(url: str, kind: str) -> str:
    name = f"bench.{kind}"
    connection = await aio_pika.connect(url)
    async with connection, connection.channel() as channel:
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": kind})
    return name


async def paced(url: str, queue_name: str, count: int, rate: float) -> dict[str, Any]:
    """Publisher and consumer in this process; latency per message, broker CPU per message."""
    latencies: list[float] = []
    done = asyncio.Event()
    consumer_connection = await aio_pika.connect(url)
    publisher_connection = await aio_pika.connect(url)
    async with consumer_connection, publisher_connection:
        channel = await consumer_connection.channel()
        await channel.set_qos(prefetch_count=200)
        queue = await channel.get_queue(queue_name)

        async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            latencies.append(1000 * (time.time() - float(incoming.body[:20])))
            await incoming.ack()
            if len(latencies) == count:
                done.set()

        await queue.consume(on_message)
        publisher = await publisher_connection.channel(publisher_confirms=True)
        before = broker_cpu()
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for n in range(count):
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = message(time.time(), n)
            tasks.append(asyncio.create_task(publisher.default_exchange.publish(sent, queue_name)))
        await asyncio.gather(*tasks)
        await asyncio.wait_for(done.wait(), 60)
        broker = broker_cpu() - before
    return {
        "messages": count,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "broker_cpu_ms": 1000 * broker / count,
    }


CONSUMER = """
import asyncio, json, sys, time, aio_pika, psutil, uvloop
url, queue_name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def main():
    done, seen = asyncio.Event(), 0
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=200)
    queue = await channel.get_queue(queue_name)
    async def on_message(incoming):
        nonlocal seen
        await incoming.ack()
        seen += 1
        if seen == count:
            done.set()
    await queue.consume(on_message)
    print("ready", flush=True)
    await done.wait()
    end = time.time()
    t = psutil.Process().cpu_times()
    print(json.dumps({"end": end, "cpu": t.user + t.system}), flush=True)
    await connection.close()
uvloop.run(main())
"""


async def burst(url: str, queue_name: str, count: int) -> dict[str, Any]:
    """Publisher here, consumer in a process of its own (as the notifier is)."""
    consumer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CONSUMER, url, queue_name, str(count), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert consumer.stdout is not None  # noqa: S101 - piped above
    await consumer.stdout.readline()  # "ready"
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        slots = asyncio.Semaphore(256)
        own, broker, started = own_cpu(), broker_cpu(), time.time()

        async def one(n: int) -> None:
            try:
                await channel.default_exchange.publish(message(time.time(), n), queue_name)
            finally:
                slots.release()

        tasks = []
        for n in range(count):
            await slots.acquire()
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        published = own_cpu() - own
        line = await asyncio.wait_for(consumer.stdout.readline(), 120)
        broker = broker_cpu() - broker
    await consumer.wait()
    result = json.loads(line)
    return {
        "messages": count,
        "per_s": count / (result["end"] - started),
        "publisher_cpu_ms": 1000 * published / count,
        "consumer_cpu_ms": 1000 * result["cpu"] / count,
        "broker_cpu_ms": 1000 * broker / count,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with scratch_vhost("vidq-bench-broker-") as url:
        for kind in args.types:
            queue_name = await declare(url, kind)
            if "paced" in args.only:
                results[f"paced {kind}"] = await paced(url, queue_name, args.paced_events, args.rate)
            if "burst" in args.only:
                results[f"burst {kind}"] = await burst(url, queue_name, args.events)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=10_000, help="messages of the burst")
    parser.add_argument("--paced-events", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second of the paced run")
    parser.add_argument("--only", type=lambda s: s.split(","), default=["paced", "burst"])
    parser.add_argument("--types", type=lambda s: s.split(","), default=["quorum", "classic"])
    args = parser.parse_args()
    with exclusive("broker"):
        results = uvloop.run(run(args))
    rows = [
        [
            name,
            r["messages"],
            r.get("per_s", ""),
            r.get("p50_ms", ""),
            r.get("p99_ms", ""),
            r.get("publisher_cpu_ms", ""),
            r.get("consumer_cpu_ms", ""),
            r["broker_cpu_ms"],
        ]
        for name, r in results.items()
    ]
    header = [
        "run",
        "messages",
        "msg/s",
        "p50 ms",
        "p99 ms",
        "publisher ms/msg",
        "consumer ms/msg",
        "broker ms/msg",
    ]
    print(table(rows, header))
    report("broker", {"args": vars(args), "runs": results})


if __name__ == "__main__":
    main()
