"""`avtools eval DATASET --protocol P --checkpoint RUN --data DIR`: one entry point for every protocol.

Loads the encoders, resolves the protocol's parameters (published defaults < `--set protocol.KEY=VALUE`), prints
both, runs the protocol on the requested folds and modalities, adds the mean over folds, warns where the rows
cover less than the official splits, and stamps every row with its provenance.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path

from avcl.data.schema import DatasetInfo
from avcl.eval.datasets import DATASETS, EvalDataError
from avcl.eval.encoders import load_encoders
from avcl.eval.engine import PROTOCOLS, Engine, EvalOptions, ResultRow, coverage_shortfalls, with_means
from avcl.runtime import finish, setup
from avcl.train.config import ConfigError, build_section, merge, named_preset, parse_override


@dataclasses.dataclass(kw_only=True)
class EvalRequest:
    dataset: str
    data: str
    protocol: str | None = None  # None: the dataset's usual one (linear; esc50; fingerprint for vggsound)
    checkpoint: str = "random"
    method: str = "xmodal"  # for --checkpoint random
    folds: str | None = None  # official splits: "1", "1,2", "all"; None: the dataset's default
    modality: str | None = None  # video | audio | fused | comma list | all; None: the dataset's default
    overrides: list[str] = dataclasses.field(default_factory=list)  # protocol.KEY=VALUE, or model keys for random
    device: str = "auto"
    options: EvalOptions | None = None
    preset: str | None = None  # a named preset: its [protocol] keys the protocol parameters have, and (random) its model
    backbone: str | None = None  # a plain state_dict's backbone (default: inferred from its keys and shapes)
    checkpoint_format: str | None = None  # a released checkpoint's layout (gdt, selavi, xdc, torchvision)
    command: str = ""  # the command line, for the rows' provenance

    def as_dict(self) -> dict:
        """The request with its types kept (None stays null, lists stay lists), paths as strings."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        if self.options is not None:
            values["options"] = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self.options).items()}
        return values


def split_overrides(overrides: list[str]) -> tuple[dict, list[str]]:
    """`protocol.*` settings for the protocol parameters; everything else configures the model `--checkpoint random` builds."""
    params: dict = {}
    model = []
    for item in overrides:
        if item.strip().startswith("protocol."):
            merge(params, parse_override(item.strip()[len("protocol."):]))
        else:
            model.append(item)
    return params, model


def preset_params(name: str | None, params: type) -> dict:
    """A named preset's [protocol] keys that this protocol's parameters have."""
    if not name:
        return {}
    fields = {f.name for f in dataclasses.fields(params)}
    return {k: v for k, v in named_preset(name).get("protocol", {}).items() if k in fields}


def evaluate(request: EvalRequest, log=print) -> tuple[list[ResultRow], Engine]:
    dataset = DATASETS.get(request.dataset)
    protocol = PROTOCOLS.get(request.protocol or dataset.protocol)
    if protocol.kinds and dataset.kind not in protocol.kinds:
        serving = [d for d in DATASETS.names() if DATASETS.get(d).kind in protocol.kinds]
        raise EvalDataError(f"protocol {protocol.name} cannot be asked of {dataset.name}: it serves "
                            f"{', '.join(serving)}; for {dataset.name} use linear, knn, retrieval or finetune")
    param_values, model_overrides = split_overrides(request.overrides)
    if model_overrides and request.checkpoint != "random":
        raise ConfigError(f"{model_overrides}: model settings apply to --checkpoint random only; protocol "
                          "settings are written protocol.KEY=VALUE")
    params = build_section(protocol.params, merge(preset_params(request.preset, protocol.params), param_values),
                           "protocol")
    folds = dataset.resolve_folds(request.folds)
    ctx = setup(request.device)
    encoders = load_encoders(request.checkpoint, request.method, model_overrides, ctx.device, request.preset,
                             request.backbone, request.checkpoint_format)
    engine = Engine(dataset, encoders, request.options or EvalOptions(data=request.data), ctx.device)
    if protocol.needs_labels and engine.num_classes < 2:
        raise EvalDataError(f"{engine.shown} holds one class ({', '.join(engine.class_names()) or 'none'}): "
                            f"{protocol.name} needs two classes at least")
    modalities = protocol.modalities or engine.modalities(request.modality)
    if {"audio", "fused"} & set(modalities):
        engine.check_audio_rate()
    if ctx.main:
        log(f"{protocol.name} on {dataset.name} split(s) {', '.join(folds)}, {', '.join(modalities)}; "
            f"{json.dumps(encoders.describe)}")
        log(f"protocol settings: {json.dumps(dataclasses.asdict(params))}")
    rows = with_means(protocol.run(engine, params, folds, modalities))
    stamp = provenance(request, encoders.config.to_dict(), dataclasses.asdict(params), engine.info)
    rows = [dataclasses.replace(row, provenance=stamp) for row in rows]
    if ctx.main:
        for line in coverage_shortfalls(rows):
            log(line)
    finish()
    return rows, engine


PACKAGES = ("avtools", "torch", "torchvision", "numpy", "scikit-learn", "liblinear-official")  # what the numbers depend on


def provenance(request: EvalRequest, model_config: dict, params: dict, data_info: DatasetInfo) -> dict:
    """What a row needs to be reproduced: avtools' version and git commit (when run from a checkout), the
    installed versions of the packages the numbers depend on, the UTC time, the command, the data's class list
    (file, version, hash), a digest of its dataset.json (shard list and counts included) and the resolved config."""
    data = json.dumps(dataclasses.asdict(data_info), sort_keys=True, default=str).encode()
    return {"avtools": importlib.metadata.version("avtools"), "git_commit": git_commit(),
            "packages": {name: installed_version(name) for name in PACKAGES},
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": request.command, "request": request.as_dict(), "class_list": data_info.class_list,
            "data_digest": hashlib.sha256(data).hexdigest()[:16],
            "config": {"model": model_config, "protocol": params}}


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the avtools checkout this code runs from (with `+dirty` when it has changes); None for an
    installed copy."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")
