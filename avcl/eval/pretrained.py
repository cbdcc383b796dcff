"""Checkpoints from outside avtools training: plain backbone state_dicts, `avtools export` outputs, and released
audio-visual self-supervised checkpoints mapped onto the registered backbones by a converter.

    plain state_dict (torchvision's r3d_18 / r2plus1d_18 files, XDC)  -> backbone from the keys and shapes
    RUN/export (or RUN/export/video_encoder.pt)                      -> the run's method, encoders loaded
    --checkpoint-format gdt | selavi | xdc                          -> the converter's key map, loaded strictly

A format is its authors' network, key map and inputs. GDT (facebookresearch/GDT, model.py) and SeLaVi
(facebookresearch/selavi, model.py) keep torchvision's R(2+1)D-18 under `video_network.base.` and a ResNet-9
audio network (torchvision's ResNet with one block per stage, a 1-channel conv1) under `audio_network.base.`,
projection heads `mlp_v*` / `mlp_a*` beside them, everything under `module.` when saved from DDP and inside
checkpoint["model"] beside `args` and optimiser state; XDC (HumamAlwassel/XDC) releases plain state_dicts of
its own R(2+1)D-18 (`r2plus1d_18_xdc`). Every key must be mapped or known to be a head: anything else is an
error that lists the unmatched keys. tests/data/released_layouts.json records these layouts from the authors'
code.

Each format evaluates with its authors' inputs, a named preset (`gdt`, `selavi`: mean/std 0.45/0.225, 30-frame
112-pixel clips, python_speech_features log filterbanks at 24 / 48 kHz; `kinetics` for torchvision and XDC).
`--preset` picks other inputs; the rows then say so (`encoder.inputs.own` false).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import avcl.methods as methods
from avcl import models
from avcl.data.views import ViewSpec
from avcl.methods.base import EncoderConfig, Method
from avcl.registry import Registry
from avcl.train import checkpoint
from avcl.train.checkpoint import CheckpointError
from avcl.train.config import TrainConfig, build_section, from_dict, named_preset

VIDEO_BACKBONES = ("r2plus1d_18", "r2plus1d_18_xdc", "r3d_18", "r2plus1d_10", "r3d_10", "r2plus1d_34", "r3d_34", "c3d")
AUDIO_BACKBONES = ("resnet18_2d", "resnet9_2d", "conv2d_10")
WIDTH_KEYS = ("layer1.0.conv1.1.weight", "bn1.weight", "conv1.1.weight")  # a BatchNorm of `width` channels
CLASSIFIER = re.compile(r"^(fc|linear)\.(weight|bias)$")  # a backbone's own classifier: never a feature
DEFAULT_PREPROCESSING = "kinetics"
EXPORT_INFO = "export.json"


@dataclasses.dataclass
class Converted:
    """A checkpoint's encoders as backbone state_dicts (audio None when it has none)."""
    video: dict[str, torch.Tensor]
    audio: dict[str, torch.Tensor] | None = None
    video_backbone: str | None = None  # None: inferred from the keys and shapes
    audio_backbone: str | None = None


@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
    """A released checkpoint's layout: how its keys map onto registered backbones, and the named preset holding
    the inputs its authors fed it (video mean/std, clip length, crop, audio front end and rate)."""
    convert: Callable[[dict], Converted]
    inputs: str


FORMATS = Registry("checkpoint format", package="avcl.eval")


def register_format(name: str, inputs: str = DEFAULT_PREPROCESSING):
    def add(convert: Callable[[dict], Converted]) -> Callable[[dict], Converted]:
        FORMATS.register(name)(CheckpointFormat(convert, inputs))
        return convert
    return add


def unwrap(saved: dict) -> dict[str, torch.Tensor]:
    """The state_dict inside a saved file ({"model": ...} or {"state_dict": ...} or itself), without DDP's
    `module.` prefix."""
    state = saved
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}


def take(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def without_classifier(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not CLASSIFIER.match(k)}


@register_format("torchvision")
def torchvision_layout(saved: dict) -> Converted:
    """A backbone state_dict in torchvision's layout (its own classifier, if any, dropped)."""
    return Converted(without_classifier(unwrap(saved)))


@register_format("xdc")
def xdc(saved: dict) -> Converted:
    """XDC's released R(2+1)D-18 video encoders (HumamAlwassel/XDC, hubconf/xdc.py): plain state_dicts with
    torchvision's key names for XDC's own network (`r2plus1d_18_xdc`), classifier `fc` included."""
    return Converted(without_classifier(unwrap(saved)), video_backbone="r2plus1d_18_xdc")


def _av_network(saved: dict, heads: re.Pattern) -> Converted:
    state = unwrap(saved)
    video, audio = take(state, "video_network.base."), take(state, "audio_network.base.")
    left = [k for k in state if not k.startswith(("video_network.base.", "audio_network.base.")) and not heads.match(k)]
    if left:
        raise CheckpointError(f"keys outside the video and audio networks and the projection heads: {_listed(left)}")
    return Converted(without_classifier(video), without_classifier(audio) or None, "r2plus1d_18", "resnet9_2d")


@register_format("gdt", inputs="gdt")
def gdt(saved: dict) -> Converted:
    """GDT (facebookresearch/GDT, model.py `GDT`): VMZ's R(2+1)D-18 and a ResNet-9 whose fc stayed in."""
    return _av_network(saved, re.compile(r"^mlp_[va]\."))


@register_format("selavi", inputs="selavi")
def selavi(saved: dict) -> Converted:
    """SeLaVi (facebookresearch/selavi, model.py `AVModel`): torchvision's R(2+1)D-18 and a ResNet-9, with one
    pair of projection heads (`mlp_v`, `mlp_a`) or several (`mlp_v0`, `mlp_a0`, ...)."""
    return _av_network(saved, re.compile(r"^mlp_[va]\d*\."))


def _listed(keys: list[str], shown: int = 12) -> str:
    more = f" ... ({len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def infer_width(state: dict[str, torch.Tensor]) -> int:
    for key in WIDTH_KEYS:
        if key in state and state[key].ndim == 1:
            return int(state[key].shape[0])
    return 64


def layout_mismatch(name: str, state: dict[str, torch.Tensor], width: int) -> list[str]:
    """The keys of `state` that a `name` backbone of `width` lacks or holds in another shape, and the ones it
    needs that `state` lacks (built on the meta device: nothing allocated)."""
    with torch.device("meta"):
        expected = without_classifier(models.build(name, width=width).state_dict())
    wrong = [k for k, v in state.items() if k not in expected or tuple(expected[k].shape) != tuple(v.shape)]
    return wrong + [f"{k} (missing)" for k in expected if k not in state]


def backbone_for(state: dict[str, torch.Tensor], candidates: tuple[str, ...], asked: str | None, what: str) -> tuple[str, int]:
    """(backbone name, width) whose layout `state` has exactly: the one asked for, else the first candidate."""
    width = infer_width(state)
    best = None
    for name in (asked,) if asked else candidates:
        mismatch = layout_mismatch(name, state, width)
        if not mismatch:
            return name, width
        if best is None or len(mismatch) < len(best[1]):
            best = (name, mismatch)
    raise CheckpointError(f"the {what} weights match no registered backbone ({', '.join((asked,) if asked else candidates)}); "
                          f"closest {best[0]} (width {width}) differs in: {_listed(best[1])}. Pass --backbone NAME, or "
                          f"--checkpoint-format ({', '.join(FORMATS.names())}) for a released checkpoint's layout")


def formats_that_fit(saved: dict, backbone: str | None = None) -> list[str]:
    """The formats whose key map turns `saved` into registered backbones exactly (checked on the meta device)."""
    fits = []
    for name in FORMATS.names():
        try:
            converted = FORMATS.get(name).convert(saved)
            backbone_for(converted.video, VIDEO_BACKBONES, backbone or converted.video_backbone, "video")
            if converted.audio:
                backbone_for(converted.audio, AUDIO_BACKBONES, converted.audio_backbone, "audio")
        except CheckpointError:
            continue
        fits.append(name)
    return fits


class Pretrained(Method):
    """Frozen encoders from a checkpoint of the field: a video backbone, maybe an audio one, no fusion."""

    name = "pretrained"

    def __init__(self, video: nn.Module, audio: nn.Module | None, audio_seconds: float = 1.0):
        super().__init__(None)
        self.video, self.audio, self.audio_seconds = video, audio, audio_seconds

    def view_spec(self) -> ViewSpec:
        return ViewSpec(clips=1, audio=self.audio is not None, audio_seconds=self.audio_seconds)


def load_converted(converted: Converted, backbone: str | None) -> tuple[Pretrained, EncoderConfig]:
    video_name, video_width = backbone_for(converted.video, VIDEO_BACKBONES, backbone or converted.video_backbone, "video")
    video = models.build(video_name, width=video_width)
    video.load_state_dict(converted.video, strict=False)  # strict on everything but the classifier, checked above
    audio_name, audio = "", None
    if converted.audio:
        audio_name, audio_width = backbone_for(converted.audio, AUDIO_BACKBONES, converted.audio_backbone, "audio")
        audio = models.build(audio_name, width=audio_width)
        audio.load_state_dict(converted.audio, strict=False)
    return Pretrained(video, audio), EncoderConfig(video_name, audio_name, video_width)


def preprocessing_config(label: str, encoder: EncoderConfig, preset: str) -> TrainConfig:
    """A TrainConfig carrying what evaluation needs of an outside checkpoint: backbones and preprocessing (the
    named preset `preset`)."""
    values = named_preset(preset)
    base = TrainConfig()
    sections = {name: build_section(type(getattr(base, name)), values.get(name, {}), name)
                for name in ("data", "video", "mel", "spec_augment")}
    return TrainConfig(method_name=label, method=encoder, **sections)


def file_digest(*paths: Path, extra: str = "") -> str:
    sha = hashlib.sha256(extra.encode())
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                sha.update(block)
    return sha.hexdigest()


def export_folder(path: Path) -> Path | None:
    """The `avtools export` folder `path` is or lies in (it holds export.json), else None."""
    folder = path if path.is_dir() else path.parent
    return folder if (folder / EXPORT_INFO).is_file() else None


def load_export(folder: Path) -> tuple[Method, TrainConfig, list[Path], int]:
    """The run's method rebuilt from export.json's config, with the exported encoders loaded strictly (an
    encoder whose file is not there is removed, never left at random init)."""
    try:
        info = json.loads((folder / EXPORT_INFO).read_text())
        method_name, saved = info["method"], info["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{folder / EXPORT_INFO}: not the export.json `avtools export` writes ({exc!r}); "
                              "export the run again") from None
    config = from_dict(method_name, {k: v for k, v in saved.items() if k != "method_name"})
    method = methods.build(config.method_name, config.method)
    files = []
    for name, encoder in method.encoders().items():
        path = folder / f"{name}_encoder.pt"
        if path.is_file():
            encoder.load_state_dict(checkpoint.load(path))
            files.append(path)
        else:
            setattr(method, name, None)
    if not files:
        raise CheckpointError(f"{folder}: export.json but no video_encoder.pt / audio_encoder.pt beside it")
    return method, config, files, int(info.get("step", 0))
