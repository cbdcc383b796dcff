"""`--protocol esc50`: ESC-50 sound classification with a frozen audio encoder, after CrissCross's protocol
(docs/protocols.md §6), with model selection kept off the test fold.

Each 5-s recording gives 100 augmented training crops (random position, volume jitter, SpecAugment masks;
the published time warp is not applied) and 10 evenly spaced test crops; the feature is the conv5 map
max-pooled to 3x3 (4608-d for ResNet-18), L2-normalised, then standardised (CrissCross: BatchNorm). A linear
SVM per official fold, C from {1e-5 ... 1} chosen on recordings held out of the training folds; test decision
values averaged over the crops. Reports each fold and the mean of the 5 folds.

Where this differs from CrissCross's published procedure: CrissCross picks C on the test fold, L2-normalises each
time row of the map and does not standardise. Its published ESC-50 numbers are therefore filed as protocol
`esc50-crisscross-published` (manifests/references.toml) and never sit beside these rows as if comparable.

The crop length follows the checkpoint: the audio length its encoder was trained on (1 s for the temporal-av
and xmodal presets, 2 s for avcl), so no encoder is measured on inputs it never saw; `window_s` sets one, and
`--protocol esc50-crisscross` is CrissCross's published 2 s. Jenni et al.'s reconstruction is `window_s = 1 | 2`
with `feature = "gap"`. Each row records the window it used.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from avcl.eval import classify
from avcl.eval.engine import Engine, register_protocol
from avcl.eval.features import FeatureSpec


@dataclasses.dataclass
class ESC50Params:
    window_s: float = 0.0  # seconds per crop; 0: the audio length the checkpoint was trained on
    classifier: str = "svm"  # svm | logreg
    c_grid: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    holdout: float = 0.1
    train_crops: int = 100
    test_crops: int = 10
    feature: str = "conv5"  # conv5 | gap
    standardize: bool = True
    max_iter: int = 1000
    seed: int = 0


@dataclasses.dataclass
class CrissCrossParams(ESC50Params):
    window_s: float = 2.0


@register_protocol("esc50", ESC50Params, "ESC-50: frozen audio encoder (crops as long as its training audio), "
                                         "linear SVM per official fold", modalities=("audio",), kinds=("folds",))
def run(engine: Engine, params: ESC50Params, folds, modalities) -> list:
    return esc50_rows(engine, params, folds, "esc50")


@register_protocol("esc50-crisscross", CrissCrossParams, "ESC-50 with CrissCross's 2 s crops, linear SVM per official fold (C chosen "
                                                             "off the test fold, unlike the published numbers)",
                   modalities=("audio",), kinds=("folds",))
def run_crisscross(engine: Engine, params: CrissCrossParams, folds, modalities) -> list:
    return esc50_rows(engine, params, folds, "esc50-crisscross")


def esc50_rows(engine: Engine, params: ESC50Params, folds, protocol: str) -> list:
    window = params.window_s or engine.clip_geometry().audio_seconds
    common = dict(modality="audio", layer=params.feature, audio_seconds=window, keep_clips=True)
    train = engine.features(FeatureSpec(clips=params.train_crops, augment_seed=params.seed, **common))
    test = engine.features(FeatureSpec(clips=params.test_crops, **common))
    rows = []
    for fold in folds:
        (train_rows,) = engine.fold_indices(train, fold, "audio", ("train",))
        (test_rows,) = engine.fold_indices(test, fold, "audio", ("test",))
        crops = train.features[train_rows]  # [N, crops, D]
        x = crops.reshape(-1, crops.shape[-1])
        y = np.repeat(train.labels[train_rows], crops.shape[1])
        groups = np.repeat(train_rows, crops.shape[1])
        fitted = classify.fit(x, y, params.classifier, params.c_grid, holdout=params.holdout,
                              standardize=params.standardize, max_iter=params.max_iter, seed=params.seed, groups=groups)
        tests = test.features[test_rows]
        scores = fitted.scores(tests.reshape(-1, tests.shape[-1]), engine.num_classes)
        scores = scores.reshape(len(test_rows), tests.shape[1], -1).mean(1)
        metrics = {"accuracy": 100 * classify.topk_accuracy(scores, test.labels[test_rows], 1)}
        rows.append(engine.row(fold, protocol, "audio", metrics, params, c=fitted.c, window_s=window,
                               classifier=classify.library(params.classifier)))
    return rows
