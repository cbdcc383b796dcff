"""Features of every evaluation sample from frozen encoders: each sample exactly once, extracted once, cached.

Clips come from `EvalStream` (evenly spaced test clips and deterministic crops, or seeded augmented views); a
sample's feature is the mean over its clips and crops (optionally of L2-normalised clip features), or every
clip's feature kept apart. Each rank keeps its own samples and gathers once at the end, so ranks may run
different batch counts (sample selection); the result is sorted by sample key, the same for any world size.

The cache is an .npz per (checkpoint digest, data, split, feature settings, perturbation), so linear, kNN and
retrieval sweeps reuse one extraction.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from avcl.data.augment import DeviceAugment
from avcl.data.stream import EvalStream, StreamConfig, loader
from avcl.data.views import ViewSpec
from avcl.machine import loader_workers
from avcl.methods.losses import world

log = logging.getLogger("avcl.eval")

THUMB = 48  # pixels: the thumbnails retrieval figures show
MAX_CLIPS = 16  # clips (and crops) through augmentation and encoder at once: memory does not grow with clips per video


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    modality: str = "video"  # video | audio | fused
    layer: str = "gap"  # gap | conv5-max-vcop | conv5-max-tcgl (video) | conv5 (audio)
    clips: int = 10  # evenly spaced (or random with augment_seed) per sample
    crops: int = 1  # 1 centre | 3 left-centre-right
    frames: int = 16
    fps: float = 0.0  # rate clips are sampled at from the stored frames (0: the stored rate, consecutive frames)
    size: int = 112
    audio_seconds: float = 0.0  # 0: the training config's
    normalize_clips: bool = True  # L2-normalise each clip's feature before averaging
    keep_clips: bool = False  # one feature per clip instead of the mean
    augment_seed: int | None = None  # seeded training-style views (random crops, SpecAugment): classifier data


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
        return cls(**{f.name: None if any(getattr(p, f.name) is None for p in parts)
                      else np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Features":
        with np.load(path) as data:
            return cls(**{name: data[name] for name in data.files})


def cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


@torch.no_grad()
def extract(embed, stream: EvalStream, augment: DeviceAugment, autocast_dtype: torch.dtype | None = None,
            train_views: bool = False, normalize_clips: bool = False, keep_clips: bool = False,
            thumbs: bool = False, progress=None, max_clips: int = MAX_CLIPS) -> Features:
    """Features of the stream's valid samples; `embed` maps augmented inputs to [B, K, D]. A batch goes
    through augmentation and `embed` in parts of at most `max_clips` clips (one sample at least)."""
    device = augment.mean.device
    parts: dict[str, list] = {"keys": [], "labels": [], "folds": [], "features": [], "thumbs": []}
    generator = torch.Generator().manual_seed(0)
    for batch in loader(stream, pin_memory=device.type == "cuda"):
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
    gathered = {name: _gather_rows(value, device) for name, value in local.items() if value is not None}
    keys = _gather_objects(parts["keys"])
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


def _gather_rows(x: torch.Tensor, device) -> torch.Tensor:
    """Concatenate each rank's rows (any count per rank) on every rank, in rank order."""
    size = world()[1]
    if size == 1:
        return x
    backend_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    x = x.to(backend_device)
    sizes = [torch.zeros(1, dtype=torch.long, device=backend_device) for _ in range(size)]
    dist.all_gather(sizes, torch.tensor([len(x)], device=backend_device))
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, *x.shape[1:], dtype=x.dtype, device=backend_device)
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(n)] for p, n in zip(parts, sizes)]).cpu()


def _gather_objects(items: list) -> list:
    size = world()[1]
    if size == 1:
        return items
    out = [None] * size
    dist.all_gather_object(out, items)
    return [item for part in out for item in part]


def feature_spec(recipe, modality: str, **changes) -> FeatureSpec:
    """The FeatureSpec a protocol recipe asks for: its fields of the same names, plus `changes`."""
    names = {f.name for f in dataclasses.fields(FeatureSpec)}
    values = {k: v for k, v in dataclasses.asdict(recipe).items() if k in names}
    layer = values.get("layer", "gap")
    if modality != "video" and layer.startswith("conv5-max"):  # the audio encoder has no VCOP pooling
        values["layer"] = "gap"
    return FeatureSpec(modality=modality, **(values | changes))


def feature_views(spec: FeatureSpec, train_spec: ViewSpec) -> ViewSpec:
    """The views one sample gives for `spec` (derived from the method's training views): evenly spaced test
    clips, or random ones for augmented crops; the modalities `spec` needs, audio as long as in training."""
    random_views = spec.augment_seed is not None
    return dataclasses.replace(
        train_spec, clips=spec.clips if random_views else train_spec.clips, test_clips=0 if random_views else spec.clips,
        frames=spec.frames, fps=spec.fps, speeds=(1,), directions=(1,), disjoint=False, tuple_gap=None, inter_order=False,
        audio=spec.modality in ("audio", "fused"), video=spec.modality != "audio",
        audio_seconds=spec.audio_seconds or train_spec.audio_seconds)


def stream_config(batch_size: int, workers: int | str) -> StreamConfig:
    rank, size = world()
    return StreamConfig(batch_size=batch_size, workers=loader_workers(workers), world_size=size, rank=rank)
