"""Many small jobs: a burst of uploads of a 1 s 144p clip, and how the stack works through it.

``--jobs`` uploads (200 by default) of one generated 1 s 256x144 clip with audio are sent at once
(one connection each). Each becomes one ``144p`` rendition and one poster. The run ends when
every accepted video is ``ready`` or ``failed``. ``--clip WxHxS`` uploads a bigger clip instead
(e.g. ``1280x720x10``: five rungs per video), to see how a backlog of real encodes drains.

Figures: time until every upload was answered and until every video was ready (both from the
first POST), jobs per minute (videos ready per minute over that span), per-video time from
upload to ``video.ready`` and to its first ``rendition.completed`` (first playable) (p50 / p95 /
max, from the database's event log), CPU-seconds of the stack and of the whole machine, and the
peak depth of each queue. Every ``--sample-s`` seconds (0.5) the monitor reads:

* the depth of every queue of the stack's vhost from the management API (``messages``, ready +
  unacknowledged); the broker refreshes these statistics every 5 s, so they move in steps;
* the ready messages of every work queue by a passive declare over AMQP (exact at that moment);
* how many videos are in each status, and the unpublished outbox rows (PostgreSQL).

The plot (``--plot``, ``docs/img/many-jobs.png`` by default) shows queue depth over time per
queue and the count of ready videos. ``--config PxC`` runs P transcoder processes with
``VIDQ_TRANSCODER_CONCURRENCY=C`` (default ``1x1``, as ``make run``); give it several times to
compare, each on a fresh stack.

    .venv/bin/python -m bench.many_jobs
    .venv/bin/python -m bench.many_jobs --jobs 20 --plot var/bench/many-jobs-20.png
    .venv/bin/python -m bench.many_jobs --config 1x1 --config 1x2 --config 2x1
    .venv/bin/python -m bench.many_jobs --jobs 4 --clip 1280x720x10 --config 1x2 --name burst-720p
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

import aio_pika
import asyncpg
import httpx
import psutil
from matplotlib.figure import Figure

from bench.common import (
    RESULTS,
    CpuMeter,
    bench_stack,
    exclusive,
    machine_cpu_seconds,
    percentile,
    report,
    stack_pids,
    table,
)
from shared.messaging.topology import build
from shared.settings import ServiceSettings
from tests.e2e.stack import Running
from tests.media import make_clip
from tests.realdeps import ADMIN_URL
from tests.settings import ROOT, make

NAME = "many_jobs"
DEFAULT_PLOT = ROOT / "docs" / "img" / "many-jobs.png"
TERMINAL = ("ready", "failed", "canceled")
#: Work queues, in the order the pipeline reaches them.
WORK_QUEUES = tuple(spec.name for spec in build(make(ServiceSettings)).work_queues)


def _fields(pattern: str, text: str, what: str) -> tuple[str, ...]:
    """The groups of ``pattern`` matched by all of ``text``; an argparse error naming ``what``."""
    match = re.fullmatch(pattern, text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a {what}: {text!r}")
    return match.groups()


@dataclass(frozen=True)
class Config:
    """P transcoder processes with C encode slots each."""

    transcoders: int
    concurrency: int

    @classmethod
    def parse(cls, text: str) -> Config:
        transcoders, concurrency = _fields(r"(\d+)x(\d+)", text, "PxC configuration (e.g. 1x2)")
        return cls(int(transcoders), int(concurrency))

    def __str__(self) -> str:
        return f"{self.transcoders}x{self.concurrency}"


@dataclass(frozen=True)
class Clip:
    """The generated clip every upload sends: width x height, seconds."""

    width: int
    height: int
    duration: float

    @classmethod
    def parse(cls, text: str) -> Clip:
        width, height, seconds = _fields(
            r"(\d+)x(\d+)x(\d+(?:\.\d+)?)", text, "WxHxSECONDS clip (e.g. 1280x720x10)"
        )
        return cls(int(width), int(height), float(seconds))

    def __str__(self) -> str:
        return f"{self.duration:g} s {self.width}x{self.height}"


SMALL_CLIP = Clip(256, 144, 1.0)


@dataclass
class Sample:
    """What the monitor saw at ``t`` seconds after the first POST."""

    t: float
    broker: dict[str, int]  # management API: messages (ready + unacked) per queue, every queue
    ready_now: dict[str, int]  # passive declare: ready messages per work queue
    statuses: dict[str, int]
    outbox_pending: int


@dataclass
class Monitor:
    """Samples queue depths, video statuses and the outbox while the burst is processed."""

    running: Running
    period_s: float
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    #: Videos to wait for (set once the uploads are answered); ``finished`` is set when all are done.
    expect: int | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, started: float) -> None:
        admin = urlparse(ADMIN_URL)
        vhost = unquote(urlparse(self.running.env["VIDQ_AMQP_URL"]).path.lstrip("/"))
        auth = (unquote(admin.username or ""), unquote(admin.password or ""))
        base = f"{admin.scheme}://{admin.hostname}:{admin.port or 15672}"
        queues_url = f"/api/queues/{quote(vhost, safe='')}"
        db = await asyncpg.connect(self.running.env["VIDQ_DATABASE_URL"])
        try:
            async with (
                httpx.AsyncClient(base_url=base, auth=auth, timeout=5.0) as api,
                await aio_pika.connect(self.running.env["VIDQ_AMQP_URL"]) as amqp,
            ):
                channel = await amqp.channel()
                while not self.stopping.is_set():
                    tick = time.perf_counter()
                    await self._sample(tick - started, api, queues_url, channel, db)
                    with contextlib.suppress(TimeoutError):
                        pause = max(0.0, self.period_s - (time.perf_counter() - tick))
                        await asyncio.wait_for(self.stopping.wait(), pause)
        finally:
            await db.close()

    async def _sample(
        self,
        t: float,
        api: httpx.AsyncClient,
        queues_url: str,
        channel: aio_pika.abc.AbstractChannel,
        db: asyncpg.Connection,
    ) -> None:
        try:
            self.samples.append(
                Sample(
                    t=t,
                    broker=await _broker_depths(api, queues_url),
                    ready_now=await _ready_now(channel),
                    statuses=await _statuses(db),
                    outbox_pending=int(
                        await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                    ),
                )
            )
        except (httpx.HTTPError, aio_pika.exceptions.AMQPError, asyncpg.PostgresError):
            self.errors += 1
        if self.expect is not None and self.terminal() >= self.expect:
            self.finished.set()

    def terminal(self) -> int:
        if not self.samples:
            return 0
        return sum(self.samples[-1].statuses.get(s, 0) for s in TERMINAL)


async def _broker_depths(api: httpx.AsyncClient, path: str) -> dict[str, int]:
    response = await api.get(path, params={"columns": "name,messages"})
    response.raise_for_status()
    return {q["name"]: int(q.get("messages") or 0) for q in response.json()}


async def _ready_now(channel: aio_pika.abc.AbstractChannel) -> dict[str, int]:
    depths = {}
    for name in WORK_QUEUES:
        queue = await channel.declare_queue(name, passive=True)
        depths[name] = int(queue.declaration_result.message_count or 0)
    return depths


async def _statuses(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT status, count(*) AS n FROM videos GROUP BY status")
    return {row["status"]: int(row["n"]) for row in rows}


@dataclass
class Pinger:
    """Times ``GET /healthz`` every ``period_s``: how responsive the gateway stays under the burst."""

    url: str
    period_s: float = 0.25
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds)

    async def run(self, started: float) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=60.0) as http:
            while True:
                sent = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    await http.get("/healthz")
                    self.latencies.append((sent - started, time.perf_counter() - sent))
                await asyncio.sleep(max(0.0, self.period_s - (time.perf_counter() - sent)))

    def during(self, until: float) -> list[float]:
        return [seconds for t, seconds in self.latencies if t <= until]


@dataclass
class Upload:
    """One POST of the burst."""

    status: int
    seconds: float
    video_id: str | None
    error: str | None


async def upload_burst(running: Running, clip: bytes, jobs: int) -> list[Upload]:
    """POST ``jobs`` uploads of ``clip`` at once, one connection each."""
    limits = httpx.Limits(max_connections=jobs, max_keepalive_connections=jobs)
    headers = {"authorization": f"Bearer {running.api_key}"}
    async with httpx.AsyncClient(base_url=running.url, headers=headers, limits=limits, timeout=300.0) as http:

        async def one(i: int) -> Upload:
            sent = time.perf_counter()
            try:
                response = await http.post("/v1/videos", files={"file": (f"clip-{i}.mp4", clip, "video/mp4")})
            except httpx.HTTPError as exc:
                return Upload(0, time.perf_counter() - sent, None, repr(exc))
            seconds = time.perf_counter() - sent
            if response.status_code != 202:
                return Upload(response.status_code, seconds, None, response.text[:300])
            return Upload(202, seconds, str(response.json()["id"]), None)

        return list(await asyncio.gather(*(one(i) for i in range(jobs))))


@dataclass
class Outcome:
    """Per video: its status, error, and seconds from its upload to ``video.ready``."""

    statuses: dict[str, int]
    errors: dict[str, str]
    latencies: list[float]
    first_playable: list[float]  # seconds from its upload to its first rendition.completed
    last_ready_at: float | None  # seconds after the first POST, from the event log
    job_seconds: list[float]  # transcode jobs: claim to done
    jobs_in_flight: float  # transcode jobs running on average, first claim to last done


async def outcome(running: Running, ids: list[str], started_wall: float) -> Outcome:
    """Every accepted video as the API and the event log describe it."""
    statuses: dict[str, int] = {}
    errors: dict[str, str] = {}
    async with running.client() as http:
        for video_id in ids:
            body = (await http.get(f"/v1/videos/{video_id}")).json()
            statuses[body["status"]] = statuses.get(body["status"], 0) + 1
            if body["status"] != "ready":
                errors[video_id] = str(body.get("error") or body["status"])
    db = await asyncpg.connect(running.env["VIDQ_DATABASE_URL"])
    try:
        rows = await db.fetch(
            """SELECT v.created_at, e.occurred_at FROM videos v
               JOIN video_events e ON e.video_id = v.id AND e.type = 'video.ready'
               WHERE v.id = ANY($1::text[])""",
            ids,
        )
        first = await db.fetch(
            """SELECT min(e.occurred_at) - v.created_at AS seconds FROM videos v
               JOIN video_events e ON e.video_id = v.id AND e.type = 'rendition.completed'
               WHERE v.id = ANY($1::text[]) GROUP BY v.id, v.created_at""",
            ids,
        )
        jobs = await db.fetch("SELECT created_at, updated_at FROM transcode_jobs WHERE state = 'done'")
    finally:
        await db.close()
    latencies = [(r["occurred_at"] - r["created_at"]).total_seconds() for r in rows]
    last = max((r["occurred_at"].timestamp() - started_wall for r in rows), default=None)
    job_seconds = [(j["updated_at"] - j["created_at"]).total_seconds() for j in jobs]
    in_flight = 0.0
    if jobs:
        span = max(j["updated_at"] for j in jobs) - min(j["created_at"] for j in jobs)
        in_flight = sum(job_seconds) / max(span.total_seconds(), 1e-3)
    first_playable = [r["seconds"].total_seconds() for r in first]
    return Outcome(statuses, errors, latencies, first_playable, last, job_seconds, in_flight)


@dataclass
class Run:
    """Everything measured for one configuration."""

    config: Config
    clip: Clip
    jobs: int
    uploads: list[Upload]
    samples: list[Sample]
    outcome: Outcome
    all_answered_s: float
    all_done_s: float
    timed_out: bool
    stack_cpu_s: float
    machine_cpu_s: float
    cpu_by_process: dict[str, float]
    monitor_errors: int
    healthz_burst: list[float]  # /healthz answer times while the uploads were being answered

    def figures(self) -> dict[str, Any]:
        accepted = [u for u in self.uploads if u.video_id]
        ready = self.outcome.statuses.get("ready", 0)
        span = self.outcome.last_ready_at or self.all_done_s
        return {
            "config": str(self.config),
            "transcoders": self.config.transcoders,
            "concurrency": self.config.concurrency,
            "clip": str(self.clip),
            "jobs": self.jobs,
            "accepted": len(accepted),
            "ready": ready,
            "statuses": self.outcome.statuses,
            "failures": {**self.outcome.errors, **_refused(self.uploads)},
            "all_answered_s": round(self.all_answered_s, 2),
            "upload_p50_s": round(percentile([u.seconds for u in self.uploads], 50), 3),
            "upload_max_s": round(max(u.seconds for u in self.uploads), 3),
            "all_ready_s": round(span, 2),
            "jobs_per_minute": round(ready / span * 60, 1) if span else None,
            "ready_latency_p50_s": round(percentile(self.outcome.latencies, 50), 2),
            "ready_latency_p95_s": round(percentile(self.outcome.latencies, 95), 2),
            "ready_latency_max_s": round(max(self.outcome.latencies, default=float("nan")), 2),
            "first_playable_p50_s": round(percentile(self.outcome.first_playable, 50), 2),
            "first_playable_p95_s": round(percentile(self.outcome.first_playable, 95), 2),
            "transcode_job_p50_s": round(percentile(self.outcome.job_seconds, 50), 2),
            "transcode_jobs_in_flight": round(self.outcome.jobs_in_flight, 2),
            "stack_cpu_s": round(self.stack_cpu_s, 1),
            "machine_cpu_s": round(self.machine_cpu_s, 1),
            "cpu_s_by_process": {name: round(cpu, 1) for name, cpu in self.cpu_by_process.items()},
            "healthz_during_uploads_p50_ms": round(percentile(self.healthz_burst, 50) * 1000, 1),
            "healthz_during_uploads_max_ms": round(max(self.healthz_burst, default=float("nan")) * 1000, 1),
            "peak_depth": peak_depths(self.samples),
            "timed_out": self.timed_out,
            "monitor_errors": self.monitor_errors,
        }


def _refused(uploads: list[Upload]) -> dict[str, str]:
    return {f"upload {i}": f"{u.status}: {u.error}" for i, u in enumerate(uploads) if u.video_id is None}


def peak_depths(samples: list[Sample]) -> dict[str, int]:
    """The deepest each queue got (management API or passive declare), for queues that held any."""
    peaks: dict[str, int] = {}
    for sample in samples:
        for source in (sample.broker, sample.ready_now):
            for name, depth in source.items():
                peaks[name] = max(peaks.get(name, 0), depth)
    peaks["outbox (unpublished rows)"] = max((s.outbox_pending for s in samples), default=0)
    return {name: depth for name, depth in peaks.items() if depth}


@contextlib.asynccontextmanager
async def monitored(monitor: Monitor, started: float) -> AsyncIterator[None]:
    task = asyncio.create_task(monitor.run(started))
    try:
        yield
    finally:
        monitor.stopping.set()
        await task


@contextlib.contextmanager
def profiled(running: Running, enabled: bool, tag: str) -> Iterator[None]:
    """py-spy records every service process of the run (``var/bench/many_jobs-<tag>-<name>.txt``)."""
    spies: list[subprocess.Popen[bytes]] = []
    if enabled:
        spy = str(Path(sys.executable).parent / "py-spy")
        for name, process in running.stack.processes.items():
            out = RESULTS / f"{NAME}-{tag}-{name}.txt"
            argv = [spy, "record", "-p", str(process.pid), "-r", "100", "--format", "raw", "-o", str(out)]
            spies.append(subprocess.Popen([*argv, "--nonblocking"], stderr=subprocess.DEVNULL))
        time.sleep(1.0)
    try:
        yield
    finally:
        for proc in spies:
            proc.send_signal(2)
        for proc in spies:
            proc.wait(60)


async def run_config(config: Config, clip: bytes, args: argparse.Namespace) -> Run:
    """One fresh stack with ``config``, one burst, measured until every video is done."""
    env = {"VIDQ_TRANSCODER_CONCURRENCY": str(config.concurrency), **dict(args.env)}
    async with bench_stack(env) as running:
        for i in range(2, config.transcoders + 1):
            await running.stack.start_service("transcoder", name=f"transcoder-{i}")
        await asyncio.sleep(2.0)  # every consumer is up
        monitor = Monitor(running, args.sample_s)
        cpu = CpuMeter(stack_pids(running))
        meters = process_meters(running)
        cpu_before, machine_before = cpu.read(), machine_cpu_seconds()
        by_process_before = {name: meter.read() for name, meter in meters.items()}
        with profiled(running, args.profile, str(config)):
            started, started_wall = time.perf_counter(), time.time()
            pinger = Pinger(running.url)
            pinging = asyncio.create_task(pinger.run(started))
            async with monitored(monitor, started):
                uploads = await upload_burst(running, clip, args.jobs)
                all_answered = time.perf_counter() - started
                accepted = [u.video_id for u in uploads if u.video_id]
                monitor.expect = len(accepted)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(monitor.finished.wait(), args.timeout - all_answered)
                all_done = time.perf_counter() - started
                await asyncio.sleep(2 * args.sample_s)  # the queues' last moments in the plot
            pinging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinging
        cpu_s, machine_s = cpu.read() - cpu_before, machine_cpu_seconds() - machine_before
        by_process = {name: meter.read() - by_process_before[name] for name, meter in meters.items()}
        result = await outcome(running, accepted, started_wall)
        return Run(
            config=config,
            clip=args.clip,
            jobs=args.jobs,
            uploads=uploads,
            samples=monitor.samples,
            outcome=result,
            all_answered_s=all_answered,
            all_done_s=all_done,
            timed_out=monitor.terminal() < len(accepted),
            stack_cpu_s=cpu_s,
            machine_cpu_s=machine_s,
            cpu_by_process=by_process,
            monitor_errors=monitor.errors,
            healthz_burst=pinger.during(all_answered),
        )


def process_meters(running: Running) -> dict[str, CpuMeter | OwnCpu]:
    """CPU meters per stack process (with its ffmpeg children), the broker, PostgreSQL and us.

    The broker and the database server are shared with anything else on this machine, so
    their figures include other users' work, if any.
    """
    meters: dict[str, CpuMeter | OwnCpu] = {
        name: CpuMeter([process.pid]) for name, process in running.stack.processes.items()
    }
    servers = {"beam.smp": "broker (whole server)", "postgres": "PostgreSQL (whole server)"}
    for proc in psutil.process_iter(["name", "ppid"]):
        with contextlib.suppress(psutil.Error):
            label = servers.get(proc.info["name"])
            if label and psutil.Process(proc.info["ppid"]).name() != proc.info["name"]:
                meters[label] = CpuMeter([proc.pid])  # the server's main process and its children
    meters["bench client"] = OwnCpu()
    return meters


class OwnCpu:
    """CPU-seconds of this process alone (its children are the stack)."""

    def read(self) -> float:
        t = psutil.Process().cpu_times()
        return float(t.user + t.system)


def plot(run: Run, path: Path) -> None:
    """Queue depth per queue over time (top) and videos ready over time (bottom)."""
    times = [s.t for s in run.samples]
    fig = Figure(figsize=(10, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    for name in _plotted_queues(run.samples):
        top.plot(times, [s.ready_now.get(name, 0) for s in run.samples], label=f"{name} (ready)")
    for name in _plotted_queues(run.samples, exact=False):
        top.step(times, [s.broker.get(name, 0) for s in run.samples], where="post", linestyle="--",
                 linewidth=0.8, alpha=0.6, label=f"{name} (management API, 5 s statistics)")  # fmt: skip
    top.plot(times, [s.outbox_pending for s in run.samples], color="black", linestyle=":",
             label="outbox (unpublished rows)")  # fmt: skip
    top.set_ylabel("messages")
    top.set_title(
        f"{run.jobs} uploads of a {run.clip} clip at once ({run.config.transcoders} transcoder(s) x "
        f"{run.config.concurrency} slot(s)): queue depth over time"
    )
    top.legend(fontsize=7, loc="upper right")
    top.grid(alpha=0.3)
    bottom.plot(times, [s.statuses.get("ready", 0) for s in run.samples], color="tab:green", label="ready")
    bottom.plot(times, [sum(s.statuses.values()) for s in run.samples], color="tab:gray", label="accepted")
    bottom.axvline(run.all_answered_s, color="tab:gray", linestyle=":", linewidth=0.8)
    bottom.set_xlabel("seconds since the first POST")
    bottom.set_ylabel("videos")
    bottom.legend(fontsize=8, loc="lower right")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _plotted_queues(samples: list[Sample], *, exact: bool = True) -> list[str]:
    """Work queues that held any message (passive declare), or any queue (management API)."""
    seen: set[str] = set()
    for sample in samples:
        seen.update(name for name, depth in (sample.ready_now if exact else sample.broker).items() if depth)
    order = {name: i for i, name in enumerate(WORK_QUEUES)}
    return sorted(seen, key=lambda name: (order.get(name, len(order)), name))


def print_runs(runs: list[Run]) -> None:
    figures = [run.figures() for run in runs]
    rows = [
        [
            f["config"],
            f"{f['ready']}/{f['jobs']}",
            f["all_answered_s"],
            f["all_ready_s"],
            f["jobs_per_minute"],
            f["ready_latency_p50_s"],
            f["ready_latency_p95_s"],
            f["first_playable_p50_s"],
            f["stack_cpu_s"],
            f["machine_cpu_s"],
        ]
        for f in figures
    ]
    header = ["PxC", "ready", "answered s", "all ready s", "jobs/min", "p50 s", "p95 s",
              "playable p50 s", "stack CPU s", "machine CPU s"]  # fmt: skip
    print(table(rows, header))
    for f in figures:
        peaks = ", ".join(f"{name} {depth}" for name, depth in f["peak_depth"].items())
        print(f"\n{f['config']}: peak depth: {peaks}")
        cpu = ", ".join(f"{name} {seconds}" for name, seconds in f["cpu_s_by_process"].items())
        print(f"{f['config']}: CPU-seconds: {cpu}")
        print(
            f"{f['config']}: transcode job claim to done p50 {f['transcode_job_p50_s']} s, "
            f"{f['transcode_jobs_in_flight']} in flight on average; uploads answered p50 "
            f"{f['upload_p50_s']} s, max {f['upload_max_s']} s; GET /healthz meanwhile p50 "
            f"{f['healthz_during_uploads_p50_ms']} ms, max {f['healthz_during_uploads_max_ms']} ms"
        )
        if f["failures"]:
            print(f"{f['config']}: {len(f['failures'])} not ready:")
            for what, why in list(f["failures"].items())[:10]:
                print(f"  {what}: {why}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.many_jobs", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="uploads sent at once (default 200)")
    parser.add_argument("--config", type=Config.parse, action="append", help="PxC; repeat to compare")
    parser.add_argument(
        "--clip", type=Clip.parse, default=SMALL_CLIP, help="WxHxSECONDS of the clip (default 256x144x1)"
    )
    parser.add_argument("--name", default=NAME, help="name of the result file (var/bench/NAME.json)")
    parser.add_argument(
        "--plot", type=Path, help="PNG of the first configuration (default: the docs' plot for the "
        "default clip and name, else var/bench/NAME.png)",
    )  # fmt: skip
    parser.add_argument("--sample-s", type=float, default=0.5, help="monitor period (default 0.5 s)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="give up after this many seconds")
    parser.add_argument("--profile", action="store_true", help="py-spy every service process")
    parser.add_argument(
        "--env", type=lambda s: tuple(s.split("=", 1)), action="append", default=[],
        help="VIDQ_X=value for the stack (repeatable), e.g. a prefetch to try",
    )  # fmt: skip
    args = parser.parse_args()
    configs: list[Config] = args.config or [Config(1, 1)]
    if args.plot is None:
        default = args.clip == SMALL_CLIP and args.name == NAME
        args.plot = DEFAULT_PLOT if default else RESULTS / f"{args.name}.png"
    runs = []
    with exclusive(NAME), tempfile.TemporaryDirectory(prefix="vidq-bench-jobs-") as workdir:
        c = args.clip
        made = make_clip(Path(workdir) / "clip.mp4", width=c.width, height=c.height, duration=c.duration)
        clip = made.read_bytes()
        for config in configs:
            runs.append(asyncio.run(run_config(config, clip, args)))
    print_runs(runs)
    plot(runs[0], args.plot)
    print(f"\nplot: {args.plot}")
    report(
        args.name,
        {
            "env": dict(args.env),
            "runs": [{**run.figures(), "samples": [vars(s) for s in run.samples]} for run in runs],
            "plot": str(args.plot),
        },
    )


if __name__ == "__main__":
    main()
