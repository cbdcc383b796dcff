"""The learning check: every method pre-trained with `--preset demo` on the demo data must beat the same encoders
at random initialisation on the linear probe (and kNN) of video features.

    python bench/learning.py [--methods avcl,simclr,tcgl,temporal-av,xmodal] [--steps 300] [--out /tmp/learning]

Runs `avtools demo` per method (the same pipeline: build-dataset folder, train --preset demo, eval --preset
demo linear and knn) and appends the table, with the machine, to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from avtools.demo import DemoOptions, run_demo

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("avcl", "simclr", "tcgl", "temporal-av", "xmodal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--clips-per-class", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("/tmp/avtools-learning"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    lines = []
    for method in args.methods.split(","):
        started = time.time()
        options = DemoOptions(out=args.out / method, method=method, clips_per_class=args.clips_per_class,
                              steps=args.steps, device=args.device)
        rows = {r["protocol"]: r for r in run_demo(options)}
        minutes = (time.time() - started) / 60
        lines.append(f"| {method} | {rows['linear']['random']:.1f} | {rows['linear']['pretrained']:.1f} | "
                     f"{rows['linear']['gain']:+.1f} | {rows['knn']['random']:.1f} | {rows['knn']['pretrained']:.1f} | "
                     f"{rows['knn']['gain']:+.1f} | {minutes:.1f} |")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else \
        f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    table = ["", f"## Learning check ({time.strftime('%Y-%m-%d')}, {device})", "",
             f"`python bench/learning.py --steps {args.steps}`: demo data ({args.clips_per_class} clips per class, 4 "
             "classes, 25 % held out), `--preset demo` encoders; video features; linear = top-1 of the linear "
             "probe, kNN = top-1 at k = 5; random = the same encoders at random initialisation.", "",
             "| method | linear random | linear pre-trained | gain | kNN random | kNN pre-trained | gain | minutes |",
             "|---|---|---|---|---|---|---|---|", *lines]
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
