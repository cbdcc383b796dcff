"""Benchmark: avtools build-dataset against the bare ffmpeg floor, and against video2dataset.

    python bench/build_throughput.py --against ffmpeg [--clips 96] [--workers 2] [--rounds 3]
    python bench/build_throughput.py [--clips 40] [--v2d-python PATH/TO/venv/bin/python]

`--against ffmpeg`: `--clips` ten-second 640x360 H.264+AAC clips cut from the real footage in ../shared/data/media
(looped, each at its own offset) in a local class folder. The floor is one ffmpeg process per clip (the program
imageio-ffmpeg ships, which yt-dlp's section downloads use too), as many in parallel as avtools has workers, each
decoding once and writing 16 fps JPEGs at short side 128 (area scaling, `-q:v 2`, the finest without widening
ffmpeg's quantiser range; its JPEGs are still smaller than avtools' quality 90: both sizes are reported) and a mono 16 kHz WAV. Runs alternate; the ratio is of the medians. avtools' fixed
start-up (imports, planning, ledger, dataset.json: a run with `--limit 0`) is reported apart, and its steady
state is the wall time without it. Where each clip's time goes is avtools' own account (`avtools/stages.py`).

Default (video2dataset): sources are 120 s timecoded H.264+AAC videos served by a range-capable server on
127.0.0.1; each clip is a 10 s window at a random position. Both tools trim to the window, resample to 16 fps,
short side 128 and 16 kHz mono audio. Reports clips/s, the wall-time ratio, and bytes served per clip against
the clip's own encoded size, counted two ways: the source's bytes per second times 10 s, and the padded section
file yt-dlp wrote (from the ledger). Sources are interleaved, faststart mp4 (as streamed files are).
`bash bench/video2dataset_venv.sh /tmp/v2d` makes the video2dataset venv (its PyPI release without its pins).

Both append a section to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import random
import shutil
import statistics
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
REAL_FOOTAGE = ROOT.parent / "shared" / "data" / "media"
REAL_SOURCES = ("moviepy_video_with_failing_audio.mp4", "mmaction2_test.avi", "torchcodec_nasa_13013.mp4")
FLOOR_QSCALE = 2  # ffmpeg's finest default-range JPEG quality; still smaller files than quality 90


def ffmpeg_program() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def cut_real_clips(folder: Path, count: int) -> list[Path]:
    """`count` 10 s 640x360 H.264+AAC clips in folder/classK/, each cut at its own offset from real footage."""
    sources = [REAL_FOOTAGE / name for name in REAL_SOURCES if (REAL_FOOTAGE / name).exists()]
    if not sources:
        sys.exit(f"no real footage in {REAL_FOOTAGE}: the floor comparison needs {', '.join(REAL_SOURCES)}")
    clips = []
    for i in range(count):
        clip = folder / f"class{i % 4}" / f"clip{i:03d}.mp4"
        clip.parent.mkdir(parents=True, exist_ok=True)
        offset = (i // len(sources)) * 0.37 % 5
        subprocess.run([ffmpeg_program(), "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1",
                        "-ss", f"{offset:.2f}", "-i", str(sources[i % len(sources)]), "-t", str(CLIP_SECONDS),
                        "-map", "0:v:0", "-map", "0:a:0", "-r", "25",
                        "-vf", "scale=640:360:force_original_aspect_ratio=increase,crop=640:360,setsar=1",
                        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "50",
                        "-c:a", "aac", "-ar", "44100", "-ac", "2", "-movflags", "+faststart", str(clip)], check=True)
        clips.append(clip)
    return clips


def floor_clip(clip: Path, out: Path) -> None:
    """The floor: one ffmpeg process decoding the clip once into 16 fps JPEGs at short side 128 and a WAV."""
    out.mkdir(parents=True)
    subprocess.run([ffmpeg_program(), "-nostdin", "-loglevel", "error", "-i", str(clip),
                    "-map", "0:v:0", "-vf", "fps=16,scale=-2:128:flags=area", "-q:v", str(FLOOR_QSCALE),
                    str(out / "%04d.jpg"), "-map", "0:a:0", "-ac", "1", "-ar", "16000", str(out / "audio.wav")],
                   check=True)


def run_floor(clips: list[Path], out: Path, workers: int) -> tuple[float, float]:
    """Wall seconds of the floor over `clips` with `workers` processes at a time, and its mean JPEG bytes."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.time()
    with cf.ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda clip: floor_clip(clip, out / clip.stem), clips))
    elapsed = time.time() - started
    jpegs = list(out.rglob("*.jpg"))
    return elapsed, sum(j.stat().st_size for j in jpegs) / len(jpegs)


def run_avtools_folder(folder: Path, out: Path, workers: int, limit: int | None = None) -> tuple[float, str]:
    """Wall seconds of `avtools build-dataset folder` and its account of where each clip's time went."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "avtools", "build-dataset", "folder", "--source", str(folder), "--out", str(out),
           "--workers", str(workers), "--no-card"] + (["--limit", str(limit)] if limit is not None else [])
    started = time.time()
    printed = subprocess.run(cmd, check=True, capture_output=True, text=True).stderr  # progress and summary
    elapsed = time.time() - started
    return elapsed, next((line[len("time "):] for line in printed.splitlines() if line.startswith("time per clip")),
                         "not printed")


def avtools_jpeg_bytes(out: Path) -> float:
    """Mean bytes of a frame in avtools' shards (the .mjpeg member holds a sample's JPEGs back to back)."""
    sizes, frames = 0, 0
    for shard in out.glob("*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.load(tar.extractfile(member))
                    frames += meta["n_frames"]
                elif member.name.endswith(".mjpeg"):
                    sizes += member.size
    return sizes / max(frames, 1)


def against_ffmpeg(args) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips = cut_real_clips(work / "clips", args.clips)
        startup, _ = run_avtools_folder(work / "clips", work / "startup", args.workers, limit=0)
        ours, floor, account = [], [], ""
        for _ in range(args.rounds):
            seconds, account = run_avtools_folder(work / "clips", work / "avtools", args.workers)
            ours.append(seconds)
            seconds, floor_jpeg = run_floor(clips, work / "floor", args.workers)
            floor.append(seconds)
        our_jpeg = avtools_jpeg_bytes(work / "avtools")
    ours_s, floor_s = statistics.median(ours), statistics.median(floor)
    steady = ours_s - startup
    return "\n".join([
        f"\n### build-dataset against the bare ffmpeg floor ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, {args.clips} real 10 s 640x360 H.264+AAC clips from a local folder, "
        f"{args.workers} workers vs {args.workers} ffmpeg processes, median of {args.rounds} alternating rounds)\n",
        "| tool | wall s (rounds) | clips/s | mean JPEG bytes per frame |",
        "|---|---|---|---|",
        f"| avtools | {ours_s:.1f} ({', '.join(f'{x:.1f}' for x in ours)}) | {args.clips / ours_s:.2f} | {our_jpeg:.0f} |",
        f"| avtools steady state (start-up {startup:.1f} s apart) | {steady:.1f} | {args.clips / steady:.2f} | |",
        f"| ffmpeg floor (`-q:v {FLOOR_QSCALE}`) | {floor_s:.1f} ({', '.join(f'{x:.1f}' for x in floor)}) | "
        f"{args.clips / floor_s:.2f} | {floor_jpeg:.0f} |",
        f"\nthroughput avtools / floor: **{floor_s / ours_s:.2f}x** with start-up, **{floor_s / steady:.2f}x** "
        f"steady state (target >= 1.0x)\n",
        f"avtools' account, {account}\n"])


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
    parser.add_argument("--against", choices=("video2dataset", "ffmpeg"), default="video2dataset")
    parser.add_argument("--clips", type=int, default=None, help="default: 96 against ffmpeg, 40 against video2dataset")
    parser.add_argument("--workers", type=int, default=None, help="default: 2 against ffmpeg, 4 against video2dataset")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds against ffmpeg")
    parser.add_argument("--v2d-python", default=None, help="python of a venv with video2dataset installed")
    args = parser.parse_args()
    floor = args.against == "ffmpeg"
    args.clips = args.clips or (96 if floor else 40)
    args.workers = args.workers or (2 if floor else 4)
    text = against_ffmpeg(args) if floor else against_video2dataset(args)
    print(text)
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        f.write(text)


def against_video2dataset(args) -> str:
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
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
