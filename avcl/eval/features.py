"""What evaluation extracts: the feature settings a protocol asks for (`FeatureSpec`), the views they give,
and the cache key. The extraction itself is `avcl.extract` (shared with training's kNN monitor).

Clips come from `EvalStream` (evenly spaced test clips and deterministic crops, or seeded augmented views); a
sample's feature is the mean over its clips and crops (optionally of L2-normalised clip features), or every
clip's feature kept apart.

The cache is an .npz per (checkpoint digest, data, split, feature settings, perturbation), so linear, kNN and
retrieval sweeps reuse one extraction.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from avcl.data.stream import StreamConfig
from avcl.data.views import ClipGeometry, ViewSpec, evaluation_views
from avcl.machine import loader_workers
from avcl.runtime import world


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


def cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def feature_spec(params, modality: str, **changes) -> FeatureSpec:
    """The FeatureSpec protocol parameters ask for: its fields of the same names, plus `changes`."""
    names = {f.name for f in dataclasses.fields(FeatureSpec)}
    values = {k: v for k, v in dataclasses.asdict(params).items() if k in names}
    layer = values.get("layer", "gap")
    if modality != "video" and layer.startswith("conv5-max"):  # the audio encoder has no VCOP pooling
        values["layer"] = "gap"
    return FeatureSpec(modality=modality, **(values | changes))


def feature_views(spec: FeatureSpec, geometry: ClipGeometry) -> ViewSpec:
    """The views one sample gives for `spec`: the checkpoint's clip geometry (frame step, canvas) at the
    protocol's frames, rate and audio window, the modalities `spec` needs, as `evaluation_views` lays them out
    (evenly spaced test clips, or random ones for augmented crops)."""
    geometry = dataclasses.replace(geometry, frames=spec.frames, fps=spec.fps,
                                   audio=spec.modality in ("audio", "fused"), video=spec.modality != "audio",
                                   audio_seconds=spec.audio_seconds or geometry.audio_seconds)
    return evaluation_views(geometry, spec.clips, random=spec.augment_seed is not None)


def stream_config(batch_size: int, workers: int | str) -> StreamConfig:
    rank, size = world()
    return StreamConfig(batch_size=batch_size, workers=loader_workers(workers), world_size=size, rank=rank)
