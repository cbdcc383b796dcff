"""Supervised training of a classifier on top of the pre-trained encoders: fine-tuning (all weights) and the
SEVERE linear head (frozen backbone, augmented clips), then multi-clip testing.

    fold's train samples (TrainStream, selected by json) -> random clip + crop + colour -> encoder -> dropout ->
    linear -> cross-entropy; Adam, step decay at epoch milestones -> test: N clips x crops, mean softmax

An epoch is `clips_per_video` random clips per train video (AVID/SEVERE's convention). Each fold starts from a
fresh copy of the pre-trained weights. Distributed: DDP over torchrun ranks, test samples exactly once.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from avcl.data.sources import resolve
from avcl.data.stream import EvalStream, TrainStream, loader
from avcl.errors import ConfigError
from avcl.eval.engine import Engine
from avcl.eval.encoders import clip_embedder, embedding_dim
from avcl.eval.features import FeatureSpec, feature_views, stream_config
from avcl.extract import Features, extract
from avcl.runtime import world
from avcl.train.optim import build_optimizer


@dataclasses.dataclass
class SupervisedParams:
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd
    epochs: int = 0  # 0: the dataset's published count (UCF101 16, HMDB51 10)
    milestones: tuple[int, ...] = ()  # epochs; (): the dataset's published ones
    gamma: float = 0.3
    batch_size: int = 32
    clips_per_video: int = 10  # random training clips per video and epoch
    frames: int = 32
    fps: float = 16.0  # AVID/SEVERE: clips at 16 fps, from data stored at any rate
    size: int = 112
    crop_scale: tuple[float, float] = (0.4, 1.0)  # multi-scale crop, as a share of the canvas area
    jitter_p: float = 0.8  # colour jitter probability
    dropout: float = 0.5
    freeze_backbone: bool = False
    views: str = "10x1"  # test clips x crops: 10x1 (AVID/SEVERE) | 10x3 (GDT/SlowFast)
    seed: int = 0


class Classifier(nn.Module):
    """Encoders (+ fusion) of one modality, dropout, a linear layer: inputs -> [B, K, classes] logits."""

    def __init__(self, engine: Engine, modality: str, classes: int, dropout: float, freeze: bool):
        super().__init__()
        encoders = dataclasses.replace(engine.encoders, method=copy.deepcopy(engine.encoders.method))
        self.method, self.freeze = encoders.method, freeze
        self.embed = clip_embedder(encoders, modality)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embedding_dim(encoders, modality), classes))
        if freeze:
            self.method.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.method.eval()  # a frozen backbone keeps its BatchNorm statistics
        return self

    def forward(self, inputs: dict) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            features = self.embed(inputs)
        return self.head(features.float())


def test_probabilities(engine: Engine, params: SupervisedParams, fold: str, modality: str) -> Features:
    """Mean softmax over test views of each test sample after training on `fold` (cached like features)."""
    return engine.cached(f"{engine.dataset.name} split {fold} fine-tuned predictions",
                         lambda: train_and_test(engine, params, fold, modality),
                         "supervised", engine.data_identity, fold, modality,
                         dataclasses.asdict(params), dataclasses.asdict(engine.encoders.config.video))


def train_and_test(engine: Engine, params: SupervisedParams, fold: str, modality: str) -> Features:
    """Train on `fold`'s train samples, return the test Features of mean softmax over views."""
    engine.check_sides(fold)
    torch.manual_seed(params.seed)
    dataset, device = engine.dataset, engine.device
    model = Classifier(engine, modality, engine.num_classes, params.dropout, params.freeze_backbone).to(device)
    ranks = world()[1]
    train_stream = _train_stream(engine, params, fold, modality, ranks)
    augment = engine.augment(FeatureSpec(size=params.size), scale=params.crop_scale, jitter_p=params.jitter_p,
                             grayscale=0.0)
    forward = nn.parallel.DistributedDataParallel(model, [device.index] if device.type == "cuda" else None) \
        if ranks > 1 and not params.freeze_backbone else model
    optimizer = build_optimizer(model, params.optimizer, params.lr, params.momentum, params.weight_decay)
    epochs = params.epochs or dataset.finetune_epochs
    milestones = params.milestones or dataset.finetune_milestones
    steps = train_stream.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [m * steps for m in milestones], params.gamma)
    model.train()
    for epoch in range(epochs):
        train_stream.config.epoch = epoch
        with loader(train_stream, pin_memory=device.type == "cuda") as batches:
            for batch in batches:
                inputs = augment(batch, train=True)
                with torch.autocast(device.type, dtype=engine.autocast or torch.float32, enabled=engine.autocast is not None):
                    logits = forward(inputs).mean(1).float()
                loss = F.cross_entropy(logits, inputs["label"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if ranks > 1 and params.freeze_backbone:
                    _average_gradients(model.head)
                optimizer.step()
                scheduler.step()
    model.eval()
    return _test(engine, params, model, fold, modality)


def _train_stream(engine: Engine, params, fold: str, modality: str, ranks: int) -> TrainStream:
    dataset = engine.dataset
    if params.batch_size % ranks:
        raise ConfigError(f"batch_size {params.batch_size} must be divisible by the {ranks} ranks")
    sources = [resolve(engine.url, s) for s in dataset.splits_holding(fold, "train", engine.splits)]
    videos = dataset.coverage(engine.info, fold, "train")[1]
    spec = FeatureSpec(modality=modality, clips=1, frames=params.frames, fps=params.fps, size=params.size,
                       augment_seed=params.seed)
    views = feature_views(spec, engine.clip_geometry())
    config = stream_config(params.batch_size // ranks, engine.options.workers)
    config.seed = params.seed
    return TrainStream(sources, views, config, epoch_samples=videos * params.clips_per_video,
                       select=dataset.selector(fold, "train", engine.splits))


def _average_gradients(module: nn.Module) -> None:
    """The frozen-backbone head is small: average its gradients over ranks by hand instead of DDP."""
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def parse_views(views: str) -> tuple[int, int]:
    try:
        clips, crops = (int(v) for v in views.lower().split("x"))
    except ValueError:
        raise ConfigError(f"views must look like 10x1 or 10x3 (clips x crops), not {views!r}") from None
    if crops not in (1, 3):
        raise ConfigError(f"test crops must be 1 (centre) or 3 (left, centre, right), not {crops}")
    return clips, crops


def _test(engine: Engine, params: SupervisedParams, model: Classifier, fold: str, modality: str) -> Features:
    clips, crops = parse_views(params.views)
    spec = FeatureSpec(modality=modality, clips=clips, crops=crops, frames=params.frames, fps=params.fps,
                       size=params.size)
    dataset = engine.dataset
    sources = [resolve(engine.url, s) for s in dataset.splits_holding(fold, "test", engine.splits)]
    config = stream_config(engine.options.batch_size, engine.options.workers)
    stream = EvalStream(sources, feature_views(spec, engine.clip_geometry()), config,
                        select=dataset.selector(fold, "test", engine.splits))
    softmax = lambda inputs: torch.softmax(model(inputs).float(), dim=-1)  # noqa: E731
    return extract(softmax, stream, engine.augment(spec), engine.autocast, max_clips=engine.max_clips)


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """[classes] accuracy of each class's test samples (NaN for classes without any)."""
    out = np.full(classes, math.nan)
    for c in range(classes):
        mine = labels == c
        if mine.any():
            out[c] = float((predicted[mine] == c).mean())
    return out
