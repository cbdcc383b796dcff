"""Batched augmentation on the device: uint8 views in, normalised float clips and log-mels out.

Video: one random resized crop and flip per clip (the same for all its frames) done as a single affine
`grid_sample` over the batch, colour jitter (brightness, contrast, saturation, hue) and grayscale per clip,
then normalisation. Evaluation takes deterministic crops instead (1: centre; 3: left, centre, right).
Audio: int16 waveform -> float, volume jitter, log-mel, SpecAugment (training only).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from avcl.data.audio import MelConfig, SpecAugmentConfig, spec_augment, spectrogram, volume_jitter

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's video models
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclasses.dataclass(frozen=True)
class VideoAugmentConfig:
    size: int = 112
    scale: tuple[float, float] = (0.2, 1.0)  # crop area as a fraction of the canvas
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    grayscale: float = 0.2
    normalize: bool = True  # False keeps [0, 1] (TCGL)
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    test_crops: int = 1


def _uniform(n: int, low: float, high: float, generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def random_boxes(n: int, config: VideoAugmentConfig, generator=None) -> torch.Tensor:
    """[n, 4] crop boxes (centre x, centre y, width, height) as fractions of the canvas, RandomResizedCrop-style.

    Area and log-aspect are drawn once and the box is clamped into the canvas (torchvision retries instead).
    """
    area = _uniform(n, *config.scale, generator)
    log_ratio = _uniform(n, math.log(config.ratio[0]), math.log(config.ratio[1]), generator)
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    cx = width / 2 + torch.rand(n, generator=generator) * (1 - width)
    cy = height / 2 + torch.rand(n, generator=generator) * (1 - height)
    return torch.stack([cx, cy, width, height], dim=1)


def eval_boxes(crops: int, size: int, canvas: int) -> torch.Tensor:
    """[crops, 4] boxes of `size` pixels: the centre, or left/centre/right at mid height."""
    w = size / canvas
    xs = [0.5] if crops == 1 else torch.linspace(w / 2, 1 - w / 2, crops).tolist()
    return torch.tensor([[x, 0.5, w, w] for x in xs])


def crop_resize(clips: torch.Tensor, boxes: torch.Tensor, size: int, flips: torch.Tensor | None = None) -> torch.Tensor:
    """[M, C, T, H, W] float clips, [M, 4] boxes -> [M, C, T, size, size]; one bilinear sample per clip."""
    m, c, t, h, w = clips.shape
    boxes = boxes.to(clips.device, clips.dtype)
    theta = torch.zeros(m, 2, 3, device=clips.device, dtype=clips.dtype)
    sign = 1.0 if flips is None else 1.0 - 2.0 * flips.to(clips.device, clips.dtype)
    theta[:, 0, 0] = boxes[:, 2] * sign
    theta[:, 0, 2] = boxes[:, 0] * 2 - 1
    theta[:, 1, 1] = boxes[:, 3]
    theta[:, 1, 2] = boxes[:, 1] * 2 - 1
    grid = F.affine_grid(theta, [m, c * t, size, size], align_corners=False)
    out = F.grid_sample(clips.reshape(m, c * t, h, w), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out.reshape(m, c, t, size, size)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _per_clip(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.to(x.device, x.dtype).view(-1, 1, 1, 1, 1)


def colour_jitter(x: torch.Tensor, config: VideoAugmentConfig, generator=None) -> torch.Tensor:
    """Per-clip brightness, contrast, saturation and hue on [M, 3, T, H, W] in [0, 1], applied with jitter_p."""
    m = x.shape[0]
    b, c, s, h = config.jitter
    apply = torch.rand(m, generator=generator) < config.jitter_p
    brightness = torch.where(apply, _uniform(m, 1 - b, 1 + b, generator), torch.ones(m))
    contrast = torch.where(apply, _uniform(m, 1 - c, 1 + c, generator), torch.ones(m))
    saturation = torch.where(apply, _uniform(m, 1 - s, 1 + s, generator), torch.ones(m))
    hue = torch.where(apply, _uniform(m, -h, h, generator), torch.zeros(m))
    x = (x * _per_clip(brightness, x)).clamp(0, 1)
    mean = _gray(x).mean(dim=(2, 3, 4), keepdim=True)
    x = ((x - mean) * _per_clip(contrast, x) + mean).clamp(0, 1)
    gray = _gray(x)
    x = ((x - gray) * _per_clip(saturation, x) + gray).clamp(0, 1)
    return rotate_hue(x, hue).clamp(0, 1)


def rotate_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by `shift` turns per clip, as a rotation of the chroma plane in YIQ space."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          device=x.device, dtype=x.dtype)
    angle = shift.to(x.device, x.dtype) * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(x.shape[0], 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # [M, 3, 3]
    return torch.einsum("mij,mjthw->mithw", matrix, x)


class DeviceAugment(nn.Module):
    """A collated batch of views (uint8/int16, any device) -> model inputs on `device`."""

    def __init__(self, video: VideoAugmentConfig = VideoAugmentConfig(), mel: MelConfig = MelConfig(),
                 spec: SpecAugmentConfig = SpecAugmentConfig(), mel_backend: str = "auto"):
        super().__init__()
        self.video_config, self.spec_config = video, spec
        self.logmel = spectrogram(mel, backend=mel_backend)
        self.register_buffer("mean", torch.tensor(video.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(video.std).view(1, 3, 1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, batch: dict, train: bool = True, generator: torch.Generator | None = None) -> dict:
        device = self.mean.device
        out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if "video" in out:
            out["video"] = self.video(out["video"], train, generator)
        for key in ("audio", "audio_shifted"):
            if key in out:
                out[key] = self.audio(out[key], train, generator)
        return out

    def video(self, frames: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        """[B, N, T, H, W, 3] uint8 -> [B, N', 3, T, size, size] float (N' = N * test_crops in evaluation)."""
        cfg = self.video_config
        b, n, t, h, w, _ = frames.shape
        clips = frames.reshape(b * n, t, h, w, 3).permute(0, 4, 1, 2, 3).float().div_(255)
        if train:
            m = b * n
            clips = crop_resize(clips, random_boxes(m, cfg, generator), cfg.size,
                                torch.rand(m, generator=generator) < cfg.flip)
            clips = colour_jitter(clips, cfg, generator)
            gray = (torch.rand(m, generator=generator) < cfg.grayscale).to(clips.device).view(-1, 1, 1, 1, 1)
            clips = torch.where(gray, _gray(clips).expand_as(clips), clips)
        else:
            boxes = eval_boxes(cfg.test_crops, cfg.size, w)
            clips = crop_resize(clips.repeat_interleave(len(boxes), 0), boxes.repeat(b * n, 1), cfg.size)
            n *= len(boxes)
        if cfg.normalize:
            clips = (clips - self.mean) / self.std
        return clips.reshape(b, n, 3, t, cfg.size, cfg.size)

    def audio(self, wave: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        """[..., samples] int16 -> [..., 1, mels, frames] log-mel."""
        x = wave.float() / 32768.0
        if train and self.spec_config.volume_db:
            x = volume_jitter(x, self.spec_config.volume_db, generator)
        spec = self.logmel(x)
        if train:
            spec = spec_augment(spec, self.spec_config, generator)
        return spec.unsqueeze(-3)
