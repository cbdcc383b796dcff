"""Random model-ready batches shaped like DeviceAugment's output for a method's view spec."""
from __future__ import annotations

import torch

from avcl.data.views import ViewSpec, permutations


def random_batch(spec: ViewSpec, batch: int = 4, size: int = 32, mels: int = 40, audio_frames: int = 48,
                 generator: torch.Generator | None = None) -> dict:
    g = generator or torch.Generator().manual_seed(0)
    n = spec.n_clips
    out = {"video": torch.randn(batch, n, 3, spec.frames, size, size, generator=g),
           "speed": torch.randint(len(spec.speeds), (batch, n), generator=g),
           "direction": torch.randint(len(spec.directions), (batch, n), generator=g),
           "start": torch.rand(batch, n, generator=g) * 5,
           "order": torch.randint(len(permutations(n)) if spec.tuple_gap else 1, (batch,), generator=g),
           "label": torch.zeros(batch, dtype=torch.long), "valid": torch.ones(batch, dtype=torch.bool)}
    if spec.audio:
        out["audio"] = torch.randn(batch, n, 1, mels, audio_frames, generator=g)
        if spec.inter_order:
            out["xorder"] = torch.randint(3, (batch,), generator=g)
            out["audio_shifted"] = torch.randn(batch, 1, mels, audio_frames, generator=g)
    return out
