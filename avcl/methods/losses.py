"""The losses the methods share, computed in float32 whatever the autocast dtype, distributed-aware.

Contrastive candidates are gathered from every rank (`avcl.runtime.gather`, with gradients flowing back to the
rank that produced them), so the negatives of a global batch are the same whatever the world size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from avcl.runtime import gather, own_rows


def info_nce(query: torch.Tensor, key: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of L2-normalised query[i] against key[i], negatives every other key of the global batch.

    Returns (loss, top-1 accuracy of picking the right key).
    """
    query, keys = query.float(), gather(key.float())
    logits = query @ keys.t() / tau
    target = own_rows(len(query), query.device)
    return F.cross_entropy(logits, target), accuracy(logits, target)


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """½ (InfoNCE(a -> b) + InfoNCE(b -> a)), the cross-modal loss of AVID / CLIP; accuracy of a -> b."""
    loss_ab, acc_ab = info_nce(a, b, tau)
    loss_ba, _ = info_nce(b, a, tau)
    return (loss_ab + loss_ba) / 2, acc_ab


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent: each of the 2B views against the other 2B - 1 (own view excluded), both directions."""
    z1, z2 = z1.float(), z2.float()
    keys = torch.cat([gather(z1), gather(z2)])  # [2G, D]: view 1 of every sample, then view 2
    global_n = len(keys) // 2
    rows = own_rows(len(z1), z1.device)
    queries = torch.cat([z1, z2])
    logits = queries @ keys.t() / tau
    self_index = torch.cat([rows, rows + global_n])
    logits = logits.masked_fill(F.one_hot(self_index, len(keys)).bool(), float("-inf"))
    target = torch.cat([rows + global_n, rows])
    return F.cross_entropy(logits, target), accuracy(logits, target)


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log( sum_P e^logit / sum_{P ∪ N} e^logit ).

    `positive` and `candidate` are boolean masks like `logits` (positives must be candidates). Rows without any
    positive are left out of the mean.
    """
    logits = logits.float()
    log_pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
    log_all = torch.logsumexp(logits.masked_fill(~candidate, float("-inf")), dim=1)
    has_positive = positive.any(dim=1)
    per_row = torch.where(has_positive, log_all - log_pos, torch.zeros_like(log_all))
    return per_row.sum() / has_positive.sum().clamp(min=1)


def grace_loss(u: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """GRACE's node-level contrast for a batch of graphs: u, v [G, N, D] projected node features of two views.

    Per node i: -log e^{θ(u_i,v_i)/τ} / (Σ_k e^{θ(u_i,v_k)/τ} + Σ_{k≠i} e^{θ(u_i,u_k)/τ}), θ the cosine; averaged
    over both directions and the N nodes, giving one loss per graph [G]. Negatives never leave their graph.
    """
    u, v = F.normalize(u.float(), dim=-1), F.normalize(v.float(), dim=-1)
    return (_grace_direction(u, v, tau) + _grace_direction(v, u, tau)) / 2


def _grace_direction(u: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    n = u.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=u.device)
    between = u @ v.transpose(1, 2) / tau  # [G, N, N]
    within = (u @ u.transpose(1, 2) / tau).masked_fill(eye, float("-inf"))
    log_denominator = torch.logsumexp(torch.cat([between, within], dim=2), dim=2)
    return (log_denominator - between.diagonal(dim1=1, dim2=2)).mean(dim=1)


def cocorrelation_loss(p_a: torch.Tensor, p_b: torch.Tensor, lambda_off: float) -> torch.Tensor:
    """Σ_i (1 - C_ii)² + λ_off Σ_{i≠j} C_ij², C the cross-correlation of batch-standardised projections.

    Standardisation and C use the global batch (projections gathered across ranks).
    """
    a, b = _standardise(gather(p_a.float())), _standardise(gather(p_b.float()))
    c = a.t() @ b / len(a)
    on_diagonal = (1 - c.diagonal()).pow(2).sum()
    off_diagonal = c.pow(2).sum() - c.diagonal().pow(2).sum()
    return on_diagonal + lambda_off * off_diagonal


def guided_alignment(p_a: torch.Tensor, p_b: torch.Tensor, tau_g: float) -> torch.Tensor:
    """Σ_b s_b ‖p̂_a,b - p̂_b,b‖² with s = softmax_b(corr_b / τ_g), corr_b the mean of p̂_a,b ⊙ p̂_b,b.

    p̂ are batch-standardised; the per-sample correlation is a mean over dimensions (not the raw dot product of
    the reconstruction) so τ_g does not depend on the projection size.
    """
    a, b = _standardise(gather(p_a.float())), _standardise(gather(p_b.float()))
    weights = torch.softmax((a * b).mean(1) / tau_g, dim=0)
    return (weights * (a - b).pow(2).sum(1)).sum()


def _standardise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + eps)


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(dim=1) == target).float().mean()
