"""Nearest neighbours on feature matrices: a stable top-k (ties in index order, without sorting whole rows),
cosine neighbours in chunks, weighted kNN votes and the leave-one-out accuracy training monitors with.

Neither the evaluation engine nor its protocols are imported here: training (its online kNN monitor) and
evaluation (`--protocol knn`, retrieval) both use it. A chunk of queries costs its [chunk, bank] similarities
and a few masks of the same shape, so 200,000 x 512 features stay under 4 GB (BENCHMARKS.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 256  # queries per similarity block


def stable_top_k(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) [Q, k] of each row's k largest entries, equal values in index order (what a stable
    descending sort gives), without sorting whole rows."""
    k = min(k, sims.shape[1])
    kth = sims.topk(k, dim=1).values[:, -1:]
    above = sims > kth
    tied = sims == kth
    room = k - above.sum(1, keepdim=True, dtype=torch.int32)
    take = above | (tied & (tied.cumsum(1, dtype=torch.int32) <= room))
    index = take.nonzero()[:, 1].view(len(sims), k)  # row by row, ascending index
    values = sims.gather(1, index)
    order = values.argsort(dim=1, descending=True, stable=True)
    return values.gather(1, order), index.gather(1, order)


def top_neighbours(queries: torch.Tensor, bank: torch.Tensor, k: int, exclude_self: bool = False,
                   chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices) [Q, k] of the k most cosine-similar bank rows; ties in bank order.
    `exclude_self` drops each query's own entry (queries == bank, leave-one-out)."""
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    values, indices = [], []
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ bank.t()
        if exclude_self:
            rows = torch.arange(len(sims))
            sims[rows, rows + start] = float("-inf")
        top = stable_top_k(sims, k)
        values.append(top[0])
        indices.append(top[1])
    if not values:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(values), torch.cat(indices)


def votes(top: torch.Tensor, labels: torch.Tensor, classes: int, tau: float) -> torch.Tensor:
    """[Q, classes] summed exp(cos / tau) per class of neighbours with similarities `top` and labels `labels`."""
    out = torch.zeros(len(top), classes, dtype=torch.float64)
    return out.scatter_add_(1, labels, (top.double() / tau).exp())


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, classes: int, k: int = 20,
                tau: float = 0.07, exclude_self: bool = False) -> torch.Tensor:
    """[Q] predicted labels: the class with the most votes of the k nearest (ties: the lower class index)."""
    top, index = top_neighbours(queries, bank, min(k, len(bank) - int(exclude_self)), exclude_self)
    return votes(top, bank_labels[index], classes, tau).argmax(1)


def leave_one_out_accuracy(features: torch.Tensor, labels: torch.Tensor, k: int = 20, tau: float = 0.07) -> float:
    """Top-1 accuracy of predicting each sample from all the others: the training run's online monitor."""
    if len(features) < 2:
        return float("nan")
    features, labels = features.cpu(), labels.cpu()
    predicted = knn_predict(features, labels, features, int(labels.max()) + 1, k, tau, exclude_self=True)
    return (predicted == labels).float().mean().item()
