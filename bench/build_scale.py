"""Benchmark: planning, resume and inspection of a Kinetics-700-sized build on one machine.

    python bench/build_scale.py [--rows 650000] [--earlier-runs 40]

Writes a synthetic Kinetics-700-format CSV of `--rows` rows (the 700 real class names, random YouTube ids and
windows, 95% train / 5% val) and a ledger in which every clip is already settled, as a finished build leaves
it: one part per 500-clip shard (3% of the clips failed for good, 1% for a retryable reason that has since
succeeded) plus the failure parts of `--earlier-runs` resumed runs. Then it times, each as its own process
with its peak RSS:

1. the first rerun (`avtools build-dataset kinetics-700 --annotations CSV`): plan, resume, ledger.parquet,
   dataset.json, and the compaction of the ledger parts;
2. a second rerun (nothing left to do: writes nothing);
3. `avtools inspect OUT`.

Targets: a rerun under 60 s and 2 GB, inspect under 10 s, dataset.json small. Appends a section to
BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import avtools_manifests  # noqa: E402
from avcl.storage import LocalStore  # noqa: E402
from avtools.ledger import Ledger, LedgerRow  # noqa: E402
from avtools.recipes.kinetics import kinetics_clip_id  # noqa: E402

PER_SHARD = 500


def synthetic_rows(count: int, seed: int = 0) -> list[tuple[str, str, int, str]]:
    """(label, youtube_id, start, split) rows with distinct clip ids."""
    rng = random.Random(seed)
    classes = avtools_manifests.text("kinetics/k700_classes.txt").split("\n")
    classes = [c for c in classes if c.strip()]
    alphabet = string.ascii_letters + string.digits + "-_"
    return [(classes[i % len(classes)], "".join(rng.choices(alphabet, k=11)), rng.randrange(0, 290),
             "val" if rng.random() < 0.05 else "train") for i in range(count)]


def write_csv(path: Path, rows) -> None:
    with open(path, "w") as f:
        f.write("label,youtube_id,time_start,time_end,split\n")
        f.writelines(f'"{label}",{yid},{start},{start + 10},{split}\n' for label, yid, start, split in rows)


def write_settled_ledger(out: Path, rows, earlier_runs: int, seed: int = 1) -> int:
    """Ledger parts as a finished build leaves them; returns their number."""
    rng = random.Random(seed)
    store, ledger = LocalStore(out), Ledger(LocalStore(out), "")
    shard_rows: dict[str, list[LedgerRow]] = {}
    failures: list[LedgerRow] = []
    for label, yid, start, split in rows:
        clip_id = kinetics_clip_id(yid, start, start + 10)
        luck = rng.random()
        if luck < 0.03:
            failures.append(LedgerRow(clip_id, split, label, "failed", "unavailable", "Video unavailable"))
            continue
        if luck < 0.04:  # failed once for a retryable reason, then built
            failures.append(LedgerRow(clip_id, split, label, "failed", "network", "timed out", retryable=True,
                                      finished_at=0.0))
        shard_rows.setdefault(split, []).append(LedgerRow(clip_id, split, label, "ok", bytes_downloaded=900_000,
                                                          seconds=2.5))
    for split, ok in shard_rows.items():
        for seq in range(0, len(ok), PER_SHARD):
            ledger.commit_shard(f"{split}-{seq // PER_SHARD:06d}.tar", ok[seq:seq + PER_SHARD])
    per_run = -(-len(failures) // max(earlier_runs, 1))
    for run in range(earlier_runs):
        ledger.run = f"20260101-{run:06d}"
        for row in failures[run * per_run:(run + 1) * per_run]:
            ledger.add(row)
        ledger.flush()
    return len(store.list("ledger/"))


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of `cmd` run as a child process (RUSAGE_CHILDREN: the largest so far,
    so each measurement runs in its own fresh helper process)."""
    code = ("import resource, subprocess, sys, time; t = time.time(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "print(time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    seconds, peak_kb = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True,
                                      text=True).stdout.split()
    return float(seconds), float(peak_kb) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=650_000)
    parser.add_argument("--earlier-runs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = synthetic_rows(args.rows)
        write_csv(work / "k700.csv", rows)
        parts_before = write_settled_ledger(work / "out", rows, args.earlier_runs)
        demo = work / "demo"
        subprocess.run([sys.executable, "-m", "avtools", "build-dataset", "demo", "--out", str(demo), "--no-card"],
                       check=True, capture_output=True)
        os.replace(next(demo.glob("train-*.tar")), work / "out" / "train-000000.tar")  # what inspect opens
        build = [sys.executable, "-m", "avtools", "build-dataset", "kinetics-700", "--annotations",
                 str(work / "k700.csv"), "--out", str(work / "out"), "--no-card"]
        first = timed(build)
        parts_after = len(list((work / "out" / "ledger").iterdir()))
        second = timed(build)
        inspect = timed([sys.executable, "-m", "avtools", "inspect", str(work / "out")])
        sizes = {name: (work / "out" / name).stat().st_size for name in ("dataset.json", "ledger.parquet")}
    lines = [f"\n### build planning, resume and inspect at scale ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
             f"{os.cpu_count()} cores, {args.rows:,} Kinetics-700-format rows all settled, {parts_before:,} ledger "
             f"parts from {args.earlier_runs} earlier runs)\n",
             "| step | wall s | peak RSS GB | target |", "|---|---|---|---|",
             f"| first rerun: plan, resume, ledger.parquet, dataset.json, compaction | {first[0]:.1f} | {first[1]:.2f} | < 60 s, < 2 GB |",
             f"| second rerun (nothing to do) | {second[0]:.1f} | {second[1]:.2f} | < 60 s, < 2 GB |",
             f"| `avtools inspect` | {inspect[0]:.1f} | {inspect[1]:.2f} | < 10 s |",
             f"\nledger parts: {parts_before:,} before the first rerun, {parts_after:,} after it; dataset.json "
             f"{sizes['dataset.json'] / 1e3:.0f} kB, ledger.parquet {sizes['ledger.parquet'] / 1e6:.1f} MB\n"]
    text = "\n".join(lines)
    print(text)
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
