"""Benchmark: one training step of every method at the published size (R(2+1)D-18, 16x112x112 clips).

    python bench/method_step.py [--batch 32] [--steps 10] [--methods xmodal,tcgl] [--no-compile]

On CPU it counts FLOPs per clip of one forward + backward (torch.utils.flop_counter on meta tensors, so
nothing runs). On CUDA it times the step (forward, backward, SGD update) three ways in one run: fp32 eager,
bf16 autocast + channels-last 3D, and the same under torch.compile; clips/s, peak memory and the ratio to fp32
eager. Appends its table to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import avcl.methods as methods  # noqa: E402
from avcl import models  # noqa: E402
from tests.support.batches import random_batch  # noqa: E402


def build(name: str, device) -> methods.Method:
    config = methods.default_config(name)
    overrides = {"video_backbone": "r2plus1d_18"} if name == "tcgl" else {}
    return methods.build(name, dataclasses.replace(config, **overrides)).to(device)


def batch_on(method, batch: int, device) -> dict:
    mels, audio_frames = 80, 101  # 1 s of 16 kHz audio, hop 160
    data = random_batch(method.view_spec(), batch=batch, size=112, mels=mels, audio_frames=audio_frames)
    return {k: v.to(device) for k, v in data.items()}


def clips_per_sample(method) -> int:
    return method.view_spec().n_clips


def flops_per_clip(name: str, batch: int = 2) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        method = build(name, "meta")
        data = batch_on(method, batch, "meta")
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = method(data)
        loss.backward()
    return counter.get_total_flops() / (batch * clips_per_sample(method))


def time_step(method, data, steps: int, amp: bool, channels_last: bool, compile_: bool) -> tuple[float, float]:
    """Seconds per step and peak GiB; the first steps (compilation, cudnn autotune) are not timed."""
    if channels_last:
        models.channels_last(method)
    forward = torch.compile(method) if compile_ else method
    optimiser = torch.optim.SGD(method.parameters(), lr=1e-3, momentum=0.9)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss, _ = forward(data)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--methods", default=",".join(methods.names()))
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    names = args.methods.split(",")
    today = time.strftime("%Y-%m-%d")
    lines = []
    if not torch.cuda.is_available():
        lines += [f"### method step FLOPs (CPU, {today}, {platform.machine()}, R(2+1)D-18, 16x112x112, 1 s audio)",
                  "", "| method | clips per sample | GFLOPs per clip, forward + backward (FLOP = 2 x multiply-add) |", "|---|---|---|"]
        for name in names:
            method = build(name, "meta")
            lines.append(f"| {name} | {clips_per_sample(method)} | {flops_per_clip(name) / 1e9:.1f} |")
            print(lines[-1], flush=True)
    else:
        torch.backends.cudnn.benchmark = True
        device = torch.cuda.get_device_name()
        lines += [f"### method step time ({today}, {device}, batch {args.batch}, R(2+1)D-18, 16x112x112)", "",
                  "| method | mode | ms/step | clips/s | peak GiB | × fp32 eager |", "|---|---|---|---|---|---|"]
        modes = [("fp32 eager", False, False, False), ("bf16 + channels-last", True, True, False)]
        if not args.no_compile:
            modes.append(("bf16 + channels-last + compile", True, True, True))
        for name in names:
            base = None
            for label, amp, channels_last, compile_ in modes:
                torch.manual_seed(0)
                method = build(name, "cuda")
                data = batch_on(method, args.batch, "cuda")
                seconds, peak = time_step(method, data, args.steps, amp, channels_last, compile_)
                base = base or seconds
                clips = args.batch * clips_per_sample(method)
                lines.append(f"| {name} | {label} | {seconds * 1e3:.0f} | {clips / seconds:.0f} | {peak:.1f} | "
                             f"{base / seconds:.2f} |")
                print(lines[-1], flush=True)
                del method, data
                torch.cuda.empty_cache()
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        f.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
