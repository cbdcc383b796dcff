"""Run N optimiser steps of the real Trainer on fixed global batches; this rank takes its share of each.

    torchrun --nproc-per-node 2 tests/support/ddp_equivalence.py OUT.pt   (or plain python for one process)

The method is a batch-norm-free cross-modal InfoNCE (linear encoders), so a step has no batch-dependent
randomness and one process with the global batch must reach the same parameters as two ranks with halves.
"""
import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch.nn.functional as F  # noqa: E402

from avcl.methods.base import EncoderConfig, Method, detached, flat, register  # noqa: E402
from avcl.methods.losses import symmetric_info_nce  # noqa: E402
from avcl.train.config import TrainConfig, from_dict  # noqa: E402
from avcl.runtime import end_rank, setup  # noqa: E402
from avcl.train.loop import Trainer  # noqa: E402


@dataclasses.dataclass
class LinearConfig(EncoderConfig):
    tau: float = 0.2


@register
class LinearXModal(Method):
    name = "linear-xmodal"
    Config = LinearConfig

    def __init__(self, config):
        super().__init__(config)
        self.video = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 8 * 8, 16))
        self.audio = nn.Sequential(nn.Flatten(), nn.Linear(1 * 8 * 10, 16))

    def forward(self, batch):
        v = F.normalize(self.video(flat(batch["video"])), dim=1)
        a = F.normalize(self.audio(flat(batch["audio"])), dim=1)
        loss, acc = symmetric_info_nce(v, a, self.config.tau)
        return loss, detached({"xmodal": loss, "acc": acc})


def global_batch(step: int, size: int = 8) -> dict:
    g = torch.Generator().manual_seed(100 + step)
    return {"video": torch.randn(size, 1, 3, 4, 8, 8, generator=g), "audio": torch.randn(size, 1, 1, 8, 10, generator=g)}


def main(out: str, steps: int = 5) -> None:
    config = from_dict("linear-xmodal", {"data": {"batch_size": 8}, "optim": {"name": "sgd", "lr": 0.5, "base_batch": 8,
                                                                         "weight_decay": 1e-3, "schedule": "cosine"},
                                         "run": {"device": "cpu", "precision": "fp32", "channels_last": False}})
    assert isinstance(config, TrainConfig)
    ctx = setup("cpu")
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    trainer = Trainer(config, ctx)
    trainer.augment = lambda batch, train=True, generator=None: batch  # the batches are model-ready already
    trainer.schedule(total_steps=steps, steps_per_epoch=steps)
    share = 8 // ctx.world
    for step in range(steps):
        batch = {k: v[ctx.rank * share:(ctx.rank + 1) * share] for k, v in global_batch(step).items()}
        trainer.step([batch], step + 1)
    if ctx.rank == 0:
        torch.save(trainer.method.state_dict(), out)
    end_rank()


if __name__ == "__main__":
    main(sys.argv[1])
