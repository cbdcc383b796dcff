"""Feature extraction: one vector (or one per clip) for every sample of an evaluation stream, from any
embedding function. Each rank keeps its own samples and gathers once at the end, so ranks may run different
batch counts (sample selection); the result is sorted by sample key, the same for any world size.

Used by evaluation (avcl.eval, which adds the cache and the protocol settings) and by training's online kNN
monitor; it imports neither.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avcl.data.augment import DeviceAugment
from avcl.data.stream import EvalStream, loader
from avcl.runtime import gather_objects, gather_rows
from avcl.storage import atomic_file

THUMB = 48  # pixels: the thumbnails retrieval figures show
MAX_CLIPS = 16  # clips (and crops) through augmentation and encoder at once: memory does not grow with clips per video


@dataclasses.dataclass
class Features:
    keys: np.ndarray  # [N] sample keys, sorted
    labels: np.ndarray  # [N]
    folds: np.ndarray  # [N, 3] official-split role codes (-1 none)
    features: np.ndarray  # [N, D] float32, or [N, K, D] with keep_clips
    thumbs: np.ndarray | None = None  # [N, THUMB, THUMB, 3] uint8 (video)
    splits: np.ndarray | None = None  # [N] shard split of each sample (set by the engine)

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, index: np.ndarray) -> "Features":
        return Features(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                           for f in dataclasses.fields(self)})

    @classmethod
    def concat(cls, parts: list["Features"]) -> "Features":
        parts = [p for p in parts if len(p)] or parts[:1]  # an empty part has no feature width to match
        return cls(**{f.name: None if any(getattr(p, f.name) is None for p in parts)
                      else np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)})

    def save(self, path: Path) -> None:
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        with atomic_file(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path) -> "Features":
        with np.load(path) as data:
            return cls(**{name: data[name] for name in data.files})


@torch.no_grad()
def extract(embed, stream: EvalStream, augment: DeviceAugment, autocast_dtype: torch.dtype | None = None,
            train_views: bool = False, normalize_clips: bool = False, keep_clips: bool = False,
            thumbs: bool = False, progress=None, max_clips: int = MAX_CLIPS) -> Features:
    """Features of the stream's valid samples; `embed` maps augmented inputs to [B, K, D]. A batch goes
    through augmentation and `embed` in parts of at most `max_clips` clips (one sample at least)."""
    device = augment.mean.device
    parts: dict[str, list] = {"keys": [], "labels": [], "folds": [], "features": [], "thumbs": []}
    generator = torch.Generator().manual_seed(0)
    with loader(stream, pin_memory=device.type == "cuda") as batches:
        for batch in batches:
            valid = batch["valid"].bool()
            if thumbs:
                parts["thumbs"].append(_thumbnails(batch["video"][valid]))
            outputs = []
            for part in sub_batches(batch, max(1, max_clips // _clips_per_sample(batch, augment))):
                inputs = augment(part, train=train_views, generator=generator)
                with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                    out = embed(inputs).float()
                if normalize_clips:
                    out = F.normalize(out, dim=-1)
                outputs.append(out if keep_clips else out.mean(1))
            out = torch.cat(outputs)
            parts["features"].append(out[valid.to(device)].cpu())
            parts["labels"].append(batch["label"][valid])
            parts["folds"].append(batch["folds"][valid])
            parts["keys"] += [k for k, ok in zip(batch["key"], valid.tolist()) if ok]
            if progress is not None:
                progress(int(valid.sum()))
    local = {name: torch.cat(parts[name]) if parts[name] else None for name in ("features", "labels", "folds", "thumbs")}
    gathered = {name: gather_rows(value, device) for name, value in local.items() if value is not None}
    keys = gather_objects(parts["keys"])
    order = np.argsort(np.array(keys, dtype=object).astype(str), kind="stable")
    if not keys:
        return Features(np.array([], str), np.zeros(0, np.int64), np.zeros((0, 3), np.int64), np.zeros((0, 0), np.float32))
    pick = lambda name: gathered[name].numpy()[order] if name in gathered else None  # noqa: E731
    return Features(np.array(keys, dtype=str)[order], pick("labels"), pick("folds"), pick("features"), pick("thumbs"))


def _clips_per_sample(batch: dict, augment: DeviceAugment) -> int:
    """Clips one sample sends through the encoder: its views, times the test crops of each video view."""
    if "video" in batch:
        return batch["video"].shape[1] * augment.video_config.test_crops
    return batch["audio"].shape[1]


def sub_batches(batch: dict, samples: int):
    """A collated batch cut into batches of `samples` samples (tensors and lists alike)."""
    size = len(batch["valid"])
    for start in range(0, size, samples):
        yield {key: value[start:start + samples] for key, value in batch.items()}


def _thumbnails(video: torch.Tensor) -> torch.Tensor:
    """[B, N, T, H, W, 3] uint8 -> [B, THUMB, THUMB, 3]: the middle frame of the first clip."""
    if len(video) == 0:
        return torch.zeros(0, THUMB, THUMB, 3, dtype=torch.uint8)
    middle = video[:, 0, video.shape[2] // 2].permute(0, 3, 1, 2).float()
    return F.interpolate(middle, size=(THUMB, THUMB), mode="area").round().byte().permute(0, 2, 3, 1)
