"""`--protocol linear-sgd`: SEVERE's linear head (docs/protocols.md §2, SEVERE `ucf/112x112x32-fold1-linear.yaml`).

A frozen backbone (BatchNorm statistics kept) under a linear layer trained on augmented clips: 16 frames
(1 s at 16 fps) at 112 pixels, multi-scale crop + colour jitter, 10 random clips per video and epoch; Adam
lr 0.01, batch 128, no weight decay, 10 epochs with milestones 4, 8, 10 (x0.3); test on 10 uniform clips,
softmax averaged. Its numbers are comparable to published SEVERE linear numbers.
"""
from __future__ import annotations

import dataclasses

from avcl.eval.engine import Engine, register_protocol
from avcl.eval.finetune import supervised_rows
from avcl.eval.supervised import SupervisedParams


@dataclasses.dataclass
class LinearSGDParams(SupervisedParams):
    lr: float = 0.01
    epochs: int = 10
    milestones: tuple[int, ...] = (4, 8, 10)
    batch_size: int = 128
    frames: int = 16
    dropout: float = 0.0
    freeze_backbone: bool = True


@register_protocol("linear-sgd", LinearSGDParams, "SEVERE linear head: frozen backbone, Adam 0.01, 10 epochs")
def run(engine: Engine, params: LinearSGDParams, folds, modalities) -> list:
    return supervised_rows(engine, params, folds, modalities, "linear-sgd")
