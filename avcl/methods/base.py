"""What every method shares: the registry, encoders built by name, and the view spec it asks of the data."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from avcl import models
from avcl.data.views import METHOD_VIEWS, ViewSpec
from avcl.registry import Registry

METHODS = Registry("method")


@dataclasses.dataclass
class EncoderConfig:
    video_backbone: str = "r2plus1d_18"
    audio_backbone: str = "resnet18_2d"
    width: int = 64  # base channel width of both backbones (64 = the published networks; tests use 4-8)


class Method(nn.Module):
    """A self-supervised method: `forward(batch) -> (loss, terms)`; `terms` are detached scalars to log."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config):
        super().__init__()
        self.config = config

    def view_spec(self) -> ViewSpec:
        """The clips, speeds and audio this method needs from each training sample."""
        return METHOD_VIEWS[self.name]

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
