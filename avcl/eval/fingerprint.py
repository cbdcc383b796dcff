"""`--protocol fingerprint`: robust video fingerprinting on VGG-Sound (protocols.md §7, a reconstruction of
Jenni et al.'s / VPN's setting until checked against the paper).

Database: the test split's original clips embedded by the frozen encoders (10 clips averaged). Queries: the
same clips after one benign transformation each (avcl.eval.perturb, seeded per clip), every family in
`families` in turn. Each query ranks the database by cosine similarity; its single relevant item is its own
original, so Recall@k is whether the original is in the top k and AP is 1 / rank. Reported per family and
overall, for video, audio and late-fused (concatenated L2-normalised) embeddings.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from avcl.eval.engine import Engine, register_protocol
from avcl.eval.features import FeatureSpec
from avcl.eval.perturb import FAMILIES, Perturbation, Strengths


@dataclasses.dataclass(frozen=True)
class FingerprintRecipe(Strengths):
    families: tuple[str, ...] = FAMILIES
    ks: tuple[int, ...] = (1, 5, 10)
    clips: int = 10
    frames: int = 16
    size: int = 112


def ranks_of_originals(queries: torch.Tensor, query_keys: np.ndarray, database: torch.Tensor,
                       database_keys: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """1-based rank of each query's original in the database by cosine similarity (ties count against it)."""
    position = {key: i for i, key in enumerate(database_keys)}
    originals = torch.tensor([position[k] for k in query_keys])
    db = F.normalize(database.float(), dim=1)
    ranks = []
    for start in range(0, len(queries), chunk):
        sims = F.normalize(queries[start:start + chunk].float(), dim=1) @ db.t()
        own = sims.gather(1, originals[start:start + chunk, None])
        ranks.append((sims >= own).sum(1))  # the original itself plus everything at least as similar
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, np.int64)


def retrieval_metrics(ranks: np.ndarray, ks) -> dict[str, float]:
    metrics = {f"R@{k}": 100 * float((ranks <= k).mean()) for k in ks}
    metrics["mAP"] = 100 * float((1.0 / ranks).mean())
    return metrics


@register_protocol("fingerprint", FingerprintRecipe, "robust fingerprinting: transformed test clips query the originals")
def run(engine: Engine, recipe: FingerprintRecipe, folds, modalities) -> list:
    split = engine.dataset.test_split(engine.splits)
    strengths = Strengths(**{f.name: getattr(recipe, f.name) for f in dataclasses.fields(Strengths)})
    perturbations = [Perturbation(family, strengths) for family in recipe.families]
    rows = []
    for modality in modalities:
        spec = FeatureSpec(modality=modality, clips=recipe.clips, frames=recipe.frames, size=recipe.size)
        database = engine.features(spec, [split])
        all_ranks = []
        for perturbation in perturbations:
            queries = engine.features(spec, [split], perturb=perturbation)
            ranks = ranks_of_originals(torch.from_numpy(queries.features), queries.keys,
                                       torch.from_numpy(database.features), database.keys)
            all_ranks.append(ranks)
            rows.append(engine.row(split, "fingerprint", modality, retrieval_metrics(ranks, recipe.ks), recipe, spec,
                                   family=perturbation.family, queries=len(ranks), database=len(database)))
        rows.append(engine.row(split, "fingerprint", modality, retrieval_metrics(np.concatenate(all_ranks), recipe.ks),
                               recipe, spec, family="all", database=len(database)))
    return rows
