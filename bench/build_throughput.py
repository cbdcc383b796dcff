"""Benchmark: build the same HTTP-served clips with avtools and, if installed, with video2dataset.

    python bench/build_throughput.py [--clips 40] [--v2d-python PATH/TO/venv/bin/python]

`bash bench/video2dataset_venv.sh /tmp/v2d` makes the video2dataset venv (its PyPI release without its pins).

Sources are 120 s timecoded H.264+AAC videos served by a range-capable server on 127.0.0.1; each clip is a
10 s window at a random position. Both tools trim to the window, resample to 16 fps, short side 128 and 16 kHz
mono audio. Reports clips/s, the wall-time ratio, and bytes served per clip against the clip's own encoded
size, counted two ways: the source's bytes per second times 10 s, and the padded section file yt-dlp wrote
(from the ledger). Sources are interleaved, faststart mp4 (as streamed files are). Appends a row to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.httpserver import MediaServer  # noqa: E402
from tests.support.timecoded import write_timecoded  # noqa: E402

SOURCE_SECONDS, CLIP_SECONDS, N_SOURCES = 120, 10, 4


def make_sources(root: Path) -> list[str]:
    names = []
    for i in range(N_SOURCES):
        name = f"src{i}"
        write_timecoded(root / f"{name}.mp4", seconds=SOURCE_SECONDS, size=(480, 360), fps=25)
        names.append(name)
    return names


def clips(names: list[str], n: int) -> list[tuple[str, int]]:
    rng = random.Random(0)
    starts = rng.sample(range(SOURCE_SECONDS - CLIP_SECONDS), -(-n // len(names)))  # distinct clips
    return [(names[i % len(names)], starts[i // len(names)]) for i in range(n)]


def run_avtools(server, work: Path, plan, workers: int) -> tuple[float, float]:
    """Wall seconds and mean bytes of the section files yt-dlp wrote."""
    csv = work / "ann.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n" + "".join(
        f"bowling,{name},{s},{s + CLIP_SECONDS},train\n" for name, s in plan))
    cmd = [sys.executable, "-m", "avtools", "build-dataset", "kinetics-sounds32", "--out", str(work / "avtools"),
           "--annotations", str(csv), "--url-template", server.url("{youtube_id}.mp4"), "--workers", str(workers),
           "--no-card"]
    started = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.time() - started
    info = json.loads((work / "avtools" / "dataset.json").read_text())
    assert info["counts"]["available"] == len(plan), info["counts"]
    import pyarrow.parquet as pq

    section_bytes = pq.read_table(work / "avtools" / "ledger.parquet", columns=["bytes_downloaded"]).column(0)
    return elapsed, sum(section_bytes.to_pylist()) / len(plan)


def run_video2dataset(python: str, server, work: Path, plan, workers: int) -> float:
    table = work / "v2d.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"url": [server.url(f"{name}.mp4") for name, _ in plan],
                             "clips": [[[float(s), float(s + CLIP_SECONDS)]] for _, s in plan]}), table)
    # video2dataset 1.3.0 (PyPI) fails in every video/audio subsampler (`'ResolutionSubsampler' object has no
    # attribute 'encode_formats'`, the same for FrameSubsampler and AudioRateSubsampler), so it only clips:
    # exact cuts re-encoded at the source size, fps and audio rate; less work than avtools' output
    config = work / "v2d.yaml"
    config.write_text(f"""subsampling:
    ClippingSubsampler:
        args:
            min_length: 0.0
            max_length: 20.0
            precision: "exact"
reading:
    yt_args:
        download_size: 360
        download_audio_rate: 44100
    timeout: 60
    sampler: null
storage:
    number_sample_per_shard: 100
    oom_shard_count: 5
    captions_are_subtitles: False
distribution:
    processes_count: {workers}
    thread_count: {workers}
    subjob_size: 1000
    distributor: "multiprocessing"
""")
    code = ("from video2dataset import video2dataset; video2dataset(url_list=%r, input_format='parquet', "
            "output_format='webdataset', output_folder=%r, url_col='url', clip_col='clips', config=%r)"
            % (str(table), str(work / "v2d"), str(config)))
    started = time.time()
    subprocess.run([python, "-c", code], check=True, stdout=subprocess.DEVNULL, stderr=open(work / "v2d.log", "w"),
                   env={**os.environ, "PATH": os.path.dirname(python) + os.pathsep + os.environ["PATH"]})
    elapsed = time.time() - started
    made = sum(1 for shard in (work / "v2d").glob("*.tar") for name in tarfile.open(shard).getnames()
               if name.endswith(".mp4"))
    assert made == len(plan), f"video2dataset wrote {made} of {len(plan)} clips; see {work / 'v2d.log'}"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--v2d-python", default=None, help="python of a venv with video2dataset installed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "served").mkdir()
        names = make_sources(work / "served")
        plan = clips(names, args.clips)
        per_second = sum((work / "served" / f"{n}.mp4").stat().st_size for n in names) / (N_SOURCES * SOURCE_SECONDS)
        with MediaServer(work / "served") as server:
            avtools_s, section_bytes = run_avtools(server, work, plan, args.workers)
            avtools_bytes = sum(server.bytes_sent.values()) / len(plan)
            server.bytes_sent.clear()
            v2d_s = v2d_bytes = None
            if args.v2d_python:
                v2d_s = run_video2dataset(args.v2d_python, server, work, plan, args.workers)
                v2d_bytes = sum(server.bytes_sent.values()) / len(plan)
    clip_bytes = per_second * CLIP_SECONDS
    rows = [("avtools", avtools_s, avtools_bytes)] + ([("video2dataset", v2d_s, v2d_bytes)] if v2d_s else [])
    lines = [f"\n### build-dataset throughput ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
             f"{os.cpu_count()} cores, {args.clips} clips of {CLIP_SECONDS}s from {SOURCE_SECONDS}s 480x360 sources, "
             f"{args.workers} workers)\n",
             "| tool | wall s | clips/s | bytes served per clip | ÷ 10 s of source | ÷ section file written |",
             "|---|---|---|---|---|---|"]
    for tool, seconds, nbytes in rows:
        lines.append(f"| {tool} | {seconds:.1f} | {args.clips / seconds:.2f} | {nbytes / 1e3:.0f} kB | {nbytes / clip_bytes:.2f} | {nbytes / section_bytes:.2f} |")
    if v2d_s:
        lines.append(f"\nwall-time ratio video2dataset / avtools: **{v2d_s / avtools_s:.2f}x**")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
