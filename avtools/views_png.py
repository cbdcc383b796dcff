"""`avtools inspect --views METHOD`: a PNG of what the model sees from one sample under a method's views.

The method's config is resolved as `avtools train` resolves it (its preset, `--preset`, `--config`, `--set`),
so the PNG shows the views and the augmentation training gets: its frames, frame step and canvas, its crops,
flips and colour jitter (or none, as TCGL's preset), its log-mel settings. One row per view: a few of its
frames after the training augmentation (de-normalised for display) and, when the method uses audio, the view's
log-mel; titles carry the labels the method learns from (speed, direction, order).

With `eval_clips` it draws what evaluation reads instead: that many evenly spaced clips at speed 1, forward,
centre-cropped, from `avcl.data.views.evaluation_views` (the function every protocol reads through).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avcl.plots import pyplot, save_figure
from avtools.inspect import first_raw_sample

FRAMES_SHOWN = 6


def save_views_png(url: str, method: str, out: Path, seed: int = 0, preset: str | None = None,
                   config_file: Path | None = None, overrides: list[str] = (), eval_clips: int = 0) -> Path:
    plt = pyplot()
    import torch

    import avcl.methods as methods
    from avcl.data.augment import DeviceAugment
    from avcl.data.stream import collate
    from avcl.data.views import evaluation_views, make_views, run_spec
    from avcl.train.config import load

    config = load(method, config_file, list(overrides), preset)
    spec = run_spec(methods.build(method, config.method).view_spec(), config.data)
    if eval_clips:
        spec = evaluation_views(spec.geometry, eval_clips)
    sample = first_raw_sample(url)
    views = make_views(sample, spec, None if eval_clips else np.random.default_rng(seed))
    augment = DeviceAugment(config.video, config.mel, config.spec_augment)
    seen = augment(collate([views]), train=not eval_clips, generator=torch.Generator().manual_seed(seed))
    video = seen["video"][0]  # [N, 3, T, H, W]
    if config.video.normalize:
        video = video * augment.std[0] + augment.mean[0]
    video = video.clamp(0, 1)
    audio = seen.get("audio")
    n, columns = video.shape[0], FRAMES_SHOWN + (audio is not None)
    fig, axes = plt.subplots(n, columns, figsize=(1.6 * columns + 1.4 * (audio is not None), 1.7 * n), squeeze=False)
    frame_ids = np.linspace(0, video.shape[2] - 1, FRAMES_SHOWN).round().astype(int)
    for row in range(n):
        for col, t in enumerate(frame_ids):
            axes[row, col].imshow(video[row, :, t].permute(1, 2, 0).numpy())
            axes[row, col].set_title(f"frame {t}", fontsize=7)
        axes[row, 0].set_ylabel(_view_title(spec, views, row), fontsize=7)
        if audio is not None:
            axes[row, -1].imshow(audio[0, row, 0].numpy(), origin="lower", aspect="auto", cmap="magma")
            axes[row, -1].set_title("log-mel", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    order = f", order class {int(views['order'])}" if int(views["order"]) >= 0 else ""
    kind = f"evaluation views ({eval_clips} clips)" if eval_clips else "views"
    fig.suptitle(f"{method} {kind} of {sample['__key__']}{order}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def _view_title(spec, views: dict, row: int) -> str:
    speed = spec.speeds[int(views["speed"][row])]
    direction = "backward" if views["direction"][row] else "forward"
    return f"view {row}\n{speed}x {direction}\nt={float(views['start'][row]):.2f}s"
