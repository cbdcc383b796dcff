"""`--protocol finetune`: full fine-tuning, the AVID/SEVERE recipe (docs/protocols.md §3).

Adam 1e-4, batch 32, 32-frame clips at 112 pixels, 16 epochs with milestones 6, 10, 14 (x0.3) on UCF101 and
10 epochs with 3, 6, 8 on HMDB51, dropout 0.5, 10 random clips per video and epoch; test on 10 uniform clips
with a centre crop, softmax averaged (`views = "10x3"` tests on 3 crops as GDT/SlowFast). Reports video top-1,
top-5, mean per-class accuracy, and a confusion-matrix PNG per split. `--checkpoint random` is the
supervised-from-scratch baseline.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from avcl.eval import classify
from avcl.eval.engine import Engine, register_protocol
from avcl.eval.supervised import SupervisedParams, per_class_accuracy, test_probabilities
from avcl.plots import pyplot, save_figure


@dataclasses.dataclass
class FinetuneParams(SupervisedParams):
    pass


def supervised_rows(engine: Engine, params: SupervisedParams, folds, modalities, protocol: str) -> list:
    rows = []
    for modality in modalities:
        for fold in folds:
            probs = test_probabilities(engine, params, fold, modality)
            engine.read[(modality, fold, "test")] = len(probs)
            labels = probs.labels
            predicted = probs.features.argmax(1)
            per_class = per_class_accuracy(predicted, labels, engine.num_classes)
            metrics = {"top1": 100 * classify.topk_accuracy(probs.features, labels, 1),
                       "top5": 100 * classify.topk_accuracy(probs.features, labels, 5),
                       "mean_class": 100 * float(np.nanmean(per_class))}
            names = engine.class_names()
            extra = {"per_class": {names[c] if c < len(names) else str(c): float(a)
                                                         for c, a in enumerate(per_class) if not np.isnan(a)}}
            if engine.rank == 0:
                path = engine.figure_path(f"{protocol}-{engine.dataset.name}-split{fold}-{modality}-confusion.png")
                plot_confusion(path, predicted, labels, engine.num_classes, f"{protocol} {engine.dataset.name} split {fold}")
                extra["figure"] = str(path)
            rows.append(engine.row(fold, protocol, modality, metrics, params, **extra))
    return rows


@register_protocol("finetune", FinetuneParams, "AVID/SEVERE full fine-tuning, 10-clip (or 10x3) test")
def run(engine: Engine, params: FinetuneParams, folds, modalities) -> list:
    return supervised_rows(engine, params, folds, modalities, "finetune")


def plot_confusion(path, predicted: np.ndarray, labels: np.ndarray, classes: int, title: str) -> None:
    """ResultRow-normalised confusion matrix (true class down, predicted across)."""
    plt = pyplot()

    matrix = np.zeros((classes, classes))
    np.add.at(matrix, (labels, predicted), 1)
    matrix /= np.maximum(matrix.sum(1, keepdims=True), 1)
    size = min(12, 3 + classes * 0.08)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
