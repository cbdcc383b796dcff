"""Frozen encoders for evaluation: a checkpoint (or `random`) in, clip embeddings out.

`load_encoders` rebuilds the method a training checkpoint was trained with (its config is inside) so every
protocol sees the same preprocessing as training: the method's own input transform (TCGL's STKD), the video
normalisation and the log-mel settings. An `avtools export` folder rebuilds the same method from export.json;
a plain backbone state_dict (torchvision's files) or a released checkpoint (`--checkpoint-format`) becomes
frozen backbones with a named preset's preprocessing (avcl.eval.pretrained). `--checkpoint random` builds the
method from its preset at a fixed seed: the floor of every table (and, fine-tuned, the supervised-from-scratch
baseline).

Feature layers: `gap` (the backbone's pooled vector), `conv5-max-vcop` and `conv5-max-tcgl` (retrieval: the
conv5 map max-pooled with kernel = stride as the published code does, flattened; both (1,2,2) -> 9216-d for
C3D and R3D at 16x112x112; for R(2+1)D VCOP's code pools (1,2,2) -> 9216-d, TCGL's (2,5,5) -> 512-d) and,
for audio, `conv5` (the conv5 map max-pooled to 3x3, 4608-d for ResNet-18: CrissCross's size;
the pooling itself is a reconstruction).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import avcl.methods as methods
from avcl import storage
from avcl.errors import ConfigError
from avcl.eval import pretrained
from avcl.methods.base import Method, flat
from avcl.train import checkpoint
from avcl.train.config import TrainConfig, from_dict, load as load_config

CONV5_POOLS = {  # layer -> backbone family -> max-pool kernel (= stride) on the conv5 map
    "conv5-max-vcop": {"c3d": (1, 2, 2), "r3d": (1, 2, 2), "r2plus1d": (1, 2, 2)},
    "conv5-max-tcgl": {"c3d": (1, 2, 2), "r3d": (1, 2, 2), "r2plus1d": (2, 5, 5)},
}
VIDEO_LAYERS = ("gap", *CONV5_POOLS)
AUDIO_LAYERS = ("gap", "conv5")
MODALITIES = ("video", "audio", "fused")


@dataclasses.dataclass
class Encoders:
    method: Method
    config: TrainConfig
    source: str  # the checkpoint path, or "random"
    digest: str  # content hash: the feature cache key
    step: int
    fusion_weights: bool = True  # False: an export, without the method's own fusion module
    inputs: dict | None = None  # a released checkpoint's: {"preset": used, "format": its authors' inputs preset}

    @property
    def describe(self) -> dict:
        described = {"checkpoint": self.source, "method": self.config.method_name, "step": self.step,
                     "sha256": self.digest[:16], "video_backbone": self.config.method.video_backbone,
                     "audio_backbone": getattr(self.config.method, "audio_backbone", None)}
        if self.inputs:
            described["inputs"] = self.inputs
        return described


def load_encoders(where: str, method: str = "xmodal", overrides: list[str] = (), device="cpu",
                  preset: str | None = None, backbone: str | None = None,
                  checkpoint_format: str | None = None) -> Encoders:
    """A run folder (its last.pt), a training checkpoint, an `avtools export` folder or file, a backbone
    state_dict (`backbone` inferred unless given), a released checkpoint (`checkpoint_format`), or `random`
    (method `method`, named preset, `overrides`)."""
    if where == "random":
        config = load_config(method, overrides=list(overrides), named=preset)
        torch.manual_seed(0)
        model = methods.build(method, config.method)
        digest = hashlib.sha256(("random:" + json.dumps(config.to_dict(), sort_keys=True)).encode()).hexdigest()
        return Encoders(model.to(device).eval(), config, "random", digest, 0)
    local, mirror = fetched(where)
    path = Path(local)
    if path.is_dir() and pretrained.export_folder(path) is None:
        path = path / checkpoint.LAST
    shown = mirror.url_of(path.relative_to(mirror.local).as_posix()) if mirror else str(path)
    folder = pretrained.export_folder(path) if checkpoint_format is None else None
    if folder is not None:
        model, config, files, step = pretrained.load_export(folder)
        has_own_fusion = type(model).fused_features is not Method.fused_features
        return Encoders(model.to(device).eval(), config, shown, pretrained.file_digest(*files), step,
                        fusion_weights=not has_own_fusion)
    saved = checkpoint.load(path)
    if checkpoint_format is None and "config" in saved and "model" in saved:
        config = from_dict(saved["method_name"], {k: v for k, v in saved["config"].items() if k != "method_name"})
        model = methods.build(config.method_name, config.method)
        model.load_state_dict(saved["model"])
        return Encoders(model.to(device).eval(), config, shown, pretrained.file_digest(path), saved["state"]["step"])
    layout = checkpoint_format or "torchvision"
    released = pretrained.FORMATS.get(layout)
    try:
        model, encoder = pretrained.load_converted(released.convert(saved), backbone)
    except checkpoint.CheckpointError as exc:
        fits = [] if checkpoint_format else pretrained.formats_that_fit(saved, backbone)
        if fits:
            raise checkpoint.CheckpointError(f"{path}: {exc}. Its keys fit --checkpoint-format "
                                             f"{' or '.join(fits)}") from None
        raise
    config = pretrained.preprocessing_config(layout, encoder, preset or released.inputs)
    digest = pretrained.file_digest(path, extra=json.dumps([layout, config.to_dict()], sort_keys=True))
    inputs = {"preset": preset or released.inputs, "format": released.inputs,
              "own": (preset or released.inputs) == released.inputs}  # other inputs: said in every row
    return Encoders(model.to(device).eval(), config, shown, digest, 0, inputs=inputs)


def fetched(where: str) -> tuple[str, storage.RunFolder | None]:
    """A local path for --checkpoint: `where` itself, or for s3:// a path in a local mirror (returned too) of the
    checkpoint file, the run folder's last.pt or the export folder's files."""
    if not storage.is_remote(where):
        return where, None
    encoder_files = [pretrained.EXPORT_INFO, "video_encoder.pt", "audio_encoder.pt"]
    if where.endswith(".pt"):
        folder = storage.RunFolder(storage.location_folder(where), "--checkpoint")
        name = storage.location_name(where)
        if not folder.pull(name):
            raise checkpoint.CheckpointError(f"{where}: no such object")
        folder.pull(*encoder_files)
        return str(folder.path(name)), folder
    folder = storage.RunFolder(where, "--checkpoint")
    folder.pull(*(encoder_files if pretrained.EXPORT_INFO in folder.names() else [checkpoint.LAST]))
    return str(folder.local), folder


def conv5_max(feature_map: torch.Tensor, backbone: str, layer: str = "conv5-max-vcop") -> torch.Tensor:
    """A retrieval feature: the conv5 map max-pooled with the kernel (= stride) `layer`'s code uses, flattened."""
    pools = CONV5_POOLS[layer]
    family = next((name for name in pools if backbone.startswith(name)), None)
    if family is None:
        raise ConfigError(f"no published conv5 pooling for backbone {backbone!r}; use --set protocol.layer=gap")
    kernel = tuple(min(k, size) for k, size in zip(pools[family], feature_map.shape[2:]))  # small inputs
    return F.max_pool3d(feature_map, kernel, kernel).flatten(1)


def video_embedding(encoders: Encoders, clips: torch.Tensor, layer: str = "gap") -> torch.Tensor:
    """[M, 3, T, H, W] -> [M, D]."""
    method = encoders.method
    if layer == "gap":
        return method.video_features(clips)
    if layer in CONV5_POOLS:
        return conv5_max(method.video.features(method.video_input(clips)), encoders.config.method.video_backbone, layer)
    raise ConfigError(f"video layer must be one of {VIDEO_LAYERS}, not {layer!r}")


def audio_embedding(encoders: Encoders, specs: torch.Tensor, layer: str = "gap") -> torch.Tensor:
    """[M, 1, F, T] log-mels -> [M, D]."""
    audio = getattr(encoders.method, "audio", None)
    if audio is None:
        raise ConfigError(f"method {encoders.config.method_name} has no audio encoder: evaluate --modality video")
    if layer == "gap":
        return audio(specs)
    if layer == "conv5":
        return F.adaptive_max_pool2d(audio.features(specs), 3).flatten(1)
    raise ConfigError(f"audio layer must be one of {AUDIO_LAYERS}, not {layer!r}")


def embedding_dim(encoders: Encoders, modality: str) -> int:
    """The size of a `gap` embedding of `modality` (what a classifier head on it takes)."""
    method = encoders.method
    if modality == "video":
        return method.video.out_dim
    if modality == "audio":
        return method.audio.out_dim
    fused_by_method = getattr(method, "fusion", None) is not None
    return method.video.out_dim if fused_by_method else method.video.out_dim + method.audio.out_dim


def clip_embedder(encoders: Encoders, modality: str, layer: str = "gap"):
    """A function of augmented inputs -> [B, K, D], one embedding per clip (and crop).

    Fused: the method's own fusion (AVCL's AMFM) where it has one, else late fusion, the concatenation of the
    L2-normalised video and audio embeddings (cosine on it is the mean of the two cosines).
    """
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be one of {MODALITIES}, not {modality!r}")

    def embed(inputs: dict) -> torch.Tensor:
        video = inputs.get("video")
        b = len(inputs["label"])
        if modality == "video":
            return video_embedding(encoders, flat(video), layer).view(b, video.shape[1], -1)
        audio = inputs["audio"]
        if modality == "audio":
            return audio_embedding(encoders, flat(audio), layer).view(b, audio.shape[1], -1)
        crops = video.shape[1] // audio.shape[1]  # evaluation crops share their clip's audio
        audio = flat(audio).repeat_interleave(crops, dim=0)
        if not encoders.fusion_weights:
            raise ConfigError(f"{encoders.config.method_name}'s fused features come from its fusion module, which "
                             "`avtools export` does not write: evaluate the run folder, or --modality video/audio")
        fused = encoders.method.fused_features(flat(video), audio)
        if fused is None:
            fused = torch.cat([F.normalize(video_embedding(encoders, flat(video), layer), dim=1),
                               F.normalize(audio_embedding(encoders, audio, "gap"), dim=1)], dim=1)
        return fused.view(b, video.shape[1], -1)

    return embed
