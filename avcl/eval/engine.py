"""The evaluation engine: frozen encoders + a dataset folder -> cached features, fold indices, result rows.

    checkpoint -> encoders -> EvalStream (every sample once over ranks) -> device augment (test crops) ->
    clip embeddings -> per-sample features (cached .npz) -> a protocol (one file each) -> result rows

Protocols register here with their recipe dataclass (the published defaults, overridable with
`--set protocol.KEY=VALUE`) and a `run(engine, recipe, folds, modalities) -> list[Row]` function.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from avcl.data.augment import DeviceAugment
from avcl.data.sources import SourceError, dataset_info, resolve
from avcl.data.stream import EvalStream
from avcl.data.views import run_spec
from avcl.eval.datasets import EvalDataError, EvalDataset
from avcl.eval.encoders import Encoders, clip_embedder
from avcl.eval.features import FeatureSpec, Features, cache_key, extract, feature_spec, feature_views, stream_config
from avcl.methods.losses import world
from avcl.registry import Registry

log = logging.getLogger("avcl.eval")

PROTOCOLS = Registry("protocol")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    recipe: type  # dataclass of the protocol's settings, published defaults
    run: Callable  # (engine, recipe, folds, modalities) -> list[Row]
    about: str


def register_protocol(name: str, recipe: type, about: str):
    def add(run: Callable) -> Callable:
        PROTOCOLS.register(name)(Protocol(name, recipe, run, about))
        return run
    return add


@dataclasses.dataclass
class Row:
    """One result: a number another lab can compare with, and everything that produced it."""
    dataset: str
    split: str  # the fold, or "mean"
    protocol: str
    modality: str
    metrics: dict[str, float]
    settings: dict
    encoder: dict
    extra: dict = dataclasses.field(default_factory=dict)  # per-class accuracy, figure paths, counts


@dataclasses.dataclass
class EvalOptions:
    data: str  # a dataset folder (local, http(s), s3) built by avtools build-dataset
    batch_size: int = 16
    workers: int = 4
    precision: str = "bf16"  # autocast on CUDA; CPU runs fp32
    cache_dir: Path = Path("~/.cache/avtools/features")
    figures_dir: Path = Path(".")


class Engine:
    def __init__(self, dataset: EvalDataset, encoders: Encoders, options: EvalOptions, device: torch.device):
        self.dataset, self.encoders, self.options, self.device = dataset, encoders, options, device
        self.url = options.data.rstrip("/")
        self.info = dataset_info(self.url)
        if self.info is None:
            raise EvalDataError(f"{options.data}: no dataset.json there; evaluation reads a dataset folder built "
                                "by `avtools build-dataset` (local, http(s):// or s3://)")
        self.splits = [name for name, s in self.info["splits"].items() if s["shards"]]
        self.data_identity = cache_key(self.info)  # what feature caches know of the data: dataset.json
        self.cache_hits = self.cache_misses = 0
        self.autocast = AUTOCAST[options.precision] if device.type == "cuda" else None

    @property
    def rank(self) -> int:
        return world()[0]

    @property
    def num_classes(self) -> int:
        return max(len(self.class_names()), 1)

    def class_names(self) -> list[str]:
        return sorted({c for s in self.info["splits"].values() for c in s.get("classes", {})})

    def modalities(self, requested: str | None) -> tuple[str, ...]:
        """`--modality` (or the dataset's default), keeping only what the encoders have."""
        wanted = self.dataset.modalities if requested in (None, "", "all") else tuple(requested.split(","))
        has_audio = "audio" in self.encoders.method.encoders()
        usable = tuple(m for m in wanted if m == "video" or has_audio)
        if not usable:
            raise EvalDataError(f"{self.encoders.config.method_name} has no audio encoder: {'/'.join(wanted)} "
                                "cannot be evaluated")
        return usable

    def train_views(self):
        """The method's training views as the run set them: what evaluation views are derived from."""
        return run_spec(self.encoders.method.view_spec(), self.encoders.config.data)

    def augment(self, spec: FeatureSpec, **video_changes) -> DeviceAugment:
        """The training run's device augmentation at the protocol's size and test crops (and `video_changes`)."""
        config = self.encoders.config
        video = dataclasses.replace(config.video, size=spec.size, test_crops=spec.crops, **video_changes)
        return DeviceAugment(video, config.mel, config.spec_augment).to(self.device)

    def features(self, spec: FeatureSpec, splits: list[str] | None = None, perturb=None) -> Features:
        """Features of every sample in `splits` (default: all), from the cache when it has them; visual ones
        carry a thumbnail per sample for figures."""
        parts = []
        for split in splits or self.splits:
            part = self._split_features(split, spec, perturb)
            part.splits = np.full(len(part), split)
            parts.append(part)
        return Features.concat(parts)

    def _split_features(self, split: str, spec: FeatureSpec, perturb) -> Features:
        config = self.encoders.config
        return self.cached(f"{self.dataset.name}/{split}", lambda: self._extract(split, spec, perturb),
                           self.data_identity, split, dataclasses.asdict(spec),
                           dataclasses.asdict(config.video), dataclasses.asdict(config.mel),
                           getattr(perturb, "describe", None))

    def cached(self, what: str, compute: Callable[[], Features], *settings) -> Features:
        """`compute()` once per (checkpoint digest, settings): later calls load the .npz (rank 0 writes it)."""
        path = Path(self.options.cache_dir).expanduser() / f"{cache_key(self.encoders.digest, *settings)}.npz"
        if path.exists():
            self.cache_hits += 1
            log.info("%s from the cache (%s)", what, path)
            return Features.load(path)
        self.cache_misses += 1
        features = compute()
        if self.rank == 0:
            features.save(path)
        return features

    def _extract(self, split: str, spec: FeatureSpec, perturb) -> Features:
        try:
            source = resolve(self.url, split)
        except SourceError as exc:
            raise EvalDataError(str(exc)) from None
        config = stream_config(self.options.batch_size, self.options.workers)
        stream = EvalStream([source], feature_views(spec, self.train_views()), config, seed=spec.augment_seed,
                            perturb=perturb)
        embed = clip_embedder(self.encoders, spec.modality, spec.layer)
        with _progress(f"features {self.dataset.name}/{split} ({spec.modality})", source.num_samples) as advance:
            return extract(embed, stream, self.augment(spec), self.autocast, train_views=spec.augment_seed is not None,
                           normalize_clips=spec.normalize_clips, keep_clips=spec.keep_clips,
                           thumbs=spec.modality != "audio", progress=advance)

    def fold_features(self, recipe, folds, modalities):
        """(modality, spec, features, fold, train, test) for every modality and fold: the features of the
        recipe's settings (extracted or cached once per modality) with each fold's sample indices."""
        for modality in modalities:
            spec = feature_spec(recipe, modality)
            features = self.features(spec)
            for fold in folds:
                yield (modality, spec, features, fold, *self.fold_indices(features, fold))

    def fold_indices(self, features: Features, fold: str) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) sample indices of `fold`."""
        roles = np.array([self.dataset.role(split, codes, fold, self.splits)
                          for split, codes in zip(features.splits, features.folds)], dtype=object)
        train, test = np.flatnonzero(roles == "train"), np.flatnonzero(roles == "test")
        if len(train) == 0 or len(test) == 0:
            raise EvalDataError(f"{self.dataset.name} split {fold}: {len(train)} train and {len(test)} test samples "
                                f"in {self.url}; is this a {self.dataset.name} dataset?")
        return train, test

    def row(self, fold: str, protocol: str, modality: str, metrics: dict, recipe, spec: FeatureSpec | None = None,
            **extra) -> Row:
        settings = {"recipe": dataclasses.asdict(recipe), "data": self.url}
        if spec is not None:
            settings["features"] = dataclasses.asdict(spec)
        return Row(self.dataset.name, fold, protocol, modality, metrics, settings, self.encoders.describe, extra)

    def figure_path(self, name: str) -> Path:
        path = Path(self.options.figures_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def mean_row(rows: list[Row]) -> Row:
    """The mean over folds of rows that differ only in their fold, with per-fold values kept."""
    first = rows[0]
    metrics = {k: float(np.mean([r.metrics[k] for r in rows])) for k in first.metrics}
    per_fold = {r.split: r.metrics for r in rows}
    return dataclasses.replace(first, split="mean", metrics=metrics, extra={"per_split": per_fold})


def with_means(rows: list[Row]) -> list[Row]:
    """Rows plus, for every (protocol, modality) measured on several folds, their mean."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        key = (row.protocol, row.modality, row.extra.get("family"), json.dumps(row.settings, sort_keys=True))
        groups.setdefault(key, []).append(row)
    return rows + [mean_row(g) for g in groups.values() if len(g) > 1]


class _progress:
    """A rich progress bar on rank 0 while features are extracted."""

    def __init__(self, what: str, total: int | None):
        self.what, self.total = what, total

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(self.what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            disable=world()[0] != 0, transient=True)
        self.bar.start()
        task = self.bar.add_task(self.what, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        self.bar.stop()
