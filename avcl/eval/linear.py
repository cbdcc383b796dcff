"""`--protocol linear`: a linear classifier on frozen, clip-averaged features (avtools' default linear probe).

Features of 10 uniformly spaced 16-frame clips per video sampled at 16 fps (AVID/SEVERE's rate, from the
stored frames whatever rate the data has; centre crop), GAP, L2-normalised, averaged; then logistic regression
(or a linear SVM, `classifier = "svm"`) on standardised features, C chosen on a held-out 10 % of train and
refitted on all of train. Video-level top-1 and top-5 per split, and their mean.
`--protocol linear-svm-tcgl` is TCGL's setting exactly: 16 consecutive stored frames per clip, raw
clip-averaged GAP features, liblinear itself with `-s 2 -c 100` and no bias term (classify's `svm-tcgl`);
each row names the library and version that fitted it.
"""
from __future__ import annotations

import dataclasses

from avcl.eval import classify
from avcl.eval.engine import Engine, register_protocol


@dataclasses.dataclass
class LinearParams:
    classifier: str = "logreg"  # logreg | svm | svm-tcgl
    c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    holdout: float = 0.1  # share of train held out to choose C
    standardize: bool = True
    max_iter: int = 1000
    seed: int = 0
    clips: int = 10
    crops: int = 1
    frames: int = 16
    fps: float = 16.0
    size: int = 112
    layer: str = "gap"  # gap | conv5-max-vcop | conv5-max-tcgl
    normalize_clips: bool = True


@dataclasses.dataclass
class TCGLSVMParams(LinearParams):
    classifier: str = "svm-tcgl"
    c_grid: tuple[float, ...] = (100.0,)
    standardize: bool = False
    fps: float = 0.0  # consecutive stored frames
    normalize_clips: bool = False


@register_protocol("linear", LinearParams, "logistic regression / linear SVM on 10-clip averaged frozen features")
def run(engine: Engine, params: LinearParams, folds, modalities) -> list:
    return linear_rows(engine, params, folds, modalities, "linear")


@register_protocol("linear-svm-tcgl", TCGLSVMParams, "TCGL's liblinear -s 2 -c 100 (no bias) on clip-averaged GAP features")
def run_tcgl(engine: Engine, params: TCGLSVMParams, folds, modalities) -> list:
    return linear_rows(engine, params, folds, modalities, "linear-svm-tcgl")


def linear_rows(engine: Engine, params: LinearParams, folds, modalities, protocol: str) -> list:
    rows = []
    for modality, spec, features, fold, train, test in engine.fold_features(params, folds, modalities):
        fitted = classify.fit(features.features[train], features.labels[train], params.classifier, params.c_grid,
                              holdout=params.holdout, standardize=params.standardize, max_iter=params.max_iter,
                              seed=params.seed)
        scores = fitted.scores(features.features[test], engine.num_classes)
        labels = features.labels[test]
        metrics = {"top1": 100 * classify.topk_accuracy(scores, labels, 1),
                   "top5": 100 * classify.topk_accuracy(scores, labels, 5)}
        rows.append(engine.row(fold, protocol, modality, metrics, params, spec, c=fitted.c,
                               classifier=classify.library(params.classifier)))
    return rows
