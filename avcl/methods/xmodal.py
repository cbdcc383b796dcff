"""Cross-modal InfoNCE (AVID-style): each clip's video embedding must pick its own audio among the batch's.

Morgado, Vasconcelos & Misra, "Audio-Visual Instance Discrimination with Cross-Modal Agreement" (CVPR 2021),
in its plain in-batch form (no memory bank): the baseline row of every audio-visual table.
"""
from __future__ import annotations

import dataclasses

import torch.nn.functional as F

from avcl.data.views import ViewSpec
from avcl.methods.base import EncoderConfig, Method, build_encoders, detached, flat, register
from avcl.methods.losses import symmetric_info_nce
from avcl.models.heads import mlp


@dataclasses.dataclass
class XModalConfig(EncoderConfig):
    proj_hidden: int = 512
    proj_dim: int = 128
    tau: float = 0.07
    audio_seconds: float = 1.0  # audio window per clip (0: the clip's span at clip_fps)
    clip_fps: float = 0.0  # rate clips are sampled at (0: the stored frames, consecutive)


@register
class XModal(Method):
    name = "xmodal"
    Config = XModalConfig

    def __init__(self, config: XModalConfig):
        super().__init__(config)
        self.video, self.audio = build_encoders(config)
        self.video_proj = mlp([self.video.out_dim, config.proj_hidden, config.proj_dim])
        self.audio_proj = mlp([self.audio.out_dim, config.proj_hidden, config.proj_dim])

    def view_spec(self) -> ViewSpec:
        return ViewSpec(clips=1, audio_seconds=self.config.audio_seconds, fps=self.config.clip_fps)

    def embed(self, batch: dict, reuse: dict | None = None) -> dict:
        return {"v": F.normalize(self.video_proj(self.video(flat(batch["video"]))), dim=1),
                "a": F.normalize(self.audio_proj(self.audio(flat(batch["audio"]))), dim=1)}

    def objective(self, meta: dict, embedded: dict):
        loss, acc = symmetric_info_nce(embedded["v"], embedded["a"], self.config.tau)
        return loss, detached({"xmodal": loss, "acc_v2a": acc})
