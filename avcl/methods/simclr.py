"""Video-only SimCLR: two clips of the same video are positives, every other clip of the batch a negative.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (ICML 2020), with clips
for images (as in CVRL, Qian et al. 2021): the video-only comparison row for the audio-visual methods.
"""
from __future__ import annotations

import dataclasses

import torch.nn.functional as F

from avcl.data.views import ViewSpec
from avcl.methods.base import EncoderConfig, Method, build_encoders, detached, flat, register
from avcl.methods.losses import nt_xent
from avcl.models.heads import mlp


@dataclasses.dataclass
class SimCLRConfig(EncoderConfig):
    proj_hidden: int = 2048
    proj_dim: int = 128
    tau: float = 0.1
    clip_fps: float = 0.0  # rate clips are sampled at (0: the stored frames, consecutive)


@register
class SimCLR(Method):
    name = "simclr"
    Config = SimCLRConfig

    def __init__(self, config: SimCLRConfig):
        super().__init__(config)
        self.video, _ = build_encoders(config, audio=False)
        self.proj = mlp([self.video.out_dim, config.proj_hidden, config.proj_dim])

    def view_spec(self) -> ViewSpec:
        return ViewSpec(clips=2, audio=False, fps=self.config.clip_fps)

    def embed(self, batch: dict, reuse: dict | None = None) -> dict:
        video = batch["video"]  # [B, 2, 3, T, H, W]
        return {"z": F.normalize(self.proj(self.video(flat(video))), dim=1).view(len(video), 2, -1)}

    def objective(self, meta: dict, embedded: dict):
        z = embedded["z"]
        loss, acc = nt_xent(z[:, 0], z[:, 1], self.config.tau)
        return loss, detached({"nt_xent": loss, "acc": acc})
