"""`--protocol fingerprint`: robust video fingerprinting on VGG-Sound (docs/protocols.md §7, a reconstruction of
Jenni et al.'s / VPN's setting until checked against the paper).

Database: the test split's original clips embedded by the frozen encoders (10 clips averaged). Queries: the
same clips after one benign transformation each (avcl.eval.perturb, seeded per clip), every family in
`families` in turn. Each query ranks the database by cosine similarity; its single relevant item is its own
original, so Recall@k is whether the original is in the top k and AP is 1 / rank. Reported per family, and
pooled ("all") over the families that change the modality measured: a visual transformation leaves the audio
embedding untouched, so its queries are identical to their originals and rank first by construction. Video
pools the visual and temporal families, audio the audio and temporal ones, fused all of them. Every row counts
the queries identical to their original.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from avcl.eval.engine import Engine, register_protocol
from avcl.eval.features import FeatureSpec
from avcl.eval.perturb import AUDIO, FAMILIES, TEMPORAL, VISUAL, Perturbation, Strengths

CHANGES = {"video": VISUAL + TEMPORAL, "audio": AUDIO + TEMPORAL, "fused": FAMILIES}  # families that alter each


@dataclasses.dataclass(frozen=True)
class FingerprintParams(Strengths):
    families: tuple[str, ...] = FAMILIES
    ks: tuple[int, ...] = (1, 5, 10)
    clips: int = 10
    frames: int = 16
    fps: float = 0.0  # the stored frames (VGG-Sound is built at 16 fps)
    size: int = 112


def ranks_of_originals(queries: torch.Tensor, query_keys: np.ndarray, database: torch.Tensor,
                       database_keys: np.ndarray, chunk: int = 256) -> np.ndarray:
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


def identical_to_originals(queries, database) -> int:
    """How many queries have exactly their original's feature (a transformation their modality never saw)."""
    position = {key: i for i, key in enumerate(database.keys)}
    originals = database.features[[position[k] for k in queries.keys]]
    return int((queries.features == originals).all(axis=1).sum())


def pooled_families(modality: str, families) -> list[str]:
    """The families of `families` that change `modality`: those the pooled row of that modality counts."""
    return [f for f in families if f in CHANGES[modality]]


@register_protocol("fingerprint", FingerprintParams, "robust fingerprinting: transformed test clips query the originals",
                   needs_labels=False, kinds=("single",))
def run(engine: Engine, params: FingerprintParams, folds, modalities) -> list:
    split = engine.dataset.test_split(engine.splits)
    strengths = Strengths(**{f.name: getattr(params, f.name) for f in dataclasses.fields(Strengths)})
    rows = []
    for modality in modalities:
        spec = FeatureSpec(modality=modality, clips=params.clips, frames=params.frames, fps=params.fps,
                           size=params.size)
        database = engine.features(spec, [split])
        engine.read[(modality, "1", "test")] = len(database)
        ranks_by_family = {}
        for family in params.families:
            queries = engine.features(spec, [split], perturb=Perturbation(family, strengths))
            ranks = ranks_of_originals(torch.from_numpy(queries.features), queries.keys,
                                       torch.from_numpy(database.features), database.keys)
            ranks_by_family[family] = ranks
            rows.append(engine.row("1", "fingerprint", modality, retrieval_metrics(ranks, params.ks), params, spec,
                                   family=family, queries=len(ranks), database=len(database),
                                   identical=identical_to_originals(queries, database)))
        pooled = pooled_families(modality, params.families)
        if pooled:
            ranks = np.concatenate([ranks_by_family[f] for f in pooled])
            rows.append(engine.row("1", "fingerprint", modality, retrieval_metrics(ranks, params.ks), params, spec,
                                   family="all", families=pooled, queries=len(ranks), database=len(database)))
    return rows
