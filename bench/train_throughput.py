"""Benchmark: training steps/s, clips/s and the share of step time spent waiting for data, real pipeline.

    python bench/train_throughput.py [--methods xmodal,temporal-av] [--batch 32] [--steps 60] [--videos 48]

Builds a folder dataset of textured 10 s videos with `avtools build-dataset`, then runs `avcl.train.loop.train`
(R(2+1)D-18, 16x112x112, the method's preset otherwise) with one loader worker per CPU core and reads
metrics.jsonl: medians over the steps after the first `--warmup`. The target (issue 5): data wait under 10 % of
step time for xmodal and temporal-av on a GPU. Appends to BENCHMARKS.md. `--width 4 --batch 4 --steps 4`
checks the script on a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loader_throughput import write_textured  # noqa: E402


def build_dataset(work: Path, videos: int) -> Path:
    for i in range(videos):
        folder = work / "src" / "train" / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        write_textured(folder / f"v{i}.mp4", i)
    out = work / "ds"
    subprocess.run([sys.executable, "-m", "avtools", "build-dataset", "folder", "--source", str(work / "src"),
                    "--out", str(out), "--fps", "16", "--short-side", "128", "--samples-per-shard", "8",
                    "--no-card"], check=True, stdout=subprocess.DEVNULL)
    return out


def measure(method: str, data: Path, run: Path, args) -> dict:
    from avcl.train.config import load
    from avcl.train.loop import train

    overrides = [f'data.train=["{data}"]', f"data.batch_size={args.batch}", f"run.max_steps={args.steps}",
                 f"data.workers={os.cpu_count()}", "run.log_every=1", f"method.width={args.width}",
                 f"run.checkpoint_every={args.steps}", f"data.epoch_samples={args.batch * args.steps}"]
    if args.compile:
        overrides.append("run.compile=true")
    train(load(method, overrides=overrides), run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][args.warmup:]
    clips = statistics.median(r["clips_per_s"] for r in rows)
    wait = statistics.median(r["data_wait"] for r in rows)
    return {"clips_per_s": clips, "data_wait": wait}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="xmodal,temporal-av,avcl,simclr,tcgl")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    args.warmup = min(args.warmup, args.steps - 1)
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    lines = [f"### training throughput, real pipeline ({time.strftime('%Y-%m-%d')}, {device}, {os.cpu_count()} "
             f"loader workers, batch {args.batch}, width {args.width}, {args.steps} steps)", "",
             "| method | clips/s | data wait share of step |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = build_dataset(work, args.videos)
        for method in args.methods.split(","):
            result = measure(method, data, work / f"run-{method}", args)
            lines.append(f"| {method} | {result['clips_per_s']:.0f} | {result['data_wait']:.1%} |")
            print(lines[-1], flush=True)
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        f.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
