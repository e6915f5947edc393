"""Upload benchmark: one large upload to the gateway, its throughput and the gateway's memory.

A clip of about ``--size-mib`` MiB (raw video in Matroska, so ffprobe accepts it and the gateway
records it) is POSTed to ``/v1/videos`` by curl, as SPEC's multipart form; with ``--way tus``
it is sent resumably instead, as tus-js-client sends it by default: the upload made with a
``POST /v1/tus``, then the whole file in one streamed ``PATCH`` by curl; with ``--way cli``,
by ``vidq upload --resumable`` (8 MiB a PATCH, the client's Python included in its CPU). The
stack runs without its transcoder and thumbnailer (they are stopped once it is up), so the
upload is the only work; each video is deleted after its ``202``.

Figures: wall time and MB/s (10^6 bytes per second) from the first byte sent to the ``202``, and
up to the moment the whole file is on the gateway's disk (the rest is ffprobe and the database);
CPU-seconds of the gateway and of the client; the gateway's RSS at rest (after one small warm-up
upload) and its peak during the upload, both as the kernel's high-water mark (``VmHWM``, reset
before each upload through ``/proc/<pid>/clear_refs``) and as RSS sampled every 10 ms.

    .venv/bin/python -m bench.upload                      # 1 GiB, 3 uploads
    .venv/bin/python -m bench.upload --size-mib 100 --runs 1
    .venv/bin/python -m bench.upload --profile            # also a py-spy flame graph of one upload
    .venv/bin/python -m bench.upload --way tus            # resumable: one PATCH (tus-js-client's way)
    .venv/bin/python -m bench.upload --way cli            # resumable: vidq upload, 8 MiB a PATCH
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import RESULTS, bench_stack, exclusive, report, table
from tests.e2e.stack import Running
from tests.media import make_clip

NAME = "upload"
MIB = 2**20
MB = 10**6
#: Raw 1280x720 yuv420p frames: 1.38 MB each, so 1 GiB is about 780 frames (31 s at 25 fps).
WIDTH, HEIGHT, FPS = 1280, 720, 25
FRAME_BYTES = WIDTH * HEIGHT * 3 // 2
SEED_FRAMES = 50
SAMPLE_S = 0.01


def make_big_clip(path: Path, size_bytes: int) -> tuple[Path, int]:
    """A Matroska file of raw video frames, about ``size_bytes`` long, and its exact size."""
    seed = path.with_suffix(".seed.mkv")
    frames = max(FPS, math.ceil(size_bytes / FRAME_BYTES))
    lavfi = f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}"
    ffmpeg = ["ffmpeg", "-v", "error", "-y"]
    subprocess.run(
        [*ffmpeg, "-f", "lavfi", "-i", lavfi, "-frames:v", str(SEED_FRAMES), "-c:v", "rawvideo",
         "-pix_fmt", "yuv420p", str(seed)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [*ffmpeg, "-stream_loop", "-1", "-i", str(seed), "-c", "copy", "-frames:v", str(frames), str(path)],
        check=True,
    )
    seed.unlink()
    return path, path.stat().st_size


@dataclass
class CurlRun:
    """What curl said about one upload, and what it cost."""

    status: int
    body: dict[str, Any]
    time_total_s: float
    time_pretransfer_s: float
    size_upload: int
    cpu_s: float
    max_rss_mib: float


def curl_upload(url: str, api_key: str, clip: Path, fields: dict[str, str]) -> CurlRun:
    """POST ``clip`` as SPEC's multipart form with curl; its CPU from ``wait4``'s rusage."""
    form = [
        "-F", f"file=@{clip};type=video/x-matroska",
        *(arg for name, value in fields.items() for arg in ("-F", f"{name}={value}")),
    ]  # fmt: skip
    return _curl([*form, f"{url}/v1/videos"], api_key)


def curl_patch(url: str, api_key: str, clip: Path, fields: dict[str, str]) -> CurlRun:
    """Make a tus upload of ``clip`` (``POST /v1/tus``), then send it whole in one PATCH with curl.

    The PATCH's answer comes once the gateway probed and recorded the video; its
    ``Vidq-Video-Id`` is returned as the body's ``id``.
    """
    size = clip.stat().st_size
    metadata = ",".join(
        f"{name} {base64.b64encode(value.encode()).decode()}" for name, value in fields.items()
    )
    created = httpx.post(
        f"{url}/v1/tus",
        headers={
            "Authorization": f"Bearer {api_key}", "Tus-Resumable": "1.0.0",
            "Upload-Length": str(size), "Upload-Metadata": metadata,
        },
    )  # fmt: skip
    if created.status_code != 201:
        return CurlRun(created.status_code, created.json(), 0.0, 0.0, 0, 0.0, 0.0)
    location = url + created.headers["location"]
    patch = [
        "-X", "PATCH", "-T", str(clip),
        "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0",
        "-H", "Content-Type: application/offset+octet-stream",
        location,
    ]  # fmt: skip
    run = _curl(patch, api_key)
    if run.status == 204:
        run.status, run.body = 202, {"id": created.headers["vidq-video-id"]}  # as the form's answer
    return run


def cli_upload(url: str, api_key: str, clip: Path, fields: dict[str, str]) -> CurlRun:
    """``vidq upload --resumable --json``: the CLI's own tus client, 8 MiB a PATCH."""
    argv = [
        str(Path(sys.executable).parent / "vidq"), "upload", str(clip), "--resumable", "--json",
        *(arg for name, value in fields.items() for arg in (f"--{name.replace('_', '-')}", value)),
    ]  # fmt: skip
    env = {**os.environ, "VIDQ_URL": url, "VIDQ_API_KEY": api_key}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read() if proc.stdout is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"vidq upload exited with status {os.waitstatus_to_exitcode(status)}")
    return CurlRun(
        status=202,
        body=json.loads(out),
        time_total_s=wall,
        time_pretransfer_s=0.0,  # the process's start and the creation are counted in
        size_upload=clip.stat().st_size,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,
    )


WAYS = {"multipart": curl_upload, "tus": curl_patch, "cli": cli_upload}


def _curl(args: list[str], api_key: str) -> CurlRun:
    """curl with the key; what it measured, and its CPU and memory from ``wait4``'s rusage."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        argv = [
            "curl", "-sS", "-o", out.name, "-w", "%{json}",
            "-H", f"Authorization: Bearer {api_key}",
            "-H", "Expect:",  # no 100-continue round trip
            *args,
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        stats = json.loads(proc.stdout.read() if proc.stdout is not None else b"{}")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"curl exited with status {proc.returncode}: {stats.get('errormsg')}")
        body = json.loads(Path(out.name).read_bytes() or b"{}")
    return CurlRun(
        status=int(stats["http_code"]),
        body=body,
        time_total_s=float(stats["time_total"]),
        time_pretransfer_s=float(stats["time_pretransfer"]),
        size_upload=int(stats["size_upload"]),
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,
    )


def vm_hwm_bytes(pid: int) -> int:
    """The process's peak resident set size since start or the last reset (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def reset_hwm(pid: int) -> None:
    """Reset ``VmHWM`` to the current RSS (``echo 5 > /proc/<pid>/clear_refs``)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Sampler:
    """Samples the gateway's RSS and notes when the uploaded file is complete on disk."""

    pid: int
    tmp_dir: Path
    file_bytes: int
    rss: list[tuple[float, int]] = field(default_factory=list)
    stored_at: float | None = None

    async def run(self, started: float) -> None:
        proc = psutil.Process(self.pid)
        while True:
            now = time.perf_counter() - started
            self.rss.append((now, proc.memory_info().rss))
            if self.stored_at is None and self._largest_temp() >= self.file_bytes:
                self.stored_at = now
            await asyncio.sleep(SAMPLE_S)

    def _largest_temp(self) -> int:
        sizes = [0]
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.tmp_dir):
                with contextlib.suppress(FileNotFoundError):
                    sizes.append(entry.stat().st_size)
        return max(sizes)


@dataclass
class UploadFigures:
    """One measured upload."""

    size_bytes: int
    wall_s: float
    mb_per_s: float
    stored_s: float | None
    stored_mb_per_s: float | None
    gateway_cpu_s: float
    client_cpu_s: float
    client_max_rss_mib: float
    rss_before_mib: float
    peak_rss_hwm_mib: float
    peak_rss_sampled_mib: float
    growth_mib: float


def cpu_seconds(pid: int) -> float:
    """CPU-seconds of a process and its waited-for children (the gateway's ffprobe runs)."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


async def upload_once(
    running: Running, clip: Path, size: int, profile: Path | None = None, way: str = "multipart"
) -> UploadFigures:
    """Upload ``clip`` (``size`` bytes) once, measure it, then delete the video."""
    pid = running.stack.processes["gateway"].pid
    rss_before = psutil.Process(pid).memory_info().rss
    reset_hwm(pid)
    cpu_before = cpu_seconds(pid)
    sampler = Sampler(pid, running.storage / ("tmp" if way == "multipart" else "resumable"), size)
    spy = start_py_spy(pid, profile) if profile else None
    started = time.perf_counter()
    sampling = asyncio.create_task(sampler.run(started))
    try:
        run = await asyncio.to_thread(WAYS[way], running.url, running.api_key, clip, {"qualities": "144p"})
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        if spy is not None:
            stop_py_spy(spy)
    if run.status != 202:
        raise RuntimeError(f"the upload was refused: {run.status} {run.body}")
    gateway_cpu = cpu_seconds(pid) - cpu_before
    hwm = vm_hwm_bytes(pid)
    await delete_video(running, str(run.body["id"]))
    wall = run.time_total_s - run.time_pretransfer_s
    stored = None if sampler.stored_at is None else sampler.stored_at - run.time_pretransfer_s
    peak_sampled = max(rss for _, rss in sampler.rss)
    return UploadFigures(
        size_bytes=size,
        wall_s=wall,
        mb_per_s=size / wall / MB,
        stored_s=stored,
        stored_mb_per_s=None if not stored else size / stored / MB,
        gateway_cpu_s=gateway_cpu,
        client_cpu_s=run.cpu_s,
        client_max_rss_mib=run.max_rss_mib,
        rss_before_mib=rss_before / MIB,
        peak_rss_hwm_mib=hwm / MIB,
        peak_rss_sampled_mib=peak_sampled / MIB,
        growth_mib=(max(hwm, peak_sampled) - rss_before) / MIB,
    )


async def delete_video(running: Running, video_id: str) -> None:
    async with running.client() as http:
        response = await http.delete(f"/v1/videos/{video_id}")
        if response.status_code != 204:
            raise RuntimeError(f"could not delete {video_id}: {response.status_code} {response.text}")


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = Path(sys.executable).parent / "py-spy"
    argv = [
        str(spy),
        "record",
        "-p",
        str(pid),
        "-r",
        "250",
        "-o",
        str(out),
        "--nonblocking",
        *(["--format", "raw"] if out.suffix == ".txt" else []),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the first byte arrives
    return proc


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(2)  # SIGINT: py-spy writes the flame graph and exits
    proc.wait(30)


async def warm_up(running: Running, workdir: Path) -> None:
    """One small upload first, so that lazy imports and first-request set-up are not counted."""
    small = make_clip(workdir / "warm.mp4", width=256, height=144, duration=1.0)
    run = await asyncio.to_thread(curl_upload, running.url, running.api_key, small, {})
    if run.status != 202:
        raise RuntimeError(f"the warm-up upload was refused: {run.status} {run.body}")
    await delete_video(running, str(run.body["id"]))


async def measure(args: argparse.Namespace, workdir: Path) -> list[UploadFigures]:
    clip, size = make_big_clip(workdir / "big.mkv", args.size_mib * MIB)
    env = {"VIDQ_MAX_UPLOAD_BYTES": str(max(size * 2, 10 * 2**30))}
    async with bench_stack(env) as running:
        if not args.with_workers:
            for service in ("transcoder", "thumbnailer"):
                await running.stack.stop(service)
        await warm_up(running, workdir)
        results = []
        for _ in range(args.runs):
            results.append(await upload_once(running, clip, size, way=args.way))
        if args.profile:
            out = RESULTS / f"upload-gateway{'' if args.way == 'multipart' else '-' + args.way}.txt"
            await upload_once(running, clip, size, profile=out, way=args.way)
            print(f"py-spy flame graph of one upload: {out}")
        return results


def summarize(results: list[UploadFigures], args: argparse.Namespace) -> dict[str, Any]:
    best = max(results, key=lambda r: r.mb_per_s)
    return {
        "size_mib": args.size_mib,
        "runs": [asdict(r) for r in results],
        "median_mb_per_s": statistics.median(r.mb_per_s for r in results),
        "best_mb_per_s": best.mb_per_s,
        "peak_rss_mib": max(max(r.peak_rss_hwm_mib, r.peak_rss_sampled_mib) for r in results),
        "rss_before_mib": results[0].rss_before_mib,
        "workers_running": args.with_workers,
        "way": args.way,
        "client": {
            "multipart": "curl -F (subprocess), Expect: 100-continue off",
            "tus": "POST /v1/tus (httpx), then one PATCH by curl -T (subprocess)",
            "cli": "vidq upload --resumable (subprocess), 8 MiB a PATCH",
        }[args.way],
    }


def print_table(results: list[UploadFigures]) -> None:
    rows = [
        [
            i + 1,
            f"{r.size_bytes / MIB:,.0f}",
            r.wall_s,
            r.mb_per_s,
            r.stored_mb_per_s if r.stored_mb_per_s is not None else "-",
            r.gateway_cpu_s,
            r.client_cpu_s,
            r.rss_before_mib,
            r.peak_rss_hwm_mib,
            r.peak_rss_sampled_mib,
            r.growth_mib,
        ]
        for i, r in enumerate(results)
    ]
    header = ["run", "MiB", "wall s", "MB/s", "MB/s to disk", "gw CPU s", "curl CPU s",
              "RSS before MiB", "peak VmHWM MiB", "peak sampled MiB", "growth MiB"]  # fmt: skip
    print(table(rows, header))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upload", description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the uploaded file (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="uploads measured, one after the other")
    parser.add_argument("--with-workers", action="store_true", help="keep the transcoder and thumbnailer up")
    parser.add_argument("--profile", action="store_true", help="also record one upload with py-spy")
    parser.add_argument(
        "--way",
        choices=sorted(WAYS),
        default="multipart",
        help="multipart (curl -F, default), tus (one PATCH by curl) or cli (vidq upload --resumable)",
    )
    args = parser.parse_args()
    with exclusive(NAME), tempfile.TemporaryDirectory(prefix="vidq-bench-upload-") as workdir:
        results = asyncio.run(measure(args, Path(workdir)))
    print_table(results)
    figures = summarize(results, args)
    print(
        f"\nmedian {figures['median_mb_per_s']:,.0f} MB/s (target >= 200); "
        f"gateway peak RSS {figures['peak_rss_mib']:,.1f} MiB (target < 150 MB)"
    )
    report(NAME if args.way == "multipart" else f"{NAME}-{args.way}", figures)


if __name__ == "__main__":
    main()
