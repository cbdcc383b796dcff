"""`--protocol retrieval`: VCOP/PRP/TCGL video retrieval, exactly (docs/protocols.md §4).

Test videos query the train videos: 10 clips of 16 consecutive stored frames per video (build the data at
the videos' own rate, `--fps native`) with centres evenly spaced from 8 to n - 8, centre crop 112 of the
128-pixel short side, the conv5 map max-pooled, the 10 clip features averaged, cosine similarity. Two
published poolings differ for R(2+1)D, so the layer is named: `conv5-max-vcop` (VCOP's code, the published
VCOP/VCP/PRP/IIC tables: (1,2,2) for every backbone, 9216-d at 16x112x112) or `conv5-max-tcgl` (TCGL's code:
(2,5,5) for R(2+1)D, 512-d); `gap` by option. Every row names its layer. A query is a hit at k when any of its k nearest gallery
videos shares its class; k = 1, 5, 10, 20, 50. Ties in similarity rank the gallery in sample order.
`vcop_drop_last` drops each side's last incomplete batch of 8 as the reference code does.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from avcl.eval.engine import Engine, register_protocol
from avcl.neighbours import top_neighbours
from avcl.plots import pyplot, save_figure

VCOP_BATCH = 8


@dataclasses.dataclass
class RetrievalParams:
    ks: tuple[int, ...] = (1, 5, 10, 20, 50)
    clips: int = 10
    crops: int = 1
    frames: int = 16
    fps: float = 0.0  # consecutive stored frames
    size: int = 112
    layer: str = "conv5-max-vcop"  # conv5-max-vcop | conv5-max-tcgl | gap: not comparable across layers
    normalize_clips: bool = False  # VCOP averages the raw clip features
    vcop_drop_last: bool = False
    figure_queries: int = 6


def hit_rates(queries: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor,
              gallery_labels: torch.Tensor, ks) -> dict[int, float]:
    """{k: share of queries with a same-class video among their k nearest gallery videos}."""
    _, index = top_neighbours(queries, gallery, min(max(ks), len(gallery)))
    same = gallery_labels[index] == query_labels[:, None]
    return {k: float(same[:, :k].any(dim=1).sum()) / max(len(queries), 1) for k in ks}


def drop_last_batch(index: np.ndarray) -> np.ndarray:
    return index[:len(index) - len(index) % VCOP_BATCH]


@register_protocol("retrieval", RetrievalParams, "VCOP/TCGL retrieval: test queries the train gallery, R@1/5/10/20/50")
def run(engine: Engine, params: RetrievalParams, folds, modalities) -> list:
    rows = []
    for modality, spec, features, fold, gallery, queries in engine.fold_features(params, folds, modalities):
        x, y = torch.from_numpy(features.features), torch.from_numpy(features.labels)
        if params.vcop_drop_last:
            gallery, queries = drop_last_batch(gallery), drop_last_batch(queries)
        rates = hit_rates(x[queries], y[queries], x[gallery], y[gallery], params.ks)
        metrics = {f"R@{k}": 100 * v for k, v in rates.items()}
        extra = {"gallery": len(gallery), "queries": len(queries), "layer": spec.layer}
        if features.thumbs is not None and params.figure_queries:
            path = engine.figure_path(f"retrieval-{engine.dataset.name}-split{fold}-{modality}.png")
            plot_neighbours(path, features, queries, gallery, x, params.figure_queries, engine.class_names())
            extra["figure"] = str(path)
        rows.append(engine.row(fold, "retrieval", modality, metrics, params, spec, **extra))
    return rows


def plot_neighbours(path, features, queries: np.ndarray, gallery: np.ndarray, x: torch.Tensor, n: int,
                    class_names: list[str], shown: int = 5) -> None:
    """A grid: each row a query's middle frame, then its nearest gallery videos (green: same class)."""
    plt = pyplot()

    picks = queries[np.linspace(0, len(queries) - 1, min(n, len(queries))).round().astype(int)]
    _, index = top_neighbours(x[picks], x[gallery], min(shown, len(gallery)))
    fig, axes = plt.subplots(len(picks), shown + 1, figsize=(1.6 * (shown + 1), 1.8 * len(picks)), squeeze=False)
    name = lambda i: class_names[features.labels[i]] if 0 <= features.labels[i] < len(class_names) else str(features.labels[i])  # noqa: E731
    for row, (query, neighbours) in enumerate(zip(picks, index.numpy())):
        axes[row, 0].imshow(features.thumbs[query])
        axes[row, 0].set_title(f"query\n{name(query)}", fontsize=7)
        for col, g in enumerate(gallery[neighbours], start=1):
            axes[row, col].imshow(features.thumbs[g])
            same = features.labels[g] == features.labels[query]
            axes[row, col].set_title(name(g), fontsize=7, color="green" if same else "red")
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
