"""What every benchmark shares: one run at a time, a private stack, CPU and memory accounting.

A benchmark takes ``var/bench.lock`` for its whole run, so two never measure each other; it
starts its own stack (``tests/e2e/stack.py``: private vhost, database and storage, every service
as a process) and prints its figures, which it also writes to ``var/bench/<name>.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.stack import Running, running_stack
from tests.settings import ROOT

RESULTS = ROOT / "var" / "bench"

#: The stack as in production, except for what a benchmark must reach or see quickly.
BENCH_ENV = {
    "VIDQ_TRANSCODER_PRESET": "veryfast",
    "VIDQ_TRANSCODER_CONCURRENCY": "1",
    "VIDQ_LOG_LEVEL": "WARNING",
}


@contextlib.contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Hold the benchmark lock: wait for any other benchmark to finish first."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (ROOT / "var" / "bench.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.stderr.write(f"{name}: waiting for another benchmark to finish\n")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.asynccontextmanager
async def bench_stack(
    env: Mapping[str, str] | None = None, service_env: Mapping[str, Mapping[str, str]] | None = None
) -> AsyncIterator[Running]:
    """A whole vidq stack for one benchmark, removed afterwards (its logs go to ``var/bench/logs``).

    ``env`` tunes every service, ``service_env`` one (``{"notifier": {…}}``).
    """
    with tempfile.TemporaryDirectory(prefix="vidq-bench-") as workdir:
        try:
            async with running_stack(
                Path(workdir),
                {**BENCH_ENV, **(env or {})},
                prefix="vidq-bench",
                service_overrides=service_env,
            ) as running:
                yield running
        finally:
            kept = RESULTS / "logs"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(Path(workdir) / "logs", kept, dirs_exist_ok=True)


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class CpuMeter:
    """CPU-seconds of a set of processes and all their descendants (dead children included)."""

    pids: Sequence[int]

    def read(self) -> float:
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                t = proc.cpu_times()
                # children_* counts children that ended and were waited for (every ffmpeg)
                total += t.user + t.system + t.children_user + t.children_system
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        c = child.cpu_times()
                        total += c.user + c.system
        return total


def machine_cpu_seconds() -> float:
    """CPU-seconds the whole machine has spent busy (every process: broker, database, …)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))


def stack_pids(running: Running) -> list[int]:
    return [process.pid for process in running.stack.processes.values()]


def machine() -> dict[str, Any]:
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout
    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "ffmpeg": ffmpeg.split("\n", 1)[0],
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def report(name: str, figures: Mapping[str, Any]) -> None:
    """Write ``figures`` (with the machine) to ``var/bench/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **figures}, indent=2, default=str) + "\n")
    sys.stdout.write(f"\nfigures written to {path.relative_to(ROOT)}\n")


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain-text table, columns aligned."""
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``VIDQ_X=value`` pairs of a ``--env`` option, as a dict."""
    return dict(pair.split("=", 1) for pair in pairs)
