"""What every method shares: the registry, encoders built by name, the view spec it asks of the data, and the
split of its step into `embed` and `objective`.

A method with terms across samples (in-batch negatives, batch statistics) sets `cross_sample` and computes its
loss in two parts: `embed(batch)` gives the per-sample outputs (rows in batch order), `objective(meta, emb)` the
loss from the embeddings of the whole step and the batch's small tensors (labels, speeds, starts; never the
frames). Gradient accumulation then means what one large batch means: the trainer embeds every micro-batch
without gradients, then recomputes one micro-batch at a time with gradients while the objective sees the
others' cached embeddings (open_clip's approach), so every term keeps the negatives of the global batch.
The objective has no parameters of its own (heads belong in `embed`), or accumulation would count their
gradients once per micro-batch. State a step changes once (a momentum encoder, a queue) lives in `prepare_step`
and `finish_step`.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from avcl import models
from avcl.data.views import ViewSpec
from avcl.registry import Registry

METHODS = Registry("method", package="avcl.methods")


@dataclasses.dataclass
class EncoderConfig:
    video_backbone: str = "r2plus1d_18"
    audio_backbone: str = "resnet18_2d"
    width: int = 64  # base channel width of both backbones (64 = the published networks; tests use 4-8)


class Method(nn.Module):
    """A self-supervised method: `forward(batch) -> (loss, terms)`; `terms` are detached scalars to log."""

    name: ClassVar[str]
    Config: ClassVar[type]
    cross_sample: ClassVar[bool] = True  # terms across samples: accumulate through embed / objective
    BIG = ("video", "audio", "audio_shifted")  # batch entries `objective` never reads

    def __init__(self, config):
        super().__init__()
        self.config = config

    def view_spec(self) -> ViewSpec:
        """The clips, speeds and audio this method needs from each training sample, from its resolved config."""
        raise NotImplementedError

    def forward(self, batch: dict):
        """(loss, terms) of one batch: embed, objective, and the step's state changes when training."""
        if self.training:
            self.prepare_step()
        embedded = self.embed(batch)
        loss, terms = self.objective(batch, embedded)
        if self.training:
            self.finish_step(embedded)
        return loss, terms

    def embed(self, batch: dict, reuse: dict | None = None) -> dict[str, torch.Tensor]:
        """Per-sample outputs of `batch` (rows in batch order); `reuse` holds this micro-batch's outputs of a pass
        without gradients, whose gradient-free entries (momentum keys) need not be computed again."""
        raise NotImplementedError

    def objective(self, meta: dict, embedded: dict[str, torch.Tensor]):
        """(loss, detached terms) from the embeddings of the whole step and the batch's small tensors."""
        raise NotImplementedError

    def prepare_step(self) -> None:
        """Once per optimiser step, before its embeddings (a momentum encoder's update)."""

    def finish_step(self, embedded: dict[str, torch.Tensor]) -> None:
        """Once per optimiser step, after it (a queue takes the step's keys)."""

    def video_input(self, clips: torch.Tensor) -> torch.Tensor:
        """The method's own preprocessing of [M, 3, T, H, W] clips before the backbone, in training and
        downstream alike (TCGL removes the temporal mean)."""
        return clips

    def video_features(self, clips: torch.Tensor) -> torch.Tensor:
        """[M, 3, T, H, W] evaluation clips -> [M, D] pooled video features."""
        return self.video(self.video_input(clips))

    def fused_features(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor | None:
        """[M, D] audio-visual features of paired clips from the method's own fusion, None when it has none."""
        return None

    def encoders(self) -> dict[str, nn.Module]:
        """The backbones worth exporting: {"video": ..., "audio": ...} (audio absent for video-only methods)."""
        return {key: getattr(self, key) for key in ("video", "audio") if isinstance(getattr(self, key, None), nn.Module)}


def build_encoders(config: EncoderConfig, audio: bool = True) -> tuple[nn.Module, nn.Module | None]:
    video = models.build(config.video_backbone, width=config.width)
    return video, models.build(config.audio_backbone, width=config.width) if audio else None


def flat(x: torch.Tensor) -> torch.Tensor:
    """[B, N, ...] clips -> [B * N, ...]."""
    return x.reshape(-1, *x.shape[2:])


def detached(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().float() for key, value in terms.items()}


def register(cls: type[Method]) -> type[Method]:
    METHODS.register(cls.name)(cls)
    return cls


def default_config(name: str):
    return METHODS.get(name).Config()


def build(name: str, config=None) -> Method:
    cls = METHODS.get(name)
    return cls(config if config is not None else cls.Config())
