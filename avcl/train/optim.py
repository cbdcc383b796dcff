"""Optimisers and learning-rate schedules, for pre-training (avcl.train.loop) and supervised evaluation
(avcl.eval.supervised) alike."""
from __future__ import annotations

import math

import torch
from torch import nn

from avcl.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")


def build_optimizer(module: nn.Module, name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                    decay_norm_and_bias: bool = True) -> torch.optim.Optimizer:
    """The trainable parameters of `module` under `name`; weight decay on weight matrices and kernels only,
    unless `decay_norm_and_bias`."""
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1 or decay_norm_and_bias]
    no_decay = [p for p in params if not (p.ndim > 1 or decay_norm_and_bias)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name in ("adam", "adamw"):
        return (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(groups, lr=lr)
    raise ConfigError(f"optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")


def build_scheduler(optimizer, cfg, total_steps: int, steps_per_epoch: int):
    """Per-step linear warm-up then cosine to min_lr (or constant); plateau steps once per epoch on its loss."""
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    if cfg.schedule not in ("cosine", "constant"):
        raise ConfigError(f"optim.schedule must be cosine, plateau or constant, not {cfg.schedule!r}")
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    base = optimizer.param_groups[0]["lr"]
    floor = cfg.min_lr / base if base else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
