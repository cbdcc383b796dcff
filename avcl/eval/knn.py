"""`--protocol knn`: weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018).

Each of the k most cosine-similar train samples votes for its class with weight exp(cos / τ), τ = 0.07;
k = 1, 20 and 200 on the retrieval features (protocols.md §5). Neighbours tied in similarity are taken in
sample order and tied votes go to the lower class index, so results are deterministic. The same function is
the training run's online monitor (leave-one-out on the validation shards).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from avcl.eval.engine import Engine, register_protocol


def top_neighbours(queries: torch.Tensor, bank: torch.Tensor, k: int, exclude_self: bool = False,
                   offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices) [Q, k] of the k most cosine-similar bank rows; ties in bank order."""
    sims = F.normalize(queries.float(), dim=1) @ F.normalize(bank.float(), dim=1).t()
    if exclude_self:
        rows = torch.arange(len(sims))
        sims[rows, rows + offset] = float("-inf")
    values, index = torch.sort(sims, dim=1, descending=True, stable=True)
    return values[:, :k], index[:, :k]


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, classes: int, k: int = 20,
                tau: float = 0.07, exclude_self: bool = False, chunk: int = 1024) -> torch.Tensor:
    """[Q] predicted labels; `exclude_self` drops each query's own entry (queries == bank, leave-one-out)."""
    k = min(k, len(bank) - int(exclude_self))
    predictions = []
    for start in range(0, len(queries), chunk):
        top, index = top_neighbours(queries[start:start + chunk], bank, k, exclude_self, start)
        votes = torch.zeros(len(top), classes)
        votes.scatter_add_(1, bank_labels[index], (top / tau).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


def leave_one_out_accuracy(features: torch.Tensor, labels: torch.Tensor, k: int = 20, tau: float = 0.07) -> float:
    """Top-1 accuracy of predicting each sample from all the others: the training run's online monitor."""
    if len(features) < 2:
        return float("nan")
    features, labels = features.cpu(), labels.cpu()
    predicted = knn_predict(features, labels, features, int(labels.max()) + 1, k, tau, exclude_self=True)
    return (predicted == labels).float().mean().item()


@dataclasses.dataclass
class KnnRecipe:
    ks: tuple[int, ...] = (1, 20, 200)
    tau: float = 0.07
    clips: int = 10
    crops: int = 1
    frames: int = 16
    size: int = 112
    layer: str = "conv5-max"  # the retrieval features (protocols.md §5); gap also possible
    normalize_clips: bool = False


@register_protocol("knn", KnnRecipe, "weighted kNN (k = 1, 20, 200) on the retrieval features")
def run(engine: Engine, recipe: KnnRecipe, folds, modalities) -> list:
    rows = []
    for modality, spec, features, fold, train, test in engine.fold_features(recipe, folds, modalities):
        x, y = torch.from_numpy(features.features), torch.from_numpy(features.labels)
        metrics = {}
        for k in recipe.ks:
            predicted = knn_predict(x[train], y[train], x[test], engine.num_classes, k, recipe.tau)
            metrics[f"top1@k{k}"] = 100 * (predicted == y[test]).float().mean().item()
        rows.append(engine.row(fold, "knn", modality, metrics, recipe, spec, train=len(train), test=len(test)))
    return rows
