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
from avcl.data.views import ViewSpec
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
