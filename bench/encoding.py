"""Encoding settings: what x264's preset, CRF and bitrate cap cost in time and bytes, and give in quality.

vidq encodes every rung with libx264 ``-preset veryfast -crf 23`` capped by the rung's
``-maxrate`` (``transcoder/encode.py``). This benchmark encodes one rung through the transcoder's
own command line and prints wall time, CPU-seconds, bytes and SSIM against the source, so the
defaults are a measured choice:

* presets x CRFs, on the time-to-ready source (a moving pattern: the cap never binds);
* the cap: the rung's ``-maxrate`` (and ``-bufsize``, twice it) halved, as shipped, doubled and
  removed, at the default preset and CRF, on a grainy source (the same pattern under heavy film
  grain, which CRF alone would spend many times the bytes on): what the cap saves and what it
  costs in quality where it binds.

    python -m bench.encoding                          # 720p, 6 presets x 3 CRFs, then 4 caps
    python -m bench.encoding --rung 360p --presets veryfast,medium --crfs 23 --caps 1,off
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import exclusive, report, table
from bench.time_to_ready import CRF, PRESET, commands, make_source, run_by_hand, ssim
from shared.commands import TranscodeRendition
from shared.ladder import Quality
from transcoder.encode import MAXRATE_KBPS, EncodeProfile, argv

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
CRFS = (20, 23, 26)
CAPS = ("0.5", "1", "2", "off")
#: Heavy temporal film grain over the pattern: what CRF alone would spend many times the bytes on.
GRAIN = "noise=alls=40:allf=t+u"


def with_cap(args: list[str], kbps: int | None) -> list[str]:
    """The transcoder's command with the rung's cap set to ``kbps`` (``None``: no cap at all)."""
    changed: list[str] = []
    flags = iter(args)
    for flag in flags:
        if flag in ("-maxrate", "-bufsize"):
            next(flags)  # the shipped value
            if kbps is not None:
                changed += [flag, f"{kbps if flag == '-maxrate' else 2 * kbps}k"]
        else:
            changed.append(flag)
    return changed


def encode_with_caps(
    source: Path, out: Path, cmd: TranscodeRendition, caps: list[str], duration: float
) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """One encode per cap (a factor of the rung's ``-maxrate``, or ``off``); rows and figures."""
    rows: list[list[Any]] = []
    figures: list[dict[str, Any]] = []
    shipped = MAXRATE_KBPS[cmd.quality]
    for cap in caps:
        kbps = None if cap == "off" else round(shipped * float(cap))
        output = out / f"cap-{cap}.mp4"
        command = with_cap(argv(str(source), str(output), cmd, EncodeProfile(preset=PRESET, crf=CRF)), kbps)
        me = psutil.Process()
        cpu0, t0 = me.cpu_times(), time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall, cpu1 = time.perf_counter() - t0, me.cpu_times()
        cpu = cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system
        size, quality = output.stat().st_size, ssim(output, source, cmd.width, cmd.height)
        rate = size * 8 / 1000 / duration
        label = "off" if kbps is None else f"{kbps:,} kbit/s" + (" (shipped)" if kbps == shipped else "")
        rows.append([label, round(wall, 2), round(cpu, 2), size // 1024, f"{rate:,.0f}", f"{quality:.4f}"])
        figures.append({"maxrate_kbps": kbps, "wall_s": wall, "cpu_s": cpu, "bytes": size, "kbps": rate,
                        "ssim": quality})  # fmt: skip
    return rows, figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rung", default="720p", help="the rung to encode (default 720p)")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--crfs", default=",".join(str(c) for c in CRFS))
    parser.add_argument("--caps", default=",".join(CAPS), help="factors of the rung's -maxrate, or off")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of 1080p30 source")
    args = parser.parse_args()
    rung = Quality(args.rung)
    with exclusive("encoding"), tempfile.TemporaryDirectory(prefix="vidq-enc-") as tmp:
        out = Path(tmp)
        source = make_source(out / "source-1080p.mp4", args.duration)
        cmd = next(c for c in commands(args.duration) if c.quality == rung)
        rows, figures = [], []
        for preset in args.presets.split(","):
            for crf in (int(c) for c in args.crfs.split(",")):
                outcome = run_by_hand(
                    f"{preset}-{crf}", source, out, [cmd], together=1, once=True, preset=preset, crf=crf
                )
                output = outcome.outputs[rung]
                size, quality = output.stat().st_size, ssim(output, source, cmd.width, cmd.height)
                kbps = size * 8 / 1000 / args.duration
                rows.append(
                    [
                        preset,
                        crf,
                        outcome.wall_s,
                        outcome.cpu_s,
                        size // 1024,
                        f"{kbps:,.0f}",
                        f"{quality:.4f}",
                    ]
                )
                figures.append(
                    {"preset": preset, "crf": crf, "wall_s": outcome.wall_s, "cpu_s": outcome.cpu_s,
                     "bytes": size, "kbps": kbps, "ssim": quality}
                )  # fmt: skip
        print(f"\n{rung.value} ({cmd.width}x{cmd.height}) from a {args.duration:.0f} s 1080p30 source, "
              f"maxrate as in transcoder/encode.py\n")  # fmt: skip
        print(table(rows, ["preset", "crf", "wall s", "CPU s", "KiB", "kbit/s", "SSIM"]))
        caps = [c for c in args.caps.split(",") if c]
        cap_rows: list[list[Any]] = []
        cap_figures: list[dict[str, Any]] = []
        if caps:
            grainy = make_source(out / "source-grainy-1080p.mp4", args.duration, then=GRAIN)
            cap_rows, cap_figures = encode_with_caps(grainy, out, cmd, caps, args.duration)
            print(f"\n{rung.value} from a {args.duration:.0f} s grainy 1080p30 source, {PRESET} CRF {CRF}, "
                  f"-maxrate (-bufsize twice it):\n")  # fmt: skip
            print(table(cap_rows, ["maxrate", "wall s", "CPU s", "KiB", "kbit/s", "SSIM"]))
        report(
            f"encoding-{rung.value}",
            {"rung": rung.value, "duration_s": args.duration, "runs": figures, "caps": cap_figures},
        )


if __name__ == "__main__":
    main()
