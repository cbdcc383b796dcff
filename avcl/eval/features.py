"""Features of every evaluation sample from a frozen encoder, each sample exactly once over ranks and workers.

Clips come from `EvalStream` (evenly spaced test clips, deterministic crops); a sample's feature is the mean
over its clips and crops. Features are gathered so every rank holds all of them, in a fixed order.
"""
from __future__ import annotations

import torch

from avcl.data.augment import DeviceAugment
from avcl.data.stream import EvalStream, loader
from avcl.methods.base import flat
from avcl.methods.losses import gather_detached


@torch.no_grad()
def extract(encode, stream: EvalStream, augment: DeviceAugment, modality: str = "video",
            autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, D] float32, labels [N]) of the valid samples; `encode` maps [M, ...] clips to [M, D]."""
    device = augment.mean.device
    features, labels = [], []
    for batch in loader(stream, pin_memory=device.type == "cuda"):
        inputs = augment(batch, train=False)
        clips = inputs[modality]  # [B, N', ...]
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = encode(flat(clips)).float()
        out = out.view(len(clips), -1, out.shape[-1]).mean(1)
        valid = inputs["valid"].bool()
        features.append(gather_detached(torch.where(valid[:, None], out, torch.zeros_like(out))))
        labels.append(gather_detached(torch.where(valid, inputs["label"], torch.full_like(inputs["label"], -1))))
    if not features:
        return torch.zeros(0, 0, device=device), torch.zeros(0, dtype=torch.long, device=device)
    features, labels = torch.cat(features), torch.cat(labels)
    keep = labels >= 0
    return features[keep], labels[keep]
