"""Encoding settings: what x264's preset and CRF cost in time and bytes, and give in quality.

vidq encodes every rung with libx264 ``-preset veryfast -crf 23`` capped by the rung's
``-maxrate`` (``transcoder/encode.py``). This benchmark encodes one rung of the time-to-ready
source with other presets and CRFs through the transcoder's own command line, and prints wall
time, CPU-seconds, bytes and SSIM against the source, so the defaults are a measured choice.

    python -m bench.encoding                          # 720p, 6 presets x 3 CRFs
    python -m bench.encoding --rung 360p --presets veryfast,medium --crfs 23
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import exclusive, report, table
from bench.time_to_ready import commands, make_source, run_by_hand, ssim
from shared.ladder import Quality

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
CRFS = (20, 23, 26)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rung", default="720p", help="the rung to encode (default 720p)")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--crfs", default=",".join(str(c) for c in CRFS))
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
        report(f"encoding-{rung.value}", {"rung": rung.value, "duration_s": args.duration, "runs": figures})


if __name__ == "__main__":
    main()
