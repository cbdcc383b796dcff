"""Benchmark: two-view audio-visual samples per second per core, ready for the device.

    python bench/loader_throughput.py [--videos 48] [--shard-samples 48] [--samples 320] [--source DIR]

One run, the same clips three ways, each in one process pinned to one core with one torch/BLAS thread (local and
S3 in alternating rounds, best round reported: this VM's neighbours make single rounds vary by +-30%):
  1. avcl TrainStream over local JPEG shards built by `avtools build-dataset folder`;
  2. the same over a moto S3 server on loopback, in its own process on the other cores;
  3. an AVID-style loader: per sample, open the source mp4 with PyAV, seek and decode 16 frames at 16 fps
     for each of two views (scaled to 128 short side by the decoder) plus 2 s of audio resampled to 16 kHz.
A sample is two 16x112x112 clips (canvas 112) with 2 s of 16 kHz audio each. The clips are 10 s videos of a
drifting random texture (JPEG's worst case: every 8x8 block busy), or with `--source DIR` the videos with sound
in DIR (e.g. the real footage in ../shared/data/media), repeated up to `--videos`. Shards hold `--shard-samples`
samples: each shard opened is one S3 request (~3 ms of client CPU; moto takes ~0.1 s to the first byte of a
130 MB object), so tiny shards measure requests, not reading; builds default to 500. Appends to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import fractions
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECONDS, FPS, SIZE = 10, 25, (320, 240)


def write_textured(path: Path, seed: int) -> None:
    """A 10 s H.264+AAC video of a drifting random texture (not trivially compressible) and a tone."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 255, (SIZE[1] // 8 + 1, SIZE[0] // 8 + 64, 3), np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        video.options = {"preset": "veryfast", "crf": "23"}
        audio = out.add_stream("aac", rate=48000, layout="mono")
        tone = (0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * np.arange(48000 * SECONDS) / 48000) * 32767).astype(np.int16)
        step = 1024
        done = 0
        for k in range(SECONDS * FPS):
            shift = 2 * k
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[:SIZE[1], shift % 256:shift % 256 + SIZE[0]]), format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, FPS)
            out.mux(video.encode(frame))
            until = (k + 1) * 48000 // FPS
            while done + step <= until:
                chunk = av.AudioFrame.from_ndarray(tone[None, done:done + step], format="s16", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 48000, done, fractions.Fraction(1, 48000)
                out.mux(audio.encode(chunk))
                done += step
        out.mux(video.encode())
        out.mux(audio.encode())


def avcl_rate(spec_urls: list[str], samples: int) -> float:
    from avcl.data.sources import resolve_all
    from avcl.data.stream import StreamConfig, TrainStream
    from avcl.data.views import ViewSpec

    spec = ViewSpec(clips=2, frames=16, canvas=112, audio_seconds=2.0)
    config = StreamConfig(batch_size=8, workers=0, shuffle=64)
    stream = TrainStream(resolve_all(spec_urls), spec, config, epoch_samples=10 ** 9)
    iterator = iter(stream)
    next(iterator)  # warm-up: first shard open, shuffle buffer fill
    started = time.perf_counter()
    for _ in range(samples // 8):
        batch = next(iterator)
        assert batch["video"].shape == (8, 2, 16, 112, 112, 3)
    return (samples // 8) * 8 / (time.perf_counter() - started)


def stage_costs(folder: Path, samples: int = 32) -> dict[str, float]:
    """Milliseconds per sample of each stage of the local loader, measured apart (where the time goes)."""
    from avcl.data.decode import AudioReader, decode_jpeg, jpeg_frames, sample_meta
    from avcl.data.stream import BadData, read_samples

    shards = sorted(str(p) for p in folder.glob("*.tar"))
    started = time.perf_counter()
    raw = list(itertools.islice(read_samples(iter(shards), BadData()), samples))
    costs = {"tar reading and grouping": time.perf_counter() - started}
    started = time.perf_counter()
    for sample in raw:
        for jpeg in jpeg_frames(sample, sample_meta(sample))[:32]:
            decode_jpeg(jpeg, 112)
    costs["32 JPEG decodes"] = time.perf_counter() - started
    started = time.perf_counter()
    for sample in raw:
        audio = AudioReader(sample)
        for start in (0, audio.length - 32000):  # two 2 s windows of 16 kHz audio, first and last
            audio.read(start, start + 32000)
    costs["two 2 s WAV windows"] = time.perf_counter() - started
    members = sum(sum(not k.startswith("__") for k in sample) for sample in raw) / len(raw)
    return {f"{name} ({members:.0f} members)" if name.startswith("tar") else name: 1e3 * seconds / len(raw)
            for name, seconds in costs.items()}


def avid_style_rate(files: list[Path], samples: int) -> float:
    """Decode each sample from its video: two random 16-frame windows at 16 fps plus 2 s of audio per window."""
    rng = np.random.default_rng(0)
    durations = {}
    for path in set(files):
        with av.open(str(path)) as container:
            durations[path] = container.duration / av.time_base
    started = time.perf_counter()
    for i in range(samples):
        path = files[i % len(files)]
        for _ in range(2):
            t0 = float(rng.uniform(0, durations[path] - 2.2))
            frames, audio = _decode_window(path, t0)
            assert frames.shape[:2] == (16, 128) and len(audio) == 32000
    return samples / (time.perf_counter() - started)


def _decode_window(path: Path, t0: float) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        width = 2 * round(64 * stream.width / stream.height)  # 128 short side, as the shards store
        container.seek(int(t0 / stream.time_base), stream=stream)
        frames, next_time = [], t0
        for frame in container.decode(stream):
            if frame.time < next_time - 1e-6:
                continue
            frames.append(frame.to_ndarray(format="rgb24", width=width, height=128))
            next_time += 1 / 16
            if len(frames) == 16:
                break
        audio_stream = container.streams.audio[0]
        container.seek(int(t0 / audio_stream.time_base), stream=audio_stream)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        chunks, have = [], 0
        for frame in container.decode(audio_stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray()[0])
                have += out.samples
            if have >= 32000:
                break
    return np.stack(frames), np.concatenate(chunks)[:32000]


def source_videos(work: Path, count: int, source: Path | None) -> tuple[list[Path], str]:
    """`count` videos in 4 class folders below work/src/train: textures, or DIR's videos with sound repeated."""
    if source is None:
        made = [work / "src" / "train" / f"class{i % 4}" / f"v{i}.mp4" for i in range(count)]
        for i, path in enumerate(made):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_textured(path, i)
        return made, f"{count} 10 s {SIZE[0]}x{SIZE[1]} texture videos"
    real = [p for p in sorted(source.iterdir()) if _has_sound_and_picture(p)]
    if not real:
        raise SystemExit(f"--source {source}: no video with an audio stream of at least 5 s")
    made = [work / "src" / "train" / f"class{i % 4}" / f"v{i}{real[i % len(real)].suffix}" for i in range(count)]
    for i, path in enumerate(made):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(real[i % len(real)].resolve())
    return made, f"{count} videos, repeats of {', '.join(p.name for p in real)}"


def _has_sound_and_picture(path: Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video and container.streams.audio) and \
                (container.duration or 0) / av.time_base >= 5
    except av.error.FFmpegError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--shard-samples", type=int, default=48)
    parser.add_argument("--samples", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=5, help="local and S3 measured in turn; the best round counts")
    parser.add_argument("--source", type=Path, help="measure on the videos with sound in this folder")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files, clips = source_videos(work, args.videos, args.source)
        subprocess.run([sys.executable, "-m", "avtools", "build-dataset", "folder", "--source", str(work / "src"),
                        "--out", str(work / "ds"), "--fps", "16", "--short-side", "128",
                        "--samples-per-shard", str(args.shard_samples), "--no-card"], check=True, stdout=subprocess.DEVNULL)
        pin_to_one_core()
        local, s3 = with_s3(work / "ds", lambda url: alternate_rounds(str(work / "ds"), url, args))
        stages = stage_costs(work / "ds")
        avid = [avid_style_rate(files, max(16, args.samples // 8))]
    rows = [("avcl TrainStream, local JPEG shards", local),
            ("avcl TrainStream, loopback S3 (moto)", s3),
            ("AVID-style: PyAV decode of each sample's video", avid)]
    lines = [f"\n### two-view loader throughput ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
             f"{os.cpu_count()} cores, 1 process x 1 thread, {clips}, {args.shard_samples} per shard)\n",
             "| loader | two-view samples/s/core, best round | all rounds |", "|---|---|---|"]
    lines += [f"| {name} | {max(rates):.1f} | {', '.join(f'{r:.1f}' for r in rates)} |" for name, rates in rows]
    lines.append(f"\nratios of the best rounds: local / AVID-style **{max(local) / avid[0]:.1f}x**, "
                 f"S3 / local **{max(s3) / max(local):.2f}**")
    lines += ["", "| stage of the local loader, measured apart | ms per sample |", "|---|---|"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in stages.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        f.write(text)


def alternate_rounds(local_url: str, s3_url: str, args) -> tuple[list[float], list[float]]:
    """Local and S3 rates measured in turn, so that a slow spell of a shared machine hits both alike."""
    local, s3 = [], []
    for _ in range(args.rounds):
        local.append(avcl_rate([local_url], args.samples))
        s3.append(avcl_rate([s3_url], args.samples))
    return local, s3


def pin_to_one_core() -> None:
    """Measure on one core, the last; the S3 server gets the others (as a remote store would not share it)."""
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


def with_s3(folder: Path, measure):
    """Upload a dataset folder to a moto S3 server on 127.0.0.1 and measure reading it from there. The server runs
    in its own process, as a remote store would: in a thread of this one it would take the loader's GIL."""
    import socket

    import boto3
    from botocore.exceptions import EndpointConnectionError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
        os.sched_setaffinity(server.pid, set(range(os.cpu_count())) - os.sched_getaffinity(0))
    try:
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
        client = boto3.client("s3")
        for _ in range(100):  # the server takes a few seconds to start
            try:
                client.create_bucket(Bucket="bench")
                break
            except EndpointConnectionError:  # until it listens
                time.sleep(0.2)
        else:
            raise SystemExit(f"the moto S3 server on 127.0.0.1:{port} did not start within 20 s")
        for path in folder.iterdir():
            if path.is_file():
                client.upload_file(str(path), "bench", f"ds/{path.name}")
        return measure("s3://bench/ds")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
