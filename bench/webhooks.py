"""Webhook fan-out (issue 6): signed deliveries per second, and latency from publish to receipt.

Events enter the way real ones do: public events of a real, ready video (cloned from its own
events, fresh ids) published on the ``vidq.events`` topic exchange with publisher confirms, as
the gateway's outbox relay publishes them. The notifier fans each out to the client's endpoints
(registered through ``POST /v1/webhooks``), signs and POSTs it, and keeps the delivery log. The
receiver is ``bench/receiver.py``, a hand-written HTTP/1.1 server in its own process, which
stamps each request with ``time.time()`` when it has been read; the publish instant is
``time.time()`` just before the publish call. Four runs, each with its own client and video:

* ``one``: N events (10,000) to one endpoint, published as fast as confirms allow;
* ``ten``: N/10 events (1,000) to each of 10 endpoints (N deliveries);
* ``paced``: 2,000 events at 200 events/s to one endpoint;
* ``backlog``: N events (10,000) to one endpoint, published while the notifier is stopped, then
  the notifier started: how fast vidq catches up after a deploy or an outage, with the two cores
  to itself (no publisher beside it).

Deliveries per second are counted from the first publish to the last receipt, and again to the
last delivery recorded as succeeded in the delivery log; for ``backlog``, from the first receipt
after the restart to the last (the CPU figures cover the same interval), and latencies are those
of the catch-up, not of a live hop. A sample of deliveries is verified with
the ``standardwebhooks`` library, and the log must hold every delivery as succeeded, with one
attempt each. Run: ``.venv/bin/python -m bench.webhooks [--events N] [--only one,paced]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bench.common import RESULTS, bench_stack, exclusive, parse_env, percentile, report, table
from bench.pipeline import (
    Components,
    clone_events,
    cpu_rows,
    cpu_used,
    event_publisher,
    profiled,
    publish_burst,
    publish_paced,
    ready_video,
    small_clip,
)
from gateway.settings import GatewaySettings
from shared.messaging.codec import OutgoingMessage
from shared.messaging.publisher import AmqpPublisher
from shared.messaging.topology import EVENTS
from tests.e2e.harness import Sample, scrape
from tests.e2e.stack import Running
from tests.realdeps import free_port
from tests.settings import ROOT

#: The production retry schedules (the e2e stack shortens them): a deferred delivery waits 5 s.
PRODUCTION_RETRIES = {
    "VIDQ_RETRY_WEBHOOK": "5s,5m,30m,2h,5h,10h,10h",
    "VIDQ_RETRY_PROJECTION": "1s,10s,60s",
    "VIDQ_RETRY_EMAIL": "30s,5m,30m,2h",
    "VIDQ_RETRY_TRANSCODE": "30s,5m",
    "VIDQ_RETRY_THUMBNAIL": "10s,60s,5m",
}
#: Give up waiting when no delivery arrived for this long.
STALL_S = 60.0
#: The first notifier's metrics (its delivery-log writes are read); replicas serve none.
NOTIFIER_METRICS = free_port()
#: What a notifier replica (``notifier-2``…) is started with.
REPLICA_ENV = {"VIDQ_METRICS_PORT": "0"}


@dataclass(frozen=True)
class Scenario:
    name: str
    events: int
    endpoints: int
    rate: float | None = None  # events per second; None: as fast as possible
    backlog: bool = False  # published while the notifier is stopped, then drained

    @property
    def deliveries(self) -> int:
        return self.events * self.endpoints


@dataclass
class Target:
    """A client of the stack with a ready video and its endpoints (path → secret)."""

    video_id: str
    template: dict[str, Any]
    secrets: dict[str, str]
    webhook_ids: list[str]


@dataclass
class Outcome:
    scenario: Scenario
    sent: dict[str, float]
    records: list[tuple[float, str, str]]
    samples: list[dict[str, Any]]
    log: dict[str, Any]
    cpu: dict[str, float]
    secrets: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)
    #: Deliveries made while the CPU meters ran (all of them, but for ``backlog``).
    metered_deliveries: int = 0
    #: The first notifier's own account of the run (``delivery_path``).
    delivery_path: dict[str, float] = field(default_factory=dict)


# --- the receiver process ------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    pid: int
    control: httpx.AsyncClient

    async def count(self) -> int:
        return int((await self.control.get("/_count")).text)

    async def dump(self) -> dict[str, Any]:
        data: dict[str, Any] = (await self.control.get("/_dump")).json()
        return data

    async def reset(self) -> None:
        (await self.control.post("/_reset")).raise_for_status()


@contextlib.asynccontextmanager
async def receiver_process(sample_every: int) -> AsyncIterator[Receiver]:
    """``bench/receiver.py`` in its own process, stopped (by PID) at the end."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.receiver",
        "--port",
        str(port),
        "--sample-every",
        str(sample_every),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    if proc.stdout is not None:
        await asyncio.wait_for(proc.stdout.readline(), 10)  # "listening on …"
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as control:
            yield Receiver(url, proc.pid, control)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()


# --- preparing a scenario ------------------------------------------------------------------


async def prepare(running: Running, scenario: Scenario, receiver: Receiver, clip: Path) -> Target:
    """A new client with a ready video, and ``scenario.endpoints`` endpoints at the receiver."""
    key = await running.new_key(f"bench-{scenario.name}")
    async with running.client(key) as api:
        video_id, events = await ready_video(api, clip)
        template = next(e for e in events if e["type"] == "rendition.completed")
        secrets: dict[str, str] = {}
        ids: list[str] = []
        for i in range(scenario.endpoints):
            path = f"/hook/{scenario.name}/{i}"
            response = await api.post("/v1/webhooks", json={"url": receiver.url + path, "events": ["*"]})
            response.raise_for_status()
            secrets[path] = response.json()["secret"]
            ids.append(response.json()["id"])
    await quiet(receiver)
    # The video's event stream (read above) is closed: once the gateway's live queue has been
    # unbound for nobody watching, events cost the gateway nothing, as on a gateway with no
    # streams open (with streams open it takes each event too: bench.sse measures that path).
    await asyncio.sleep(GatewaySettings.model_fields["live_unbind_after_s"].default + 0.5)
    return Target(video_id, template, secrets, ids)


async def quiet(receiver: Receiver, *, for_s: float = 1.0) -> None:
    """Wait until the receiver got nothing for ``for_s`` (the video's own events are through)."""
    count, since = await receiver.count(), time.monotonic()
    while time.monotonic() - since < for_s:
        await asyncio.sleep(0.1)
        now = await receiver.count()
        if now != count:
            count, since = now, time.monotonic()


# --- measuring -----------------------------------------------------------------------------


async def wait_for(receiver: Receiver, expected: int) -> int:
    """Wait until the receiver has ``expected`` requests, or nothing arrived for ``STALL_S``."""
    seen, last_change = 0, time.monotonic()
    while seen < expected:
        await asyncio.sleep(0.05)
        count = await receiver.count()
        if count != seen:
            seen, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            print(f"  stalled at {seen} of {expected} deliveries", file=sys.stderr)
            break
    return seen


LOG_QUERY = """
WITH ours AS (
    SELECT * FROM webhook_deliveries WHERE webhook_id = ANY($1) AND event_id = ANY($2)
)
SELECT count(*) AS deliveries,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       extract(epoch FROM max(completed_at))::float8 AS last_completed,
       (SELECT count(*) FROM webhook_attempts a JOIN ours x ON x.id = a.delivery_id) AS attempts,
       (SELECT count(*) FROM webhook_attempts a JOIN ours x ON x.id = a.delivery_id
         WHERE a.status_code = 200) AS attempts_200
FROM ours
"""


async def delivery_log(
    running: Running, webhook_ids: list[str], event_ids: list[str], expected: int
) -> dict[str, Any]:
    """The delivery log of these events to these endpoints, once it holds ``expected`` settled rows."""
    conn = await asyncpg.connect(running.env["VIDQ_DATABASE_URL"])
    try:
        deadline = time.monotonic() + 30
        while True:
            row = dict(await conn.fetchrow(LOG_QUERY, webhook_ids, event_ids) or {})
            if row["succeeded"] + row["failed"] >= expected or time.monotonic() > deadline:
                return row
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def measure(
    running: Running,
    receiver: Receiver,
    publisher: AmqpPublisher,
    scenario: Scenario,
    target: Target,
    profile: Path | None,
) -> Outcome:
    """Publish the scenario's events and wait for every delivery, with the meters running.

    A backlog is queued while the notifiers are stopped, and the meters start at its first
    delivery after their restart: neither the publishing nor their start-up is counted.
    """
    messages = clone_events(target.template, scenario.events)
    await receiver.reset()
    sent: dict[str, float] = {}
    already = 0
    if scenario.backlog:
        sent = await publish_while_stopped(running, publisher, messages)
        already = await first_receipt(receiver)
    components = Components.of(running, {"receiver": receiver.pid})
    before = components.read()
    # a restarted notifier counts from zero, its first batches included
    counted = {} if scenario.backlog else await notifier_metrics()
    async with profiled(running.stack.processes["notifier"].pid, profile):
        if not scenario.backlog:
            sent = await publish(publisher, messages, scenario.rate)
        await wait_for(receiver, scenario.deliveries)
        log = await delivery_log(running, target.webhook_ids, list(sent), scenario.deliveries)
    cpu = cpu_used(before, components.read())
    writes = delivery_path(counted, await notifier_metrics())
    dump = await receiver.dump()
    # only this run's events (an endpoint may also get the tail of its video's own events)
    records = [(float(t), str(p), str(i)) for t, p, i in dump["records"] if i in sent]
    return Outcome(
        scenario,
        sent,
        records,
        dump["samples"],
        log,
        cpu,
        target.secrets,
        metered_deliveries=scenario.deliveries - already,
        delivery_path=writes,
    )


async def publish(
    publisher: AmqpPublisher, messages: Sequence[OutgoingMessage], rate: float | None
) -> dict[str, float]:
    """Publish the events as fast as confirms allow, or ``rate`` a second; when each went."""
    if rate is None:
        return await publish_burst(publisher, messages)

    async def send(message: OutgoingMessage) -> None:
        await publisher.publish(EVENTS, message.type, message)

    return await publish_paced(messages, rate, send)


async def publish_while_stopped(
    running: Running, publisher: AmqpPublisher, messages: Sequence[OutgoingMessage]
) -> dict[str, float]:
    """Stop the notifiers, publish the events (they wait in the queue), start the notifiers again."""
    notifiers = sorted(name for name in running.stack.processes if name.startswith("notifier"))
    for name in notifiers:
        await running.stack.stop(name)
    sent = await publish_burst(publisher, messages)
    for name in notifiers:
        await running.stack.start_service(
            "notifier", name=name, extra_env=REPLICA_ENV if name != "notifier" else None
        )
    return sent


async def notifier_metrics() -> dict[Sample, float]:
    """The first notifier's metrics (its ``/metrics``)."""
    return await scrape(f"http://127.0.0.1:{NOTIFIER_METRICS}/metrics")


def delivery_path(before: Mapping[Sample, float], after: Mapping[Sample, float]) -> dict[str, float]:
    """Means over the run of each shared write's time (ms) and size.

    (Not the event lag: the benchmark stamps its events when it makes them, before publishing.)
    """

    def delta(name: str, write: str) -> float:
        sample = (name, (("write", write),))
        return after.get(sample, 0.0) - before.get(sample, 0.0)

    means: dict[str, float] = {}
    for write in ("claim", "record"):
        batches = delta("vidq_delivery_log_write_rows_count", write)
        if batches:
            means[f"{write}_ms"] = 1000 * delta("vidq_delivery_log_write_seconds_sum", write) / batches
            means[f"{write}_size"] = delta("vidq_delivery_log_write_rows_sum", write) / batches
    return means


async def first_receipt(receiver: Receiver) -> int:
    """Poll the receiver (another process) until it has a request; its count then."""
    deadline = time.monotonic() + STALL_S
    while (count := await receiver.count()) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no delivery within {STALL_S:.0f} s of the notifier's start")
        await asyncio.sleep(0.005)
    return count


# --- figures -------------------------------------------------------------------------------


def verify_samples(samples: Sequence[Mapping[str, Any]], secrets: Mapping[str, str]) -> tuple[int, int]:
    """(verified, sampled): each sample checked with the ``standardwebhooks`` library."""
    ok = 0
    for sample in samples:
        try:
            Webhook(secrets[sample["path"]]).verify(sample["body"], sample["headers"])
        except WebhookVerificationError:
            continue
        ok += 1
    return ok, len(samples)


def figures(outcome: Outcome) -> dict[str, Any]:
    scenario, sent = outcome.scenario, outcome.sent
    unique = {(path, event_id): t for t, path, event_id in outcome.records}
    latencies = [1000 * (t - sent[event_id]) for (_, event_id), t in unique.items() if event_id in sent]
    # a backlog is timed from its first receipt (the notifier's start), the others from the first publish
    first = min(t for t, _, _ in outcome.records) if scenario.backlog else min(sent.values())
    last_receipt = max((t for t, _, _ in outcome.records), default=first)
    last_logged = outcome.log["last_completed"] or first
    verified, sampled = verify_samples(outcome.samples, outcome.secrets)
    published_in = max(sent.values()) - min(sent.values())
    return {
        "events": scenario.events,
        "endpoints": scenario.endpoints,
        "rate": scenario.rate,
        "backlog": scenario.backlog,
        "expected": scenario.deliveries,
        "received": len(unique),
        "duplicates": len(outcome.records) - len(unique),
        "metered": outcome.metered_deliveries,
        "publish_per_s": scenario.events / published_in if published_in > 0 else None,
        "seconds": last_receipt - first,
        "deliveries_per_s": len(unique) / (last_receipt - first),
        "logged_per_s": outcome.log["succeeded"] / (last_logged - first),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "signatures_verified": verified,
        "signatures_sampled": sampled,
        "log": {k: v for k, v in outcome.log.items() if k != "last_completed"},
        "cpu_s": outcome.cpu,
        "delivery_path": outcome.delivery_path,
    }


def print_scenario(name: str, f: Mapping[str, Any]) -> None:
    log = f["log"]
    if f["rate"]:
        how = f" at {f['rate']:g}/s"
    elif f["backlog"]:
        how = ", queued while the notifier was stopped"
    else:
        how = ", as fast as possible"
    print(
        f"\n{name}: {f['events']:,} events × {f['endpoints']} endpoint(s){how}"
        f"; received {f['received']:,} of {f['expected']:,} ({f['duplicates']} duplicates);"
        f" log {log['succeeded']:,} succeeded, {log['failed']} failed, {log['attempts']:,} attempts"
        f" ({log['attempts_200']:,} answered 200); signatures {f['signatures_verified']}"
        f"/{f['signatures_sampled']} verified"
    )
    names = [n for n in f["cpu_s"] if n not in {"machine", "other"}] + ["other", "machine"]
    print(table(cpu_rows(f["cpu_s"], f["metered"], names), ["component", "CPU s", "CPU ms/delivery"]))
    path = f["delivery_path"]
    if "claim_ms" in path and "record_ms" in path:
        print(
            f"the notifier's metrics (means): a claim {path['claim_ms']:.2f} ms for"
            f" {path['claim_size']:.1f} events, an attempts' log {path['record_ms']:.2f} ms for"
            f" {path['record_size']:.1f} deliveries"
        )


def summary(results: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [
        [
            name,
            f["received"],
            f["seconds"],
            f["deliveries_per_s"],
            f["logged_per_s"],
            f["p50_ms"],
            f["p99_ms"],
            f["cpu_s"]["machine"] / max(f["seconds"], 1e-9) / 2 * 100,
        ]
        for name, f in results.items()
    ]
    header = ["run", "deliveries", "seconds", "deliveries/s", "logged/s", "p50 ms", "p99 ms", "machine CPU %"]
    return table(rows, header)


# --- main ----------------------------------------------------------------------------------


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    # The paced run first: after the bursts' 20,000 deliveries PostgreSQL's autovacuum works
    # on the delivery log for a while, and a latency run beside it measures the vacuum.
    every = [
        Scenario("paced", args.paced_events, 1, rate=args.rate),
        Scenario("one", args.events, 1),
        Scenario("ten", args.events // args.endpoints, args.endpoints),
        Scenario("backlog", args.events, 1, backlog=True),
    ]
    return [s for s in every if s.name in args.only]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {**PRODUCTION_RETRIES, **parse_env(args.env)}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vidq-bench-hooks-") as tmp:
        clip = small_clip(Path(tmp))
        async with (
            bench_stack(env, {"notifier": {"VIDQ_METRICS_PORT": str(NOTIFIER_METRICS)}}) as running,
            receiver_process(args.sample_every) as receiver,
            event_publisher(running) as publisher,
        ):
            for n in range(2, args.notifiers + 1):  # more notifiers share the queues, as replicas do
                await running.stack.start_service("notifier", name=f"notifier-{n}", extra_env=REPLICA_ENV)
            for scenario in scenarios(args):
                target = await prepare(running, scenario, receiver, clip)
                profile = RESULTS / f"{args.name}-{scenario.name}.notifier.txt" if args.profile else None
                outcome = await measure(running, receiver, publisher, scenario, target, profile)
                results[scenario.name] = figures(outcome)
                print_scenario(scenario.name, results[scenario.name])
    return {"env": env, "notifiers": args.notifiers, "runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=10_000, help="events of the burst runs")
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints of the 'ten' run")
    parser.add_argument("--paced-events", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second of the paced run")
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=["paced", "one", "ten", "backlog"],
        help="runs, comma-separated",
    )
    parser.add_argument(
        "--notifiers", type=int, default=1, help="notifier processes (replicas sharing the queues)"
    )
    parser.add_argument("--sample-every", type=int, default=50, help="verify every Nth delivery's signature")
    parser.add_argument("--env", action="append", default=[], help="VIDQ_X=value for the stack (repeatable)")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the notifier (var/bench/NAME-RUN.notifier.txt)"
    )
    parser.add_argument("--name", default="webhooks", help="name of the result file (var/bench/NAME.json)")
    args = parser.parse_args()
    with exclusive(args.name):
        figures_ = uvloop.run(run(args))
    print("\n" + summary(figures_["runs"]))
    report(args.name, {"args": vars(args), **figures_})


if __name__ == "__main__":
    main()
