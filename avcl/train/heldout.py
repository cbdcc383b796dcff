"""What training watches on held-out data, every sample once: the method's loss terms (for a plateau schedule
on a validation term, as TCGL's scripts do) and a leave-one-out kNN accuracy of the video features (the online
monitor that picks best.pt). `stream_config` is the loop's, at epoch 0 and seed 0, so every rank reads its
share of the same samples each time."""
from __future__ import annotations

import torch
import torch.distributed as dist

from avcl.data.stream import EvalStream, StreamConfig, loader
from avcl.data.views import evaluation_views
from avcl.errors import TrainingError
from avcl.extract import extract
from avcl.methods.base import flat
from avcl.neighbours import leave_one_out_accuracy
from avcl.runtime import Context
from avcl.train.config import TrainConfig


def plateau_metric(trainer, sources, spec, stream_config: StreamConfig, ctx: Context, config: TrainConfig,
                   train_loss: float, log) -> float:
    """What the plateau schedule watches: the epoch's train loss, or a term of the method on held-out data
    (TCGL's official scripts: the validation order loss)."""
    if not sources:
        return train_loss
    term = config.optim.plateau_on.split(":", 1)[1]
    values = validation_terms(trainer, sources, spec, stream_config, ctx)
    if term not in values:
        raise TrainingError(f"optim.plateau_on={config.optim.plateau_on}: {config.method_name} has no term {term!r}; "
                            f"terms: {', '.join(values)}")
    log.print(f"held-out {term}: {values[term]:.4f}")
    return values[term]


@torch.no_grad()
def validation_terms(trainer, sources, spec, stream_config: StreamConfig, ctx: Context) -> dict[str, float]:
    """The method's loss terms on held-out data: every sample once, views drawn reproducibly per sample key."""
    stream = EvalStream(sources, spec, stream_config, seed=0)
    sums: dict[str, float] = {}
    count = 0
    trainer.method.eval()
    try:
        with loader(stream, pin_memory=ctx.device.type == "cuda") as batches:
            for batch in batches:
                valid = batch["valid"].bool()
                if not valid.any():
                    continue
                kept = {k: v[valid] if torch.is_tensor(v) else v for k, v in batch.items()}
                generator = torch.Generator().manual_seed(count)
                with trainer._autocast():
                    _, terms = trainer.method(trainer.augment(kept, train=True, generator=generator))
                n = int(valid.sum())
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * n
                count += n
    finally:
        trainer.method.train()
    totals = torch.tensor([sums.get(k, 0.0) for k in sorted(sums)] + [count], dtype=torch.float64)
    if ctx.world > 1:
        dist.all_reduce(totals)
    return {key: float(totals[i] / max(float(totals[-1]), 1)) for i, key in enumerate(sorted(sums))}


def knn_monitor(trainer, sources, spec, stream_config: StreamConfig, k: int) -> float:
    """Leave-one-out weighted kNN top-1 on the validation shards' video features (1 centre clip per sample)."""
    stream = EvalStream(sources, evaluation_views(spec.geometry, 1), stream_config)
    trainer.method.eval()
    embed = lambda inputs: trainer.method.video_features(flat(inputs["video"])).unflatten(0, inputs["video"].shape[:2])  # noqa: E731
    try:
        features = extract(embed, stream, trainer.augment, trainer.autocast)
    finally:
        trainer.method.train()
    return leave_one_out_accuracy(torch.from_numpy(features.features), torch.from_numpy(features.labels), k)
