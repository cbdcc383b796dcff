"""Benchmark: evaluation memory at scale (peak RSS, each measurement in its own process).

    python bench/eval_scale.py [--bank 184554] [--queries 15446] [--videos 12] [--clips 2 5 10]

1. kNN (k = 1, 20, 200, top-1 and top-5) and retrieval (R@1..50) on 200,000 x 512 float32 features, VGG-Sound's
   size (184,554 train + 15,446 test), 309 classes, features on a coarse grid so exact ties are common: avcl's
   stable top-k against the full stable sort it replaced (1,024 queries per block), same features, same
   neighbours (checked).
2. `avtools eval ucf101 --protocol linear` on UCF101-layout videos (320x240, 25 fps, 4 s) with R(2+1)D-18 at
   its published width, 10x16x112x112 clips per video and fewer: peak RSS with clips through the encoder in
   blocks of 16 (EvalOptions.max_clips on CPU), against the whole batch at once (max_clips = 10,000), one loader-free
   process each (`--workers 0`).
3. The feature cache of a UCF101-sized evaluation (13,320 videos, 101 classes, 512-d features, 48 px thumbnails,
   the three official folds): its size on disk, then, in a fresh process, its load time and peak RSS and the kNN
   protocol (k = 20) on fold 1 from it (`--cache-videos`).
Appends a section to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def features(bank: int, queries: int, dim: int = 512, classes: int = 309):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randint(-2, 3, (bank + queries, dim), generator=g).float()
    y = torch.randint(0, classes, (bank + queries,), generator=g)
    return x[:bank], y[:bank], x[bank:], y[bank:]


def full_sort_neighbours(queries, bank, k: int, chunk: int = 1024):
    """The previous implementation: every block's similarities sorted whole, stably."""
    import torch
    import torch.nn.functional as F

    values, indices = [], []
    for start in range(0, len(queries), chunk):
        sims = F.normalize(queries[start:start + chunk].float(), dim=1) @ F.normalize(bank.float(), dim=1).t()
        v, i = torch.sort(sims, dim=1, descending=True, stable=True)
        values.append(v[:, :k])
        indices.append(i[:, :k])
    return torch.cat(values), torch.cat(indices)


def run_neighbours(kind: str, bank: int, queries: int) -> dict:
    """kNN votes and retrieval hit rates in this process; its peak RSS."""
    import torch

    from avcl.eval import classify
    from avcl.neighbours import top_neighbours, votes

    torch.set_num_threads(2)
    x, y, q, qy = features(bank, queries)
    started = time.time()
    finder = top_neighbours if kind == "stable-top-k" else full_sort_neighbours
    top, index = finder(q, x, 200)
    metrics = {}
    for k in (1, 20, 200):
        scores = votes(top[:, :k], y[index[:, :k]], 309, 0.07).numpy()
        metrics[f"top1@k{k}"] = 100 * classify.topk_accuracy(scores, qy.numpy(), 1)
        metrics[f"top5@k{k}"] = 100 * classify.topk_accuracy(scores, qy.numpy(), 5)
    same = y[index[:, :50]] == qy[:, None]
    metrics.update({f"R@{k}": 100 * float(same[:, :k].any(1).float().mean()) for k in (1, 5, 10, 20, 50)})
    return {"kind": kind, "seconds": time.time() - started, "peak_gb": peak_gb(), "metrics": metrics,
            "index_digest": int(index[:, :50].sum())}


def write_feature_cache(path: str, videos: int) -> dict:
    """A cache file as `avtools eval` writes it for a UCF101-sized set (synthetic features); its bytes."""
    import numpy as np

    from avcl.extract import THUMB, Features

    rng = np.random.default_rng(0)
    labels = np.arange(videos) % 101
    folds = rng.integers(0, 2, (videos, 3)).astype(np.int64)  # 0 train, 1 test in each official split
    centres = rng.normal(0, 1, (101, 512)).astype(np.float32)
    Features(keys=np.array(sorted(f"v_Class{label:03d}_g{i % 25 + 1:02d}_c{i:05d}" for i, label in enumerate(labels))),
             labels=labels, folds=folds,
             features=centres[labels] + rng.normal(0, 2, (videos, 512)).astype(np.float32),
             thumbs=rng.integers(0, 256, (videos, THUMB, THUMB, 3), dtype=np.uint8),
             splits=np.array(["video"] * videos)).save(Path(path))
    return {"bytes": Path(path).stat().st_size}


def load_feature_cache(path: str) -> dict:
    """Load the cache file and run kNN (k = 20) on fold 1 from it, in this process; times and peak RSS."""
    import torch

    from avcl.extract import Features
    from avcl.neighbours import knn_predict

    torch.set_num_threads(2)
    started = time.time()
    cached = Features.load(Path(path))
    loaded = time.time() - started
    train, test = cached.folds[:, 0] == 0, cached.folds[:, 0] == 1
    bank, queries = (torch.nn.functional.normalize(torch.from_numpy(cached.features[m]), dim=1) for m in (train, test))
    started = time.time()
    predicted = knn_predict(bank, torch.from_numpy(cached.labels[train]), queries, 101, k=20)
    knn = time.time() - started
    top1 = float((predicted.numpy() == cached.labels[test]).mean())
    return {"load_s": loaded, "knn_s": knn, "top1": top1, "peak_gb": peak_gb(), "videos": len(cached)}


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def write_ucf_layout(root: Path, videos: int) -> tuple[Path, Path]:
    from tests.support.timecoded import write_timecoded

    classes = ["ClassA", "ClassB", "ClassC"]
    lists, source = root / "ucfTrainTestlist", root / "UCF-101"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(classes)))
    per_class = videos // len(classes)
    names = {c: [f"{c}/v_{c}_g{i + 1:02d}_c01.avi" for i in range(per_class)] for c in classes}
    for c in classes:
        (source / c).mkdir(parents=True)
        for name in names[c]:
            write_timecoded(source / name, seconds=4, fps=25, size=(320, 240))
    for fold in (1, 2, 3):
        train = [f"{n} {k + 1}" for k, c in enumerate(classes) for i, n in enumerate(names[c]) if i % 3 != fold - 1]
        test = [n for c in classes for i, n in enumerate(names[c]) if i % 3 == fold - 1]
        (lists / f"trainlist0{fold}.txt").write_text("\r\n".join(train) + "\r\n")
        (lists / f"testlist0{fold}.txt").write_text("\r\n".join(test) + "\r\n")
    return source, lists


def run_eval(data: str, clips: int, max_clips: int) -> dict:
    """`avtools eval ucf101 --protocol linear` (R(2+1)D-18, width 64, random init) in this process."""
    import torch

    from avcl.eval.engine import EvalOptions
    from avcl.eval.evaluate import EvalRequest, evaluate

    torch.set_num_threads(2)
    options = EvalOptions(data=data, batch_size=16, workers=0, cache_dir=Path(tempfile.mkdtemp()), max_clips=max_clips)
    request = EvalRequest(dataset="ucf101", data=data, protocol="linear", modality="video", options=options,
                          overrides=[f"protocol.clips={clips}", "method.width=64"])
    started = time.time()
    rows, _ = evaluate(request, log=lambda *_: None)
    return {"clips": clips, "max_clips": max_clips, "seconds": time.time() - started, "peak_gb": peak_gb(),
            "top1": rows[0].metrics["top1"]}


LIMIT_GB = 16  # address-space cap of each measured process: a peer past it fails instead of starving the machine


def in_subprocess(call: str, *args) -> dict:
    """`call(*args)` in a fresh process capped at LIMIT_GB; {"failed": reason} when it runs out of memory."""
    code = (f"import json, resource, sys; sys.path.insert(0, {str(ROOT)!r}); "
            f"resource.setrlimit(resource.RLIMIT_AS, ({LIMIT_GB} << 30, {LIMIT_GB} << 30)); "
            f"from bench.eval_scale import {call}; print(json.dumps({call}(*{args!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        if "memory" not in last.lower() and "alloc" not in last.lower():
            raise SystemExit(f"{call}{args} failed:\n{done.stderr[-3000:]}")
        return {"failed": f"out of memory under a {LIMIT_GB} GB cap ({last[:120]})"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak(result: dict) -> str:
    return f"> {LIMIT_GB} (failed: {result['failed']})" if "failed" in result else f"{result['peak_gb']:.2f}"


def seconds(result: dict) -> str:
    return "-" if "failed" in result else f"{result['seconds']:.0f}"


def neighbour_lines(args) -> list[str]:
    neighbours = [in_subprocess("run_neighbours", kind, args.bank, args.queries) for kind in ("stable-top-k", "full-sort")]
    same = "failed" in neighbours[1] or (neighbours[0]["index_digest"] == neighbours[1]["index_digest"]
                                         and neighbours[0]["metrics"] == neighbours[1]["metrics"])
    return [f"kNN (k = 1, 20, 200) and retrieval (R@1-50), {args.bank:,} gallery x {args.queries:,} queries x 512-d,"
            f" 309 classes, many exact ties; the same neighbours and metrics both ways (where both ran): {same}", "",
            "| neighbour search | peak RSS GB | seconds |", "|---|---|---|",
            *(f"| {kind} | {peak(n)} | {seconds(n)} |" for kind, n in zip(("stable-top-k", "full-sort"), neighbours))]


def cache_lines(videos: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "features.npz")
        written = in_subprocess("write_feature_cache", path, videos)
        run = in_subprocess("load_feature_cache", path)
    return ["", f"feature cache of a UCF101-sized evaluation: {videos:,} videos x 512-d float32 + 48 px thumbnails, "
            "one .npz as `avtools eval` writes it; loaded in a fresh process, then kNN (k = 20) on fold 1", "",
            "| cache on disk MB | load s | kNN fold 1 s | peak RSS GB | kNN top-1 (synthetic) |", "|---|---|---|---|---|",
            f"| {written['bytes'] / 1e6:.0f} | {run['load_s']:.2f} | {run['knn_s']:.2f} | {run['peak_gb']:.2f} | "
            f"{run['top1']:.3f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", type=int, default=184554)
    parser.add_argument("--queries", type=int, default=15446)
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--clips", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--skip-eval", action="store_true", help="leave out the UCF101 linear evaluation (part 2)")
    parser.add_argument("--skip-neighbours", action="store_true", help="leave out the VGG-Sound-sized kNN (part 1)")
    parser.add_argument("--cache-videos", type=int, default=13320, help="videos of the feature cache (part 3; 0: skip)")
    args = parser.parse_args()
    lines = [f"### evaluation memory at scale ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
             f"{__import__('os').cpu_count()} cores, CPU, peak RSS per process)", ""]
    if not args.skip_neighbours:
        lines += neighbour_lines(args)
    if not args.skip_eval:
        with tempfile.TemporaryDirectory() as tmp:
            source, lists = write_ucf_layout(Path(tmp), args.videos)
            data = str(Path(tmp) / "ucf")
            subprocess.run([sys.executable, "-m", "avtools", "build-dataset", "ucf101", "--source", str(source),
                            "--annotations", str(lists), "--out", data, "--no-card", "--workers", "2"],
                           check=True, cwd=ROOT, capture_output=True)
            runs = [in_subprocess("run_eval", data, clips, 16) for clips in args.clips]
            runs.append(in_subprocess("run_eval", data, max(args.clips), 10_000))
        lines += ["", f"`avtools eval ucf101 --protocol linear`, {args.videos} UCF101-layout videos, R(2+1)D-18 "
                  "(width 64), clips of 16x112x112, one process, no loader workers", "",
                  "| clips per video | clips through the encoder at once | peak RSS GB | seconds |", "|---|---|---|---|"]
        blocks = [16] * len(args.clips) + [10_000]
        lines += [f"| {clips} | {'whole batch' if block >= 10_000 else block} | {peak(r)} | {seconds(r)} |"
                  for clips, block, r in zip([*args.clips, max(args.clips)], blocks, runs)]
    if args.cache_videos:
        lines += cache_lines(args.cache_videos)
    text = "\n".join(lines) + "\n"
    print(text)
    with open(ROOT / "BENCHMARKS.md", "a") as out:
        out.write("\n" + text)


if __name__ == "__main__":
    main()
