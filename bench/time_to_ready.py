"""Time to ready: vidq against the same encodes run by hand, naive and decode-once.

A generated 20 s 1080p30 clip with audio (lavfi ``testsrc2`` + ``sine``) becomes the rungs
720p … 144p four ways, in one run, one after the other on a quiet machine:

- **naive, serial**: one ffmpeg per rung, one at a time (what a task-per-rendition worker with one
  slot runs);
- **naive, 2 at once**: the same commands, two running together;
- **decode-once**: one ffmpeg that decodes the source once and encodes every rung (the limit);
- **vidq**: the whole stack as processes: from the POST to the ``video.ready`` webhook, and to
  the first playable rendition (its ``rendition.completed`` webhook).

Every ffmpeg command is the transcoder's own (``transcoder.encode``), so only the schedule
differs. For each way: wall time, CPU-seconds (of the ffmpegs, or of vidq's processes with their
children; and of the whole machine, broker and database included), and per rung the bytes and
the SSIM against the source scaled to the rung's size, so speed is never bought with quality.
vidq's **pipeline overhead** is its wall time during which no encode ran: upload, probe, queues,
database, events, webhook.

    python -m bench.time_to_ready                # 3 rounds, median
    python -m bench.time_to_ready --rounds 1 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    CpuMeter,
    bench_stack,
    exclusive,
    machine_cpu_seconds,
    parse_env,
    report,
    stack_pids,
    table,
)
from shared.commands import TranscodeRendition
from shared.ladder import Quality, plan
from tests.e2e.harness import until
from tests.e2e.stack import Running
from transcoder.encode import EncodeProfile, argv_many

RUNGS = (Quality.P720, Quality.P480, Quality.P360, Quality.P240, Quality.P144)
PRESET = "veryfast"  # the transcoder's default (VIDQ_TRANSCODER_PRESET)
CRF = 23


@dataclass
class Outcome:
    """One way of making the ladder, once."""

    way: str
    wall_s: float
    cpu_s: float
    machine_cpu_s: float
    outputs: dict[Quality, Path]
    first_playable_s: float | None = None
    overhead_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def make_source(path: Path, duration: float, *, then: str = "") -> Path:
    """A 1080p30 clip with a moving pattern and a tone, encoded near-losslessly (a fair source).

    ``then``: filters applied to the pattern before it is encoded (e.g. ``noise=…`` for grain).
    """
    if path.exists():
        return path
    pattern = f"testsrc2=size=1920x1080:rate=30:duration={duration}" + (f",{then}" if then else "")
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", pattern,
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={duration}",
            "-c:v", "libx264", "-preset", "fast", "-crf", "16", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "192k", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def commands(duration: float) -> list[TranscodeRendition]:
    """The transcoder's commands for the five rungs of a 1920x1080 source, lowest first."""
    return [
        TranscodeRendition(
            job_id=f"job_{r.quality.value}",
            video_id="vid_00000000bec0",  # one of the shape a video id has (not a real one)
            quality=r.quality,
            width=r.width,
            height=r.height,
            has_audio=True,
            duration_s=duration,
        )
        for r in reversed(plan(1920, 1080, 0, RUNGS))
    ]


def _run(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _children_cpu() -> float:
    usage = psutil.Process().cpu_times()
    return float(usage.children_user + usage.children_system)


def run_by_hand(
    way: str,
    source: Path,
    out: Path,
    cmds: list[TranscodeRendition],
    *,
    together: int,
    once: bool,
    preset: str = PRESET,
    crf: int = CRF,
) -> Outcome:
    """Run the encodes as ffmpeg commands: one per rung (``together`` at a time), or one for all."""
    profile = EncodeProfile(preset=preset, crf=crf)
    outputs = {cmd.quality: out / f"{way}-{cmd.quality.value}.mp4" for cmd in cmds}
    jobs = (
        [argv_many(str(source), [(str(outputs[c.quality]), c) for c in cmds], profile)]
        if once
        else [argv_many(str(source), [(str(outputs[c.quality]), c)], profile) for c in cmds]
    )
    cpu0, machine0, t0 = _children_cpu(), machine_cpu_seconds(), time.perf_counter()
    pending, running = list(jobs), list[subprocess.Popen[bytes]]()
    while pending or running:
        while pending and len(running) < together:
            running.append(_run(pending.pop(0)))
        time.sleep(0.01)
        for proc in [p for p in running if p.poll() is not None]:
            if proc.returncode != 0:
                raise RuntimeError(f"ffmpeg failed: {proc.stderr.read().decode() if proc.stderr else ''}")
            running.remove(proc)
    wall = time.perf_counter() - t0
    return Outcome(way, wall, _children_cpu() - cpu0, machine_cpu_seconds() - machine0, outputs)


class EncodeWatcher:
    """Samples the transcoder's ffmpeg children: the union of the intervals when one ran."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.busy: list[tuple[float, float]] = []
        self._open: dict[int, float] = {}

    async def run(self) -> None:
        while True:
            now = time.perf_counter()
            alive = _ffmpeg_children(self.pid)
            for pid in alive - self._open.keys():
                self._open[pid] = now
            for pid in self._open.keys() - alive:
                self.busy.append((self._open.pop(pid), now))
            await asyncio.sleep(0.01)

    def busy_between(self, start: float, end: float) -> float:
        """Seconds within ``[start, end]`` when at least one encode ran."""
        spans = sorted((max(a, start), min(b, end)) for a, b in self.busy if b > start and a < end)
        total, cursor = 0.0, start
        for a, b in spans:
            if b > cursor:
                total += b - max(a, cursor)
                cursor = b
        return total


def _ffmpeg_children(pid: int) -> set[int]:
    """The ffmpeg processes ``pid`` runs, read from /proc: microseconds, where a psutil scan of
    every process took milliseconds — every 10 ms, a quarter of a core taken from the encode."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # a kernel without the file: the slow way
        return {c.pid for c in psutil.Process(pid).children() if _name(c.pid) == "ffmpeg"}
    return {int(child) for child in children if _name(int(child)) == "ffmpeg"}


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


async def run_vidq(running: Running, source: Path, out: Path, round_no: int) -> Outcome:
    """Upload to the stack and wait for the ``video.ready`` webhook; download the renditions."""
    path = f"/ready-{round_no}"
    meter = CpuMeter(stack_pids(running))
    watcher = EncodeWatcher(running.stack.processes["transcoder"].pid)
    watching = asyncio.create_task(watcher.run())
    async with running.client() as api:
        hook = await api.post(
            "/v1/webhooks",
            json={"url": running.receiver_url + path, "events": ["video.ready", "rendition.completed"]},
        )
        hook.raise_for_status()
        cpu0, machine0 = meter.read(), machine_cpu_seconds()
        t0 = time.perf_counter()
        loop_t0 = asyncio.get_running_loop().time()
        with source.open("rb") as file:
            made = await api.post(
                "/v1/videos",
                files={"file": (source.name, file, "video/mp4")},
                data={"qualities": ",".join(q.value for q in RUNGS)},
            )
        made.raise_for_status()
        video_id = made.json()["id"]
        await until(lambda: running.receiver.at(path, "video.ready"), timeout=600, interval=0.005)
        wall = time.perf_counter() - t0
        cpu, machine_cpu = meter.read() - cpu0, machine_cpu_seconds() - machine0
        watching.cancel()
        first = _first_arrival(running, path, "rendition.completed") - loop_t0
        video = (await api.get(f"/v1/videos/{video_id}")).json()
        outputs = {}
        for rendition in video["renditions"]:
            quality = Quality(rendition["quality"])
            target = out / f"vidq-{round_no}-{quality.value}.mp4"
            target.write_bytes((await api.get(rendition["url"])).content)
            outputs[quality] = target
        await api.delete(f"/v1/webhooks/{hook.json()['id']}")
    encoding = watcher.busy_between(t0, t0 + wall)
    starts, ends = [a for a, _ in watcher.busy], [b for _, b in watcher.busy]
    phases = {
        "before the first encode": min(starts) - t0,
        "between encodes": max(ends) - min(starts) - encoding,
        "after the last encode": t0 + wall - max(ends),
    }
    return Outcome(
        "vidq",
        wall,
        cpu,
        machine_cpu,
        outputs,
        first_playable_s=first,
        overhead_s=wall - encoding,
        extra={"overhead_phases_s": phases, "encodes": len(watcher.busy)},
    )


def _first_arrival(running: Running, path: str, event_type: str) -> float:
    receiver = running.receiver
    return min(
        t
        for r, t in zip(receiver.requests, receiver.times, strict=True)
        if r.path == path and r.json()["type"] == event_type
    )


_SSIM = re.compile(r"All:(\d+\.\d+)")


def ssim(output: Path, source: Path, width: int, height: int) -> float:
    """SSIM of ``output`` against ``source`` scaled (bicubic) to ``width x height``."""
    graph = f"[1:v]scale={width}:{height}:flags=bicubic,setsar=1[ref];[0:v]setsar=1[out];[out][ref]ssim"
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-i", str(output), "-i", str(source),
         "-lavfi", graph, "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = _SSIM.findall(result.stderr)
    if not found:
        raise RuntimeError(f"no SSIM in ffmpeg's output for {output}")
    return float(found[-1])


def median_outcome(outcomes: list[Outcome]) -> Outcome:
    return sorted(outcomes, key=lambda o: o.wall_s)[len(outcomes) // 2]


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="vidq-ttr-") as tmp:
        out = Path(tmp)
        source = make_source(out / "source-1080p.mp4", args.duration)
        cmds = commands(args.duration)
        sizes = {c.quality: (c.width, c.height) for c in cmds}
        ways: dict[str, list[Outcome]] = {}
        env = {"VIDQ_TRANSCODER_CONCURRENCY": str(args.concurrency), **parse_env(args.env)}
        async with bench_stack(env) as running:
            await asyncio.sleep(2)  # let the services settle after start
            for round_no in range(args.rounds):
                sys.stderr.write(f"round {round_no + 1}/{args.rounds}\n")
                for way, together, once in (
                    ("naive", 1, False),
                    ("naive-2", 2, False),
                    ("decode-once", 1, True),
                ):
                    ways.setdefault(way, []).append(
                        run_by_hand(way, source, out, cmds, together=together, once=once)
                    )
                ways.setdefault("vidq", []).append(await run_vidq(running, source, out, round_no))
        chosen = {way: median_outcome(outcomes) for way, outcomes in ways.items()}
        quality = {
            way: {q: (o.outputs[q].stat().st_size, ssim(o.outputs[q], source, *sizes[q])) for q in RUNGS}
            for way, o in chosen.items()
        }
    print_figures(args, ways, chosen, quality)


def print_figures(
    args: argparse.Namespace,
    ways: dict[str, list[Outcome]],
    chosen: dict[str, Outcome],
    quality: dict[str, dict[Quality, tuple[int, float]]],
) -> None:
    vidq, naive = chosen["vidq"], min(chosen["naive"], chosen["naive-2"], key=lambda o: o.wall_s)
    limit = chosen["decode-once"]
    rows = [
        [
            way,
            o.wall_s,
            statistics.pstdev([x.wall_s for x in ways[way]]),
            o.cpu_s,
            o.machine_cpu_s,
            "" if o.first_playable_s is None else f"{o.first_playable_s:.2f}",
            "" if o.overhead_s is None else f"{o.overhead_s:.2f}",
        ]
        for way, o in chosen.items()
    ]
    print(f"\n{args.duration:.0f} s 1080p30 source, rungs {', '.join(q.value for q in RUNGS)}, "
          f"libx264 -preset {PRESET} -crf {CRF}; median of {args.rounds} round(s)\n")  # fmt: skip
    print(table(rows, ["way", "wall s", "± s", "CPU s", "machine CPU s", "first playable s", "overhead s"]))
    print()
    header = ["rung", *(f"{way} KiB" for way in chosen), *(f"{way} SSIM" for way in chosen)]
    rung_rows = [
        [q.value, *(quality[w][q][0] // 1024 for w in chosen), *(f"{quality[w][q][1]:.4f}" for w in chosen)]
        for q in RUNGS
    ]
    print(table(rung_rows, header))
    ratios = {
        "vidq / naive (best schedule)": vidq.wall_s / naive.wall_s,
        "vidq / decode-once": vidq.wall_s / limit.wall_s,
        "vidq CPU / decode-once CPU": vidq.cpu_s / limit.cpu_s,
    }
    print()
    for name, value in ratios.items():
        print(f"{name:>32}: {value:.3f}")
    print(f"{'targets':>32}: vidq / naive <= 0.80, vidq / decode-once <= 1.10, overhead <= 0.5 s")
    print(f"\nvidq's overhead, by phase (median round), with {vidq.extra['encodes']} ffmpeg run(s):")
    for phase, seconds in vidq.extra["overhead_phases_s"].items():
        print(f"{phase:>32}: {seconds:.3f} s")
    report(
        args.name,
        {
            "duration_s": args.duration,
            "env": args.env,
            "rounds": args.rounds,
            "transcoder_concurrency": args.concurrency,
            "preset": PRESET,
            "crf": CRF,
            "ways": {
                way: {
                    "walls_s": [x.wall_s for x in ways[way]],
                    "wall_s": o.wall_s,
                    "cpu_s": o.cpu_s,
                    "machine_cpu_s": o.machine_cpu_s,
                    "first_playable_s": o.first_playable_s,
                    "overhead_s": o.overhead_s,
                    **o.extra,
                    "rungs": {
                        q.value: {"bytes": quality[way][q][0], "ssim": quality[way][q][1]} for q in RUNGS
                    },
                }
                for way, o in chosen.items()
            },
            "ratios": ratios,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all four ways (median reported)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of 1080p30 source")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="VIDQ_TRANSCODER_CONCURRENCY of the stack (default 2)"
    )
    parser.add_argument("--env", action="append", default=[], help="VIDQ_X=value for the stack (repeatable)")
    parser.add_argument(
        "--name", default="time_to_ready", help="name of the result file (var/bench/NAME.json)"
    )
    args = parser.parse_args()
    with exclusive(args.name):
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
