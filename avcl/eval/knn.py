"""`--protocol knn`: weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018).

Each of the k most cosine-similar train samples votes for its class with weight exp(cos / τ), τ = 0.07;
k = 1, 20 and 200 on the retrieval features (docs/protocols.md §5), top-1 and top-5 of the votes as DINO's
`knn_classifier` counts them: top-5 looks at the first min(5, k) classes of the vote ranking, so at k < 5 a
class no neighbour voted for never counts as a hit by filling the list. Neighbours tied in similarity are taken
in sample order and tied votes go to the lower class index (DINO's order on ties is whatever its sort
gives), so results are deterministic. The same function is the training run's online monitor (leave-one-out on the validation shards).

The neighbour maths (stable top-k, chunked cosine neighbours, votes) lives in `avcl.neighbours`.
"""
from __future__ import annotations

import dataclasses

import torch

from avcl.eval import classify
from avcl.eval.engine import Engine, register_protocol
from avcl.neighbours import top_neighbours, votes


@dataclasses.dataclass
class KnnParams:
    ks: tuple[int, ...] = (1, 20, 200)
    tau: float = 0.07
    clips: int = 10
    crops: int = 1
    frames: int = 16
    fps: float = 0.0  # the retrieval features: consecutive stored frames
    size: int = 112
    layer: str = "conv5-max-vcop"  # the retrieval features (docs/protocols.md §5); gap also possible
    normalize_clips: bool = False


@register_protocol("knn", KnnParams, "weighted kNN (k = 1, 20, 200; top-1 and top-5) on the retrieval features")
def run(engine: Engine, params: KnnParams, folds, modalities) -> list:
    rows = []
    for modality, spec, features, fold, train, test in engine.fold_features(params, folds, modalities):
        x, y = torch.from_numpy(features.features), torch.from_numpy(features.labels)
        top, index = top_neighbours(x[test], x[train], max(params.ks))  # once: the k nearest are a prefix
        metrics = knn_metrics(top, y[train][index], y[test], params.ks, engine.num_classes, params.tau)
        rows.append(engine.row(fold, "knn", modality, metrics, params, spec, layer=spec.layer))
    return rows


def knn_metrics(top: torch.Tensor, neighbour_labels: torch.Tensor, labels: torch.Tensor, ks, classes: int,
                tau: float) -> dict[str, float]:
    """top-1 and top-5 (DINO's: of the first min(5, k) ranked classes) for each k, from the nearest neighbours'
    similarities and labels [Q, max(ks)], sorted nearest first."""
    metrics = {}
    for k in ks:
        scores = votes(top[:, :k], neighbour_labels[:, :k], classes, tau).numpy()
        metrics[f"top1@k{k}"] = 100 * classify.topk_accuracy(scores, labels.numpy(), 1)
        metrics[f"top5@k{k}"] = 100 * classify.topk_accuracy(scores, labels.numpy(), min(5, k))
    return metrics
