"""The evaluation engine: frozen encoders + a dataset folder -> cached features, fold indices, result rows.

    checkpoint -> encoders -> EvalStream (every sample once over ranks) -> device augment (test crops) ->
    clip embeddings -> per-sample features (cached .npz) -> a protocol (one file each) -> result rows

Protocols register here with their parameters dataclass (the published defaults, overridable with
`--set protocol.KEY=VALUE`) and a `run(engine, params, folds, modalities) -> list[ResultRow]` function.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from avcl.data.augment import DeviceAugment
from avcl.data.schema import DatasetInfo
from avcl.data.sources import SourceError, dataset_info, resolve, shard_stamps
from avcl.data.stream import BadData, EvalStream, read_samples, selected
from avcl.data.views import ClipGeometry, run_spec
from avcl.eval.datasets import EvalDataError, EvalDataset
from avcl.eval.encoders import Encoders, clip_embedder
from avcl.eval.features import FeatureSpec, cache_key, feature_spec, feature_views, stream_config
from avcl.extract import Features, extract
from avcl.progress import Progress, duration
from avcl.registry import Registry
from avcl.runtime import AUTOCAST, world
from avcl.storage import cache_dir
from avcl.urls import redact

log = logging.getLogger("avcl.eval")

PROTOCOLS = Registry("protocol", package="avcl.eval")


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    params: type  # dataclass of the protocol's settings, published defaults
    run: Callable  # (engine, params, folds, modalities) -> list[ResultRow]
    about: str
    modalities: tuple[str, ...] | None = None  # the only ones it measures (ESC-50: audio); None: as asked
    needs_labels: bool = True  # classification and retrieval need two classes at least; fingerprinting none
    kinds: tuple[str, ...] | None = None  # the dataset kinds it serves (EvalDataset.kind); None: every kind


def register_protocol(name: str, params: type, about: str, **options):
    def add(run: Callable) -> Callable:
        PROTOCOLS.register(name)(Protocol(name, params, run, about, **options))
        return run
    return add


@dataclasses.dataclass
class ResultRow:
    """One result: a number another lab can compare with, and everything that produced it."""
    dataset: str
    split: str  # the fold, or "mean"
    protocol: str
    modality: str
    metrics: dict[str, float]
    settings: dict
    encoder: dict
    extra: dict = dataclasses.field(default_factory=dict)  # coverage, per-class accuracy, figure paths, counts
    provenance: dict = dataclasses.field(default_factory=dict)  # avtools version, UTC time, command, config


@dataclasses.dataclass
class EvalOptions:
    data: str  # a dataset folder (local, http(s), s3) built by avtools build-dataset
    batch_size: int = 16
    workers: int | str = "auto"  # loader processes per rank: auto (see avcl.machine) or a number (0: none)
    precision: str = "bf16"  # autocast on CUDA; CPU runs fp32
    max_clips: int = 0  # clips through the encoder at once, whatever the clips per video; 0: 64 on CUDA, 16 on CPU
    cache_dir: Path = dataclasses.field(default_factory=lambda: cache_dir() / "features")
    figures_dir: Path = Path(".")


class Engine:
    def __init__(self, dataset: EvalDataset, encoders: Encoders, options: EvalOptions, device: torch.device):
        self.dataset, self.encoders, self.options, self.device = dataset, encoders, options, device
        self.url = options.data.rstrip("/")
        self.shown = redact(self.url)  # what messages and rows name: no credentials, no signatures
        self.info = dataset_info(self.url)
        if self.info is None:
            raise EvalDataError(f"{redact(options.data)}: no dataset.json there; evaluation reads a dataset folder built "
                                "by `avtools build-dataset` (local, http(s):// or s3://)")
        check_dataset_name(dataset, self.info, self.shown)
        check_shards_in_one_split(self.info, self.shown)
        self.splits = [name for name, split in self.info.splits.items() if split.shards]
        # what feature caches know of the data: dataset.json and each shard's size and time (or ETag)
        self.stamps = shard_stamps(self.url, self.info.shard_names())
        self.data_identity = cache_key(dataclasses.asdict(self.info), self.stamps)
        if dataset.kind == "single":
            check_test_side(self.info, self.shown)
        self.cache_hits = self.cache_misses = 0
        self.rank = world()[0]  # kept: the process group is left at the end of an evaluation
        self.autocast = AUTOCAST[options.precision] if device.type == "cuda" else None
        self.read: dict[tuple[str, str, str], int] = {}  # (modality, fold, role) -> samples read
        # CPU convolutions unfold their input (R(2+1)D-18 at 16x112x112: ~0.1 GB per clip), CUDA's do not
        self.max_clips = options.max_clips or (64 if device.type == "cuda" else 16)

    @property
    def num_classes(self) -> int:
        return max(len(self.class_names()), 1)

    def class_names(self) -> list[str]:
        return self.info.classes()

    def modalities(self, requested: str | None) -> tuple[str, ...]:
        """`--modality` (or the dataset's default), keeping only what the encoders have."""
        wanted = self.dataset.modalities if requested in (None, "", "all") else tuple(requested.split(","))
        has = set(self.encoders.method.encoders())
        needs = {"video": {"video"}, "audio": {"audio"}, "fused": {"video", "audio"}}
        usable = tuple(m for m in wanted if needs.get(m, {m}) <= has)
        if not usable:
            raise EvalDataError(f"{self.encoders.config.method_name} has {' and '.join(sorted(has)) or 'no'} "
                                f"encoder(s): {'/'.join(wanted)} cannot be evaluated")
        return usable

    def check_audio_rate(self) -> None:
        """Audio features mean something only at the sample rate the encoder's front end expects (a released
        format's own rate: GDT 24 kHz, SeLaVi 48 kHz): shards at another rate are refused, not resampled."""
        shards = int((self.info.preprocessing or {}).get("audio_rate") or 0)
        wanted = self.encoders.config.mel.sample_rate
        if shards and shards != wanted:
            raise EvalDataError(f"{self.shown} holds audio at {shards} Hz, but {self.encoders.config.method_name}'s "
                                f"audio front end expects {wanted} Hz: rebuild the dataset with --audio-rate {wanted}, "
                                "or evaluate the video only (--modality video)")

    def clip_geometry(self) -> ClipGeometry:
        """The clip geometry the checkpoint was trained on (frame step, canvas, audio window): all evaluation
        takes of the method's views."""
        return run_spec(self.encoders.method.view_spec(), self.encoders.config.data).geometry

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
        broken = int(sum(not np.isfinite(row).all() for row in features.features))
        if broken:
            raise EvalDataError(f"{what}: {broken} of {len(features)} samples have NaN or infinite features; the "
                                f"checkpoint {self.encoders.source} holds non-finite weights (check it, or an earlier step)")
        if self.rank == 0:
            features.save(path)
        return features

    def _extract(self, split: str, spec: FeatureSpec, perturb) -> Features:
        try:
            source = resolve(self.url, split)
        except SourceError as exc:
            raise EvalDataError(str(exc)) from None
        config = stream_config(self.options.batch_size, self.options.workers)
        stream = EvalStream([source], feature_views(spec, self.clip_geometry()), config, seed=spec.augment_seed,
                            perturb=perturb)
        embed = clip_embedder(self.encoders, spec.modality, spec.layer)
        with _progress(f"features {self.dataset.name}/{split} ({spec.modality})", source.num_samples) as advance:
            return extract(embed, stream, self.augment(spec), self.autocast, train_views=spec.augment_seed is not None,
                           normalize_clips=spec.normalize_clips, keep_clips=spec.keep_clips,
                           thumbs=spec.modality != "audio", progress=advance, max_clips=self.max_clips)

    def fold_features(self, params, folds, modalities):
        """(modality, spec, features, fold, train, test) for every modality and fold: the features of the
        parameters' settings (extracted or cached once per modality) with each fold's sample indices."""
        for modality in modalities:
            spec = feature_spec(params, modality)
            features = self.features(spec)
            for fold in folds:
                yield (modality, spec, features, fold, *self.fold_indices(features, fold, modality))

    def fold_indices(self, features: Features, fold: str, modality: str,
                     roles: tuple[str, ...] = ("train", "test")) -> tuple[np.ndarray, ...]:
        """The sample indices of each of `roles` in `fold` (recorded as read for the rows' coverage); the train
        samples must hold two classes at least, or no classifier, kNN or retrieval means anything."""
        role_of = np.array([self.dataset.role(split, codes, fold, self.splits)
                            for split, codes in zip(features.splits, features.folds)], dtype=object)
        picked = tuple(np.flatnonzero(role_of == role) for role in roles)
        for role, index in zip(roles, picked):
            self.read[(modality, fold, role)] = len(index)
            if len(index) == 0:
                raise EvalDataError(self._nothing_read(fold, role))
        if "train" in roles and "test" in roles:
            check_disjoint(features.keys[picked[roles.index("train")]], features.keys[picked[roles.index("test")]],
                           f"{self.dataset.name} split {fold}", self.dataset.kind == "official-splits")
        if "train" in roles:
            classes = np.unique(features.labels[picked[roles.index("train")]])
            if len(classes) < 2:
                raise EvalDataError(f"{self.dataset.name} split {fold}: every train sample read has the same class "
                                    f"({self.class_name(int(classes[0]))}); a protocol needs two classes at least")
        return picked

    def check_sides(self, fold: str) -> None:
        """For protocols that stream their training samples (fine-tuning, SGD heads): the train and test sample
        keys of `fold` read from the shards' json (one pass, no decoding) must be disjoint."""
        keys = [self.role_keys(fold, role) for role in ("train", "test")]
        check_disjoint(*keys, f"{self.dataset.name} split {fold}", self.dataset.kind == "official-splits")

    def role_keys(self, fold: str, role: str) -> np.ndarray:
        urls = [f"{self.url}/{shard.name}" for split in self.dataset.splits_holding(fold, role, self.splits)
                for shard in self.info.splits[split].shards]
        bad = BadData()
        samples = selected(read_samples(iter(urls), bad), self.dataset.selector(fold, role, self.splits), bad)
        return np.array([sample["__key__"] for sample in samples], dtype=object)

    def _nothing_read(self, fold: str, role: str) -> str:
        """Why no sample of `role` was read: the side is empty in dataset.json, its shards are missing, or every
        sample in them was skipped as unreadable."""
        where = f"{self.dataset.name} split {fold}"
        expected, available = self.dataset.coverage(self.info, fold, role)
        if available == 0:
            listed = f"its {expected} clip(s) all failed to build (see the ledger)" if expected else "it holds no clip"
            return (f"{where}: the {role} side is empty in {self.shown}'s dataset.json ({listed}); rebuild with a {role} "
                    "split (folder: --val-fraction above 0, or train/ and val/ folders) or pick another --folds")
        names = [shard.name for split in self.dataset.splits_holding(fold, role, self.splits)
                 for shard in self.info.splits[split].shards]
        missing = [name for name in names if self.stamps.get(name) is None]
        if missing:
            return (f"{where}: {len(missing)} of the {len(names)} shard(s) holding its {role} samples are missing "
                    f"from {self.shown} (e.g. {missing[0]}); copy them there, or rerun the build into it")
        return (f"{where}: dataset.json lists {available} {role} sample(s) but every one was skipped as unreadable "
                "(see the warnings above: damaged shards, samples without frames or audio); check the shards with "
                "`avtools inspect`")

    def class_name(self, index: int) -> str:
        names = self.class_names()
        return names[index] if 0 <= index < len(names) else str(index)

    def coverage(self, fold: str, modality: str) -> dict:
        """Per role of `fold`: the samples the official lists name (expected), the shards hold (available)
        and this evaluation read (where it counted them)."""
        out = {}
        for role in ("train", "test"):
            expected, available = self.dataset.coverage(self.info, fold, role)
            out[role] = {"expected": expected, "available": available}
            if (modality, fold, role) in self.read:
                out[role]["read"] = self.read[(modality, fold, role)]
        return out

    def row(self, fold: str, protocol: str, modality: str, metrics: dict, params, spec: FeatureSpec | None = None,
            **extra) -> ResultRow:
        settings = {"params": dataclasses.asdict(params), "data": self.shown}
        if spec is not None:
            settings["features"] = dataclasses.asdict(spec)
        extra = {"coverage": self.coverage(fold, modality), **extra}
        return ResultRow(self.dataset.name, fold, protocol, modality, metrics, settings, self.encoders.describe, extra)

    def figure_path(self, name: str) -> Path:
        path = Path(self.options.figures_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def check_dataset_name(dataset: EvalDataset, info: DatasetInfo, data: str) -> None:
    """Rows are labelled with the requested dataset: it must be the one built there (or `folder`, any data)."""
    built = info.name
    if dataset.name != "folder" and built != dataset.name:
        raise EvalDataError(f"{data} holds a {built!r} dataset (its dataset.json), not {dataset.name!r}: evaluate it "
                            f"as `avtools eval {built}` or `avtools eval folder`, or pass the {dataset.name} data")
    version = info.class_list.get("version") or "unrecorded"
    if dataset.class_list_version and version != dataset.class_list_version:
        raise EvalDataError(f"{data} was built with class list {version}, not {dataset.class_list_version}: rebuild "
                            f"it with this avtools (`avtools build-dataset {dataset.name}`; finished clips are kept)")


def check_test_side(info: DatasetInfo, data: str) -> None:
    """A one-fold dataset tests on `test` (else `val`): say why neither has samples, before any extraction."""
    sides = {name: info.splits[name] for name in ("test", "val") if name in info.splits}
    if any(split.shards for split in sides.values()):
        return
    if not sides:
        cause = f"it has only the split(s) {', '.join(info.splits) or 'none'}"
    else:
        cause = "; ".join(f"{name} lists {split.total} clip(s), {split.failed} failed to build and none is in a shard"
                          for name, split in sides.items())
    raise EvalDataError(f"{data}: nothing to test on: {cause}; rebuild with a val split (folder: --val-fraction "
                        "above 0, or train/ and val/ folders)")


def check_shards_in_one_split(info: DatasetInfo, data: str) -> None:
    """A shard listed under two splits puts the same samples on both sides of every protocol: refuse."""
    owner: dict[str, str] = {}
    for split, entry in info.splits.items():
        for shard in entry.shards:
            first = owner.setdefault(shard.name, split)
            if first != split:
                raise EvalDataError(f"{data}: dataset.json lists shard {shard.name} under both {first} and {split}; "
                                    "train and test would share its samples: rebuild into a new --out")


UCF_GROUP = re.compile(r"^(v_.+_g\d+)_c\d+$")  # UCF101 v_<class>_g<group>_c<clip>: one group, one recording session


def check_disjoint(train_keys: np.ndarray, test_keys: np.ndarray, where: str, official_groups: bool) -> None:
    """No sample on both sides, and (official splits) no UCF101 group on both sides: the lists keep each group
    on one side, so one crossing means the data is not what the lists say."""
    shared = sorted(set(train_keys.tolist()) & set(test_keys.tolist()))
    if shared:
        raise EvalDataError(f"{where}: {len(shared)} sample key(s) are in both train and test (e.g. {shared[0]}); "
                            "the classifier would be tested on its training data: rebuild the dataset into a new --out")
    if official_groups:
        groups = [{m.group(1) for m in map(UCF_GROUP.match, keys.tolist()) if m} for keys in (train_keys, test_keys)]
        crossing = sorted(groups[0] & groups[1])
        if crossing:
            raise EvalDataError(f"{where}: {len(crossing)} video group(s) are in both train and test (e.g. "
                                f"{crossing[0]}); the official lists never split a group: rebuild from the official lists")


def coverage_shortfalls(rows: list[ResultRow]) -> list[str]:
    """One line per (dataset, split, modality) whose rows read fewer samples than the official lists name."""
    lines = {}
    for row in (r for r in rows if r.split != "mean"):
        parts = []
        for role, counts in row.extra.get("coverage", {}).items():
            got = counts.get("read", counts["available"])
            if got < counts["expected"]:
                parts.append(f"{got:,}/{counts['expected']:,} {role}")
        if parts:
            key = (row.dataset, row.split, row.modality)
            lines[key] = (f"warning: {row.dataset} split {row.split} ({row.modality}) covers {' and '.join(parts)} "
                          "samples: the numbers are not comparable with published ones (see the rows' coverage)")
    return list(lines.values())


def mean_row(rows: list[ResultRow]) -> ResultRow:
    """The mean over folds of rows that differ only in their fold, with per-fold values kept."""
    first = rows[0]
    metrics = {k: float(np.mean([r.metrics[k] for r in rows])) for k in first.metrics}
    per_fold = {r.split: r.metrics for r in rows}
    coverage = {r.split: r.extra.get("coverage") for r in rows}
    return dataclasses.replace(first, split="mean", metrics=metrics, extra={"per_split": per_fold, "coverage": coverage})


def with_means(rows: list[ResultRow]) -> list[ResultRow]:
    """Rows plus, for every (protocol, modality) measured on several folds, their mean."""
    groups: dict[tuple, list[ResultRow]] = {}
    for row in rows:
        key = (row.protocol, row.modality, row.extra.get("family"), json.dumps(row.settings, sort_keys=True))
        groups.setdefault(key, []).append(row)
    return rows + [mean_row(g) for g in groups.values() if len(g) > 1]


@contextlib.contextmanager
def _progress(what: str, total: int | None):
    """Progress of one extraction on rank 0: a bar on a terminal; in a log a line per loader batch at most every
    10 s, and one at the end."""
    samples = 0
    with Progress(what, total or 0, every=10.0, active=world()[0] == 0, transient=True) as progress:
        def advance(n: int) -> None:
            nonlocal samples
            samples += n
            progress.update(samples, f"samples, {progress.rate():.1f}/s")
        yield advance
        progress.update(samples, f"samples in {duration(time.monotonic() - progress.started)}", log=True)
