"""Weighted k-nearest-neighbour classification on L2-normalised features (Wu et al. 2018's protocol).

Each neighbour votes for its class with weight exp(cos / τ); k = 20 (online monitor) or 200, τ = 0.07.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, classes: int, k: int = 20,
                tau: float = 0.07, exclude_self: bool = False, chunk: int = 1024) -> torch.Tensor:
    """[Q] predicted labels; `exclude_self` drops each query's own entry (queries == bank, leave-one-out)."""
    bank, queries = F.normalize(bank.float(), dim=1), F.normalize(queries.float(), dim=1)
    k = min(k, len(bank) - int(exclude_self))
    predictions = []
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ bank.t()
        if exclude_self:
            rows = torch.arange(len(sims), device=sims.device)
            sims[rows, rows + start] = float("-inf")
        top, index = sims.topk(k, dim=1)
        votes = torch.zeros(len(sims), classes, device=sims.device)
        votes.scatter_add_(1, bank_labels[index], (top / tau).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def leave_one_out_accuracy(features: torch.Tensor, labels: torch.Tensor, k: int = 20, tau: float = 0.07) -> float:
    """Top-1 accuracy of predicting each sample from all the others: the training run's online monitor."""
    if len(features) < 2:
        return float("nan")
    predicted = knn_predict(features, labels, features, int(labels.max()) + 1, k, tau, exclude_self=True)
    return (predicted == labels).float().mean().item()
