"""The training configuration: typed dataclasses, method presets from manifests/presets/<method>.toml, overrides.

Precedence: dataclass defaults < the method's preset < a named preset (`--preset demo`, manifests/presets/named/)
< `--config FILE.toml` < `--set section.key=value`. A named preset works for every method: its shared [method]
keys that the method's config does not have are skipped, and its `[methods.<name>.<section>]` tables apply to
that method only.
The resolved config (every key) is printed at start, saved as RUN/config.json and inside every checkpoint.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import tomllib
import types
import typing
from pathlib import Path

import avcl.methods as methods
import avtools_manifests
from avcl.data.audio import MelConfig, SpecAugmentConfig
from avcl.data.augment import VideoAugmentConfig
from avcl.errors import ConfigError
from avcl.machine import check_device, check_precision, loader_workers
from avcl.urls import redact_text


@dataclasses.dataclass
class DataConfig:
    train: list[str] = dataclasses.field(default_factory=list)  # sources: folders, patterns, URLs, `@weight`
    val: list[str] = dataclasses.field(default_factory=list)  # labelled shards for the online kNN monitor
    val_split: str = "val"
    batch_size: int = 64  # global: split over ranks and accumulation steps
    workers: int | str = "auto"  # loader processes per rank; auto: the usable cores over the node's ranks, <= 8
    shuffle: int = 1000
    epoch_samples: int = 0  # 0: the sample counts in dataset.json
    frames: int = 0  # 0: the method's own (16)
    stride: int = 0  # 0: the method's own (1)
    canvas: int = 128  # CPU-side square crop the device augmentation samples from

    def __post_init__(self):
        loader_workers(self.workers)  # a ValueError naming the accepted values


@dataclasses.dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1  # at base_batch; the run uses lr * batch_size / base_batch
    base_batch: int = 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = False  # False: no weight decay on norm layers and biases
    schedule: str = "cosine"  # cosine | plateau | constant
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    plateau_factor: float = 0.1  # plateau: lr *= factor after `plateau_patience` epochs without improvement
    plateau_patience: int = 50
    plateau_on: str = "train_loss"  # train_loss | val:<term> (a method's loss term on held-out data)
    clip_grad: float = 0.0  # max gradient norm; 0 disables


@dataclasses.dataclass
class RunConfig:
    epochs: int = 100
    max_steps: int = 0  # 0: epochs * steps per epoch
    accumulate: int = 1  # micro-batches per optimiser step
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "bf16"  # bf16 | fp16 | fp32 (autocast; losses are float32 either way)
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    seed: int = 0
    log_every: int = 10  # steps
    checkpoint_every: int = 500  # steps; also at every epoch end and at the end
    keep_every: int = 0  # steps: also keep step_<N>.pt every this many; 0 keeps only last and best
    knn_every: int = 0  # steps: online kNN accuracy on the val sources; 0 disables
    knn_k: int = 20
    wandb: bool = False  # also log to Weights & Biases (needs the wandb package; WANDB_* variables apply)
    wandb_project: str = "avtools"

    def __post_init__(self):
        check_device(self.device)
        check_precision(self.precision)
        for name in ("epochs", "accumulate", "log_every", "checkpoint_every", "knn_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("max_steps", "keep_every", "knn_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, not {getattr(self, name)}")


@dataclasses.dataclass
class TrainConfig:
    method_name: str = "xmodal"
    method: typing.Any = None  # the method's own config dataclass
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    video: VideoAugmentConfig = dataclasses.field(default_factory=VideoAugmentConfig)
    mel: MelConfig = dataclasses.field(default_factory=MelConfig)
    spec_augment: SpecAugmentConfig = dataclasses.field(default_factory=SpecAugmentConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        """The config as stored and printed (config.json, checkpoints, logs, results): data locations redacted,
        so a signed URL's signature never reaches a file or a terminal."""
        stored = dataclasses.asdict(self)
        for key in ("train", "val"):
            stored["data"][key] = [redact_text(source) for source in stored["data"][key]]
        return stored


def preset(method_name: str) -> dict:
    """manifests/presets/<method>.toml as a dict (the published defaults of that method)."""
    methods.METHODS.get(method_name)  # names the valid methods if unknown
    return avtools_manifests.toml(f"presets/{method_name}.toml")


def named_preset(name: str) -> dict:
    """manifests/presets/named/<name>.toml (sections for training, and [protocol] for evaluation)."""
    folder = avtools_manifests.path("presets/named")
    available = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))
    if name not in available:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(available)}")
    return avtools_manifests.toml(f"presets/named/{name}.toml")


def applicable(method_name: str, values: dict) -> dict:
    """A named preset's training sections for one method: the shared sections (their [method] keys this method's
    config does not have are skipped), then the preset's own tables for it, `[methods.<name>.<section>]`."""
    own = values.get("methods", {})
    unknown = set(own) - set(methods.METHODS.names())
    if unknown:
        raise ConfigError(f"preset [methods] names unknown method(s) {sorted(unknown)}; "
                          f"methods: {', '.join(methods.METHODS.names())}")
    fields = {f.name for f in dataclasses.fields(methods.METHODS.get(method_name).Config)}
    out = copy.deepcopy({k: v for k, v in values.items() if k not in ("protocol", "methods")})
    if "method" in out:
        out["method"] = {k: v for k, v in out["method"].items() if k in fields}
    return merge(out, copy.deepcopy(own.get(method_name, {})))


def load(method_name: str, config_file: Path | None = None, overrides: list[str] = (),
         named: str | None = None) -> TrainConfig:
    values = preset(method_name)
    if named:
        merge(values, applicable(method_name, named_preset(named)))
    if config_file is not None:
        merge(values, read_file(config_file))
    for item in overrides:
        merge(values, parse_override(item))
    return from_dict(method_name, values)


def read_file(path: Path) -> dict:
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            data.pop("method_name", None)
            return data
        return tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_override(item: str) -> dict:
    """'optim.lr=0.05' -> {'optim': {'lr': 0.05}}; the value is read as TOML, else kept as a string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. optim.lr=0.05")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    out: dict = {}
    node = out
    *parents, leaf = key.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


def merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def from_dict(method_name: str, values: dict) -> TrainConfig:
    method_cls = methods.METHODS.get(method_name).Config
    sections = {"method": method_cls}
    sections.update({f.name: f.default_factory for f in dataclasses.fields(TrainConfig) if f.name not in ("method_name", "method")})
    unknown = set(values) - set(sections)
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; sections: {', '.join(sections)}")
    built = {name: build_section(cls, values.get(name, {}), name) for name, cls in sections.items()}
    return TrainConfig(method_name=method_name, **built)


# keys that must be above 0 (a zero batch divides by zero, a zero rate never learns); every number must be finite
POSITIVE = {"data": ("batch_size", "canvas"), "optim": ("lr", "base_batch"),
            "run": ("epochs", "accumulate", "log_every", "checkpoint_every", "knn_k"),
            "video": ("size",), "mel": ("sample_rate", "n_fft", "hop", "n_mels")}
NON_NEGATIVE = {"data": ("shuffle", "epoch_samples", "frames", "stride"),
                "optim": ("momentum", "weight_decay", "warmup_epochs", "min_lr", "clip_grad"),
                "run": ("max_steps", "keep_every", "knn_every")}


def build_section(cls, values: dict, where: str):
    """A config dataclass from a dict, naming unknown keys, wrong types, non-finite numbers and values out of
    range."""
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table of keys (e.g. {where}.KEY=VALUE), not {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in [{where}]; keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
        _check_range(where, name, kwargs[name])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{where}]: {exc}") from None


def _check_range(section: str, key: str, value) -> None:
    numbers = [v for v in (value if isinstance(value, (list, tuple)) else [value])
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if any(not math.isfinite(v) for v in numbers):
        raise ConfigError(f"{section}.{key}: {value!r} is not a finite number")
    if key in POSITIVE.get(section, ()) and any(v <= 0 for v in numbers):
        raise ConfigError(f"{section}.{key}: must be above 0, got {value!r}")
    if key in NON_NEGATIVE.get(section, ()) and any(v < 0 for v in numbers):
        raise ConfigError(f"{section}.{key}: must be 0 or more, got {value!r}")


def _coerce(hint, value, where: str):
    """TOML values to the field's type: lists to tuples, ints to floats; anything else must already match."""
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    base = origin or hint
    if isinstance(base, type) and not isinstance(value, base):
        raise ConfigError(f"{where}: expected {getattr(base, '__name__', base)}, got {value!r}")
    return value


def compact(config: TrainConfig) -> str:
    """The resolved config on one line, `section.key=value` (JSON values), for logs."""
    items = [f"method_name={config.method_name}"]
    for name, section in config.to_dict().items():
        if isinstance(section, dict):
            items += [f"{name}.{key}={json.dumps(value, separators=(',', ':'))}" for key, value in section.items()]
    return " ".join(items)
